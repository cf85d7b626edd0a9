import test from 'ava';
import type {Testnet} from 'hyperdht/testnet.js';
import type {Browser} from 'playwright-core';
import {startAnnouncingPeer} from '../harness/announcing-peer.js';
import {launchChromium, watchedPage} from '../harness/browser.js';
import {capabilitiesFixture} from '../harness/capabilities-fixture.js';
import {waitFor, type DaemonHandle} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {fetchStatus} from '../harness/node-status.js';
import {testRpcBinaries} from '../harness/rpc-binaries.js';
import {nodeIdOf, startSwarmDaemon, startTestnet, waitForPeers} from '../harness/swarm-fixture.js';

/**
 * The web page's network view of a real loopback testnet: the demo model split over three daemons (as in
 * test/sharding.test.ts), and a raw peer whose model name is markup.
 */

const MiB = 2 ** 20;
const NETWORK = 'web-page';
const MODEL = {layers: 8, width: 256, feedForwardLength: 512, writesBytes: false};
const HOSTILE_NAME = '<img src=x onerror=alert(1)>';
const screenshots = process.env.STRONGDOGE_SCREENSHOTS === '1';

let testnet: Testnet;
let browser: Browser;
let coordinator: DaemonHandle;
let hostIds: string[];
const cleanups: (() => Promise<unknown>)[] = [];

async function startNode(extra: string[], withModel: boolean) {
    const fixture = await createDataDirWithDemoModel(MODEL);
    cleanups.push(fixture.cleanup);
    const bootstrap = testnet.bootstrap.map(({host, port}) => `${host}:${port}`).join(',');
    const daemon = await startSwarmDaemon(bootstrap, fixture.dataDir, [
        '--network', NETWORK, '--context-size', '512', '--parallel', '2', ...(withModel ? ['--model', 'demo'] : []), ...extra
    ], withModel ? {readyTimeoutMs: 150_000} : {});
    cleanups.push(() => daemon.stop('SIGKILL'));
    return daemon;
}

test.before(async () => {
    await testRpcBinaries();
    ({testnet} = await startTestnet());
    browser = await launchChromium();
    // Room for three layers each: the plan needs all three nodes (test/sharding.test.ts).
    const hosts = await Promise.all([0, 1].map(() => startNode(['--max-shard-memory', String(15 * MiB)], false)));
    hostIds = await Promise.all(hosts.map(nodeIdOf));
    coordinator = await startNode(['--shard', 'always', '--max-stages', '3', '--memory-limit', String(15 * MiB), '--max-shard-memory', '0'], true);
    await waitFor(async () => (await fetchStatus(coordinator, '/api/cluster')).pipelines[0]?.state === 'ready', 90_000, 200);
});

test.after.always(async () => {
    await browser?.close();
    for (const cleanup of cleanups.reverse())
        await cleanup().catch(() => undefined);
    await testnet?.destroy();
});

test.serial('the network view lists the peers and draws the 3-stage pipeline of the demo model with its layer ranges', async (t) => {
    await waitForPeers(coordinator, hostIds, 30_000);
    const pipeline = (await fetchStatus(coordinator, '/api/cluster')).pipelines[0]!;
    t.is(pipeline.stages.length, 3);
    const {page, problems} = await watchedPage(browser);
    await page.goto(`${coordinator.origin}/#/network`);
    const stages = page.locator('.pipeline[data-model="demo"] .stage');
    await waitFor(async () => await stages.count() === 3, 15_000, 100);
    t.deepEqual(await stages.locator('.stage-layers').allTextContents(), pipeline.stages.map((stage) => `${stage.layers![0]}-${stage.layers![1]}`));
    t.is(await stages.first().locator('.stage-head').textContent(), 'Athis node');
    const stagePeers = await Promise.all((await stages.locator('.stage-head .mono').all()).map((element) => element.getAttribute('title')));
    t.deepEqual(stagePeers, pipeline.stages.map((stage) => stage.peer));
    await page.locator('.pipeline .badge.state-ready').waitFor();
    for (const id of hostIds) {
        const row = page.locator(`#peers tr[data-peer="${id}"]`);
        await row.waitFor();
        t.is(await row.locator('td').first().textContent(), id.slice(0, 16));
        t.is(await row.locator('td').nth(1).textContent(), 'direct');
    }
    await page.locator('#network-models td', {hasText: 'demo'}).first().waitFor();
    // Live: a request through the pipeline shows in its stages without a reload.
    const reply = await fetch(`${coordinator.origin}/v1/completions`, {method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify({model: 'demo', prompt: 'Once upon a time', max_tokens: 48, temperature: 0})});
    t.is(reply.status, 200);
    for (const stage of [1, 2])
        await waitFor(async () => await stages.nth(stage).locator('.stage-ok').textContent() === '100%', 10_000, 100);
    t.regex(await stages.nth(1).locator('.stage-hop').textContent() ?? '', /^[\d.]+ ms$/);
    if (screenshots) {
        // Two polls of /api/node after the request: the tokens/s chart has its first samples.
        await page.waitForTimeout(4_500);
        await page.screenshot({path: 'docs/web-network-1280x800.png', fullPage: false});
        await page.setViewportSize({width: 390, height: 844});
        await page.screenshot({path: 'docs/web-network-390x844.png'});
    }
    t.deepEqual(problems, []);
    await page.context().close();
});

test.serial('a peer announcing a model named <img src=x onerror=alert(1)> is shown that name as text, and nothing runs', async (t) => {
    const hostile = await startAnnouncingPeer(testnet.bootstrap, NETWORK, capabilitiesFixture({
        software: '<b>0.1</b>',
        device: {backend: false, gpuNames: ['<script>alert(2)</script>'], vramTotalBytes: 0, vramFreeBytes: 0, ramFreeBytes: 8e9, cpuThreads: 1},
        models: [{id: HOSTILE_NAME, sha256: null, sizeBytes: 1000, quantization: '<svg onload=alert(3)>', layers: 1, layerBytes: [1000], loaded: true}]
    }));
    cleanups.push(hostile.stop);
    await waitForPeers(coordinator, [...hostIds, hostile.id], 30_000);

    const {page, problems, requests} = await watchedPage(browser);
    await page.goto(`${coordinator.origin}/#/network`);
    const row = page.locator(`#peers tr[data-peer="${hostile.id}"]`);
    await row.waitFor();
    t.is(await row.locator('.peer-models .chip').textContent(), HOSTILE_NAME);
    t.is(await row.locator('td').last().textContent(), '<b>0.1</b>');
    await page.locator('#network-models td.mono', {hasText: HOSTILE_NAME}).waitFor();
    // The chat's model picker lists it as an option's text.
    const peersGroup = page.locator('select[aria-label="Model"] optgroup[label="Peers"] option');
    await waitFor(async () => (await peersGroup.allTextContents()).includes(HOSTILE_NAME), 20_000, 200);
    t.deepEqual(await page.locator('select[aria-label="Model"] optgroup[label="Pipelines"] option').allTextContents(), ['demo'], 'the coordinator\'s pipeline');
    t.is(await page.locator('img, svg[onload], b, script:not([src])').count(), 0, 'no element made of what the peer sent');
    t.false(requests.some((url) => new URL(url).pathname === '/x'), 'the image was never fetched');
    t.deepEqual(problems, [], 'no dialog, no error');
});
