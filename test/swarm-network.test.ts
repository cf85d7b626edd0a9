import {Wallet} from 'ethers';
import {mkdtemp, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import test from 'ava';
import type {Testnet} from 'hyperdht/testnet.js';
import {runCli, waitFor} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {fetchStatus} from '../harness/node-status.js';
import {nodeIdOf, peersOf, startSwarmDaemon, startTestnet, waitForPeers} from '../harness/swarm-fixture.js';

const TINY = {layers: 2, width: 64, headCount: 4, feedForwardLength: 64};

let testnet: Testnet;
let bootstrap: string;
const cleanups: (() => Promise<unknown>)[] = [];

test.before(async () => {
    ({testnet, bootstrap} = await startTestnet());
});

test.after.always(async () => {
    for (const cleanup of cleanups.reverse())
        await cleanup().catch(() => undefined);
    await testnet?.destroy();
});

async function node(withModel: boolean, extra: string[] = [], dataDir?: string, env: NodeJS.ProcessEnv = {}) {
    if (dataDir === undefined) {
        if (withModel) {
            const fixture = await createDataDirWithDemoModel(TINY);
            cleanups.push(fixture.cleanup);
            dataDir = fixture.dataDir;
        } else {
            dataDir = await mkdtemp(join(tmpdir(), 'strongdoge-swarm-'));
            cleanups.push(() => rm(dataDir!, {recursive: true, force: true}));
        }
    }
    const daemon = await startSwarmDaemon(bootstrap, dataDir, [...(withModel ? ['--model', 'demo'] : []), ...extra], {env});
    cleanups.push(() => daemon.stop());
    return {daemon, dataDir, id: await nodeIdOf(daemon)};
}

const others = (all: {id: string}[], self: {id: string}) => all.filter((other) => other !== self).map((other) => other.id);

test.serial('nodes on a loopback testnet discover each other with capabilities and RTT; a killed one leaves and returns', async (t) => {
    // A price needs a wallet and a payment contract to be paid through (docs/architecture.md, "Payments"); no chain is asked here.
    const nodes = [await node(false, ['--price', '0.5', '--payment-contract', `0x${'12'.repeat(20)}`], undefined, {STRONGDOGE_WALLET_KEY: Wallet.createRandom().privateKey}),
        ...await Promise.all([node(true), node(true), node(true)])];
    const [plain, withModel] = nodes;

    for (const current of nodes)
        await waitForPeers(current.daemon, others(nodes, current), 30_000,
            (peers) => peers.every((peer) => peer.rttMs !== null && peer.capabilities.software === '0.1.0'));

    // Capabilities follow the engine: once loaded, peers see the model as loaded and hashed.
    await waitForPeers(plain!.daemon, others(nodes, plain!), 20_000, (peers) =>
        peers.filter((peer) => peer.capabilities.models.some((model) => model.id === 'demo' && model.loaded && model.sha256 !== null)).length === 3);
    const {peers} = await peersOf(withModel!.daemon);
    const priced = peers.find((peer) => peer.id === plain!.id)!;
    t.deepEqual(priced.capabilities.models, []);
    t.is((priced.capabilities as unknown as {pricePerMillionTokens: number}).pricePerMillionTokens, 0.5);

    const table = await fetchStatus(plain!.daemon, '/api/network/models');
    t.is(table.models.length, 1);
    t.is(table.models[0]!.id, 'demo');
    t.is(table.models[0]!.layers, 2);
    t.is(table.models[0]!.resources.perLayerBytes.length, 2);
    t.deepEqual(table.models[0]!.holders.map((holder) => holder.nodeId).sort(), others(nodes, plain!).sort());

    const models = await (await fetch(`${plain!.daemon.baseUrl}/models`)).json() as {data: {id: string, owned_by: string}[]};
    t.is(models.data.length, 1);
    t.regex(models.data[0]!.owned_by, /^peer:[0-9a-f]{16}$/);
    const served = await fetch(`${plain!.daemon.baseUrl}/chat/completions`, {
        method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify({model: 'demo', messages: [{role: 'user', content: 'hi'}], max_tokens: 5})
    });
    t.is(served.status, 200, 'the model-less node has a peer serve it');

    // The CLI talks to the running node.
    const port = new URL(plain!.daemon.origin).port;
    const peersText = await runCli(['peers', '--port', port, '--data-dir', plain!.dataDir]);
    t.is(peersText.code, 0, peersText.stderr);
    for (const other of others(nodes, plain!))
        t.true(peersText.stdout.includes(other.slice(0, 16)));
    t.regex(peersText.stdout, /demo/);
    t.regex(peersText.stdout, /announced on the DHT as /);
    // Found beyond its connections too: the model's topic and, with room for layers, the hosts topic (docs/architecture.md, "Finding providers and hosts").
    await waitFor(async () => (await peersOf(withModel!.daemon)).announced?.models.includes(table.models[0]!.sha256 ?? '-') ?? false, 30_000, 200);
    const peersJson = JSON.parse((await runCli(['peers', '--json', '--port', port, '--data-dir', plain!.dataDir])).stdout);
    t.is(peersJson.peers.length, 3);
    const status = await runCli(['status', '--port', port, '--data-dir', plain!.dataDir]);
    t.regex(status.stdout, /network {2}public, 3 peers/);
    t.true(status.stdout.includes(plain!.id));

    // SIGKILL: no goodbye. The others drop it when it falls silent.
    const victim = nodes[3]!;
    await victim.daemon.stop('SIGKILL');
    const survivors = nodes.slice(0, 3);
    for (const current of survivors)
        await waitForPeers(current.daemon, others(survivors, current), 60_000);
    t.pass('the killed node left every table');

    const revived = await node(true, [], victim.dataDir);
    t.is(revived.id, victim.id, 'same data dir, same identity');
    const all = [...survivors, revived];
    for (const current of all)
        await waitForPeers(current.daemon, others(all, current), 30_000);
});

test.serial('private networks: nodes with different secrets never see each other', async (t) => {
    const club = ['--network', 'club'];
    const first = await node(false, [...club, '--network-secret', 'correct horse battery']);
    const second = await node(false, [...club, '--network-secret', 'correct horse battery']);
    const outsider = await node(false, [...club, '--network-secret', 'wrong horse battery!']);
    const open = await node(false, club);

    await waitForPeers(first.daemon, [second.id]);
    await waitForPeers(second.daemon, [first.id]);
    await sleep(3_000); // room for any wrong connection to appear
    t.deepEqual((await peersOf(first.daemon)).peers.map((peer) => peer.id), [second.id]);
    t.deepEqual((await peersOf(outsider.daemon)).peers, []);
    t.deepEqual((await peersOf(open.daemon)).peers, []);
    const info = await fetchStatus(first.daemon, '/api/node');
    t.like(info, {network: 'club', privateNetwork: true});
    t.false(JSON.stringify(first.daemon.logs).includes('correct horse'), 'the secret is never logged');
});
