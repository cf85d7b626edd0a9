import test from 'ava';
import type {Testnet} from 'hyperdht/testnet.js';
import type {Browser} from 'playwright-core';
import {launchChromium, watchedPage} from '../harness/browser.js';
import {capabilitiesFixture} from '../harness/capabilities-fixture.js';
import {waitFor, type DaemonHandle} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {fetchStatus} from '../harness/node-status.js';
import {nodeIdentity, nodeIdOf, peersOf, startSwarmDaemon, startTestnet, testSwarmNode, waitForPeers} from '../harness/swarm-fixture.js';
import type {ModelOffer} from '../swarm/capabilities.js';
import {localModelsFromOffers} from '../swarm/gossip/model-gossip.js';
import {ModelGossipProtocol} from '../swarm/gossip/model-gossip-protocol.js';
import {formatAge, formatProviderCount} from '../web/format.js';

/**
 * The web page's network view of models known by gossip only (issue 26): a real daemon C hears of a provider P's
 * models through a middle node B, in a line P – B – C (P refuses C as banned peers are refused, as in
 * test/model-gossip-swarm.test.ts). One model's name is markup, as a hostile provider may gossip it.
 */

const NETWORK = 'web-page-gossip';
const HOSTILE_NAME = '<img src=x onerror=alert(1)>';
/** The in-process nodes' rounds as short as the channel's rate allows with room; the daemon keeps its defaults. */
const FAST = {intervalMs: 1_500};

const FAR: ModelOffer = {id: 'far-away', sha256: 'ab'.repeat(32), sizeBytes: 4_200_000_000, quantization: 'Q4_K_M', layers: 32, layerBytes: [1], loaded: true};
const HOSTILE: ModelOffer = {id: HOSTILE_NAME, sha256: 'cd'.repeat(32), sizeBytes: 1000, quantization: '<svg onload=alert(3)>', layers: 1, layerBytes: [1000], loaded: true};

let testnet: Testnet;
let browser: Browser;
const cleanups: (() => Promise<unknown>)[] = [];

test.before(async () => {
    ({testnet} = await startTestnet());
    browser = await launchChromium();
});

test.after.always(async () => {
    await browser?.close();
    for (const cleanup of cleanups.reverse())
        await cleanup().catch(() => undefined);
    await testnet?.destroy();
});

/** An in-process node of the network offering `offers` and gossiping them as a node does (node/strongdoge-node.ts). */
async function gossipNode(offers: ModelOffer[], refuse: string[] = []) {
    const identity = nodeIdentity();
    const capabilities = () => capabilitiesFixture({models: offers});
    const node = testSwarmNode(testnet.bootstrap, NETWORK, {identity, capabilities});
    const gossip = new ModelGossipProtocol({...FAST, selfId: identity.id, localModels: () => localModelsFromOffers(capabilities().models)});
    node.use(gossip);
    for (const id of refuse)
        node.bans.ban(id, 'kept apart by the test: heard of by gossip only');
    cleanups.push(async () => {
        gossip.dispose();
        await node.stop();
    });
    await node.start();
    return node;
}

test('gossip\'s counts and ages as the page writes them: a capped count is a lower bound', (t) => {
    t.is(formatProviderCount(1, false), '1 provider');
    t.is(formatProviderCount(12, false), '12 providers');
    t.is(formatProviderCount(16, true), '≥ 16 providers');
    t.is(formatAge(400), 'just now');
    t.is(formatAge(12_300), '12s ago');
    t.is(formatAge(125_000), '2m 5s ago');
});

test.serial('a model only gossip knows is listed as known by gossip, with its provider count and provider, its markup name as text', async (t) => {
    const b = await gossipNode([]);
    const fixture = await createDataDirWithDemoModel({layers: 2, width: 64, feedForwardLength: 128, writesBytes: false});
    cleanups.push(fixture.cleanup);
    const bootstrap = testnet.bootstrap.map(({host, port}) => `${host}:${port}`).join(',');
    const c: DaemonHandle = await startSwarmDaemon(bootstrap, fixture.dataDir, ['--network', NETWORK]);
    cleanups.push(() => c.stop('SIGKILL'));
    const cId = await nodeIdOf(c);
    await waitForPeers(c, [b.id], 30_000);
    const p = await gossipNode([FAR, HOSTILE], [cId]);

    // The daemon's model table: both of P's models, with no holder, and P heard of second-hand.
    const gossiped = async () => (await fetchStatus(c, '/api/network/models')).models.filter((model) => model.holders.length === 0 && model.gossip !== null);
    await waitFor(async () => (await gossiped()).length === 2, 60_000, 250);
    for (const model of await gossiped()) {
        t.like(model.gossip, {providerCount: 1, providerCountCapped: false});
        t.like(model.gossip!.providers, [{nodeId: p.id, self: false, direct: false}]);
    }

    const {page, problems, requests} = await watchedPage(browser);
    await page.goto(`${c.origin}/#/network`);
    const row = page.locator(`#network-models tr[data-sha256="${FAR.sha256}"]`);
    await row.waitFor({timeout: 30_000});
    t.is(await row.locator('.model-name').textContent(), FAR.id);
    t.is(await row.locator('.badge.gossip-only').textContent(), 'known by gossip');
    t.is(await row.getAttribute('data-gossip-only'), '');
    const providers = row.locator('.model-providers');
    t.is(await providers.locator('.gossip-count').textContent(), '1 provider');
    t.regex(await providers.locator('.gossip-age').textContent() ?? '', /^by gossip · heard (just now|\d+s ago)$/);
    const chip = providers.locator('.gossip-provider');
    t.is(await chip.count(), 1);
    t.is(await chip.textContent(), `${p.id.slice(0, 16)} second-hand`);
    t.is(await chip.getAttribute('data-node-id'), p.id);
    t.regex(await chip.getAttribute('title') ?? '', new RegExp(`^${p.id} · heard of through peers · `));
    t.is(await providers.locator('.chip:not(.gossip-provider)').count(), 0, 'no connected holder');
    t.regex(await page.locator('#network-models .gossip-note').textContent() ?? '', /^2 models known by gossip only: .*connects to a provider on demand/s);

    const hostileRow = page.locator(`#network-models tr[data-sha256="${HOSTILE.sha256}"]`);
    t.is(await hostileRow.locator('.model-name').textContent(), HOSTILE_NAME);
    t.is(await hostileRow.locator('td').nth(1).textContent(), HOSTILE.quantization);
    t.is(await page.locator('img, svg[onload], script:not([src])').count(), 0, 'no element made of what the peer gossiped');
    t.false(requests.some((url) => new URL(url).pathname === '/x'), 'the image was never fetched');

    // Honest about the setup: C and P never connected; C heard of P through B alone.
    t.deepEqual((await peersOf(c)).peers.map((peer) => peer.id), [b.id]);
    t.false(p.peers().some((peer) => peer.id === cId));
    t.deepEqual(problems, [], 'no dialog, no error');
    await page.context().close();
});
