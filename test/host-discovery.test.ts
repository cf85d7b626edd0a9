import test from 'ava';
import OpenAI from 'openai';
import {waitFor} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {singleProcessTexts} from '../harness/generation-requests.js';
import {fetchStatus} from '../harness/node-status.js';
import {testRpcBinaries} from '../harness/rpc-binaries.js';
import {nodeIdOf, peersOf, startSwarmDaemon, startTestnet, testSwarmNode, waitForPeers} from '../harness/swarm-fixture.js';

/**
 * Hosts beyond the connected peers (issue 26, docs/architecture.md, "Finding providers and hosts"): a coordinator
 * whose connected peers cannot host its model looks up the hosts topic, connects to hosts by key and forms its
 * pipeline over them. Real daemons and rpc servers on a loopback testnet, as in test/sharding.test.ts.
 *
 * The line: B (an in-process node with no room) is joined by key by everyone; the hosts hold `--max-peers 2`, so
 * they dial B alone; the coordinator holds `--max-peers 3`, so it dials B and at most one topic peer: the pipeline
 * needs both hosts, so at least one must be found on the hosts topic.
 */

const MiB = 2 ** 20;
const MODEL = {layers: 8, width: 256, feedForwardLength: 512, writesBytes: false};
const CONTEXT = 512;
const PROMPT = 'Once upon a host';
const TOKENS = 24;

test('a coordinator whose peers have no room finds hosts on the hosts topic and forms its pipeline over them', async (t) => {
    await testRpcBinaries();
    const {testnet, bootstrap} = await startTestnet();
    const cleanups: (() => Promise<unknown>)[] = [];
    t.teardown(async () => {
        for (const cleanup of cleanups.reverse())
            await cleanup().catch(() => undefined);
        await testnet.destroy();
    });
    const network = 'host-discovery';
    const b = testSwarmNode(testnet.bootstrap, network);
    cleanups.push(() => b.stop());
    await b.start();

    const start = async (extra: string[], withModel: boolean) => {
        const fixture = await createDataDirWithDemoModel(MODEL);
        cleanups.push(fixture.cleanup);
        const daemon = await startSwarmDaemon(bootstrap, fixture.dataDir, ['--network', network, '--context-size', String(CONTEXT), '--parallel', '2',
            '--relay-through', b.id, ...(withModel ? ['--model', 'demo'] : []), ...extra], withModel ? {readyTimeoutMs: 180_000} : {});
        cleanups.push(() => daemon.stop('SIGKILL'));
        return {daemon, id: await nodeIdOf(daemon)};
    };
    // Room for three layers each (test/sharding.test.ts): the plan needs the coordinator and both hosts.
    const hosts = await Promise.all([0, 1].map(() => start(['--max-peers', '2', '--max-shard-memory', String(15 * MiB)], false)));
    await waitFor(async () => hosts.every((host) => b.peer(host.id) !== undefined), 60_000, 100);
    // Announced on the hosts topic, as a coordinator's look-up will see them.
    await waitFor(async () => {
        const found = await b.lookupHosts();
        return hosts.every((host) => found.includes(host.id));
    }, 60_000, 500);
    for (const host of hosts)
        t.deepEqual((await peersOf(host.daemon)).peers.map((peer) => peer.id), [b.id], 'a host is connected to B alone');

    const coordinator = await start(['--max-peers', '3', '--shard', 'always', '--max-stages', '3', '--memory-limit', String(15 * MiB), '--max-shard-memory', '0'], true);
    // Ready means formed over both hosts and loaded (a coordinator's /health waits for it).
    const pipeline = (await fetchStatus(coordinator.daemon, '/api/cluster')).pipelines[0]!;
    t.is(pipeline.state, 'ready');
    t.deepEqual(pipeline.stages.filter((stage) => !stage.self).map((stage) => stage.peer).sort(), hosts.map((host) => host.id).sort());
    await waitForPeers(coordinator.daemon, [b.id, ...hosts.map((host) => host.id)], 30_000);
    const peers = (await peersOf(coordinator.daemon)).peers;
    const found = peers.filter((peer) => peer.reasons.includes('on-demand:shard-host'));
    t.true(found.length >= 1, `hosts connected on demand: ${JSON.stringify(peers.map((peer) => [peer.id.slice(0, 8), peer.reasons]))}`);
    for (const host of hosts)
        t.true(peers.find((peer) => peer.id === host.id)?.reasons.includes('shard-host:demo') ?? false, 'each host carries a stage');
    const {connections} = await peersOf(coordinator.daemon);
    t.true(connections!.held <= connections!.maxPeers + connections!.inUse, JSON.stringify(connections));
    t.true(coordinator.daemon.logs.some((line) => line.msg === 'connected to hosts found on the DHT'));

    // The same model whole, in one process of its own: what the split must reproduce token for token.
    const whole = await createDataDirWithDemoModel(MODEL);
    cleanups.push(whole.cleanup);
    const [expected] = await singleProcessTexts(whole.dataDir, [PROMPT], {maxTokens: TOKENS, contextSize: CONTEXT});
    const client = new OpenAI({baseURL: coordinator.daemon.baseUrl, apiKey: 'x', maxRetries: 0});
    const answer = await client.completions.create({model: 'demo', prompt: PROMPT, max_tokens: TOKENS, temperature: 0});
    t.is(answer.choices[0]!.text, expected!, 'the text one process gets');
});
