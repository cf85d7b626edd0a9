import test, {type ExecutionContext} from 'ava';
import OpenAI from 'openai';
import {BenchmarkCache, benchmarkCachePath} from '../engine/device-benchmark/benchmark-cache.js';
import {deviceKey} from '../engine/device-benchmark/device-benchmark.js';
import {waitFor, type DaemonHandle} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {seamReport} from '../harness/generation-requests.js';
import {startLabDaemon} from '../harness/lab-daemon.js';
import {createLab, labSupported, type Lab, type LabHost, type NatKind} from '../harness/netns-lab.js';
import {fetchStatus} from '../harness/node-status.js';
import type {NodeStatus} from '../node/node-status.js';

/**
 * Nodes behind NATs in a lab of network namespaces (harness/netns-lab.ts): a private HyperDHT on the lab's
 * "internet", each NATed node behind its own router. Two random (symmetric) NATs never punch through to each other;
 * a reachable strongdoge node relays for them (docs/architecture.md, "Relays").
 */

const support = labSupported();
// CI runs as root with iptables installed (.ci/run): there the lab must work, not be skipped.
const labTest = support.ok || process.env.CI ? test.serial : test.skip;
if (!support.ok)
    console.log(`relay lab: ${support.reason}${process.env.CI ? '' : '; skipped'}`);

const PEER_TIMEOUT_S = 3;
/** Finding peers and relays through a fresh DHT, punching and falling back: generous for a loaded machine. */
const CONNECT_TIMEOUT_MS = 120_000;

interface LabNode {
    daemon: DaemonHandle,
    id: string
}

async function startLab(t: ExecutionContext, hosts: {name: string, nat: NatKind}[]) {
    if (!support.ok)
        t.fail(support.reason);
    const lab = await createLab(hosts);
    t.teardown(() => lab.close());
    return lab;
}

async function startNode(t: ExecutionContext, lab: Lab, host: LabHost, args: string[], model?: {tokensPerSecond: number}): Promise<LabNode> {
    // Serving nodes get a model that never ends by itself, wide enough to stream for seconds; a measured speed
    // makes a node preferred by requesters (docs/architecture.md, "Peer ranking").
    const fixture = await createDataDirWithDemoModel(model ? {width: 512, feedForwardLength: 1024, endsText: false} : {layers: 1, width: 64, headCount: 4, feedForwardLength: 64});
    t.teardown(fixture.cleanup);
    if (model)
        await new BenchmarkCache(benchmarkCachePath(fixture.dataDir)).store(deviceKey(false, []), 'lab', {
            device: deviceKey(false, []), backend: false, model: {path: fixture.modelPath, parameters: 1, weightBytes: 1}, threads: 1,
            measuredTflops: 0.01, lookupTflops: null, promptTokensPerSecond: 1, generationTokensPerSecond: model.tokensPerSecond,
            memoryBandwidthGBs: 1, measuredAt: new Date().toISOString()
        });
    const daemon = await startLabDaemon(lab, host, ['--data-dir', fixture.dataDir, '--log-level', 'debug', '--peer-timeout', String(PEER_TIMEOUT_S),
        ...(model ? ['--model', 'demo'] : []), ...args]);
    t.teardown(() => daemon.stop('SIGKILL'));
    return {daemon, id: (await fetchStatus(daemon, '/api/node')).id};
}

/** The routes of the requests a node has logged, once it has logged `count` (the record follows the response). */
async function requestRoutes(node: LabNode, count: number) {
    const routes = () => node.daemon.logs.filter((record) => record.msg === 'request').map((record) => (record.request as {route: string}).route);
    await waitFor(() => routes().length >= count, 10_000);
    return routes();
}

function peers(node: LabNode) {
    return fetchStatus(node.daemon, '/api/peers');
}

async function waitForRoute(from: LabNode, to: LabNode, kind: 'direct' | 'relayed', timeoutMs = CONNECT_TIMEOUT_MS) {
    try {
        await waitFor(async () => {
            const peer = (await peers(from)).peers.find((candidate) => candidate.id === to.id);
            return peer?.route.kind === kind && peer.capabilities.models.every((model) => model.loaded);
        }, timeoutMs, 500);
    } catch (error) {
        const document = await peers(from);
        throw new Error(`${(error as Error).message}: ${to.id.slice(0, 8)} not ${kind}; peers ${JSON.stringify(document.peers.map((peer) => [peer.id.slice(0, 8), peer.route]))}, unreachable ${JSON.stringify(document.unreachable)}`);
    }
}

labTest('two nodes behind random NATs connect through a strongdoge relay and serve completions; over its cap the relay stops offering', async (t) => {
    const lab = await startLab(t, [{name: 'relay', nat: 'none'}, {name: 'a', nat: 'random'}, {name: 'b', nat: 'random'}]);
    // A pair's control traffic stays far below 0.02 Mbit/s; a long answer streamed through takes it above.
    const relay = await startNode(t, lab, lab.hosts.relay!, ['--relay-max-mbps', '0.02']);
    const b = await startNode(t, lab, lab.hosts.b!, [], {tokensPerSecond: 100});
    const a = await startNode(t, lab, lab.hosts.a!, []);

    // auto: the relay offers once the DHT finds it reachable
    await waitFor(async () => (await fetchStatus(relay.daemon, '/api/node')).relay?.offering === true, CONNECT_TIMEOUT_MS, 500);
    const relayStatus = await fetchStatus(relay.daemon, '/api/node');
    t.like(relayStatus.nat, {type: 'open', reachable: true});

    await waitForRoute(a, b, 'relayed');
    const aStatus = await fetchStatus(a.daemon, '/api/node');
    t.like(aStatus.nat, {type: 'random', reachable: false});
    t.false(aStatus.relay!.offering, 'an unreachable node does not relay');
    const route = (await peers(a)).peers.find((peer) => peer.id === b.id)!.route;
    t.is(route.relay, relay.id);
    t.is((await peers(a)).peers.find((peer) => peer.id === relay.id)!.route.kind, 'direct', 'the relay itself is reached directly');

    const client = new OpenAI({baseURL: a.daemon.baseUrl, apiKey: 'x', maxRetries: 0});
    const completion = await client.completions.create({model: 'demo', prompt: 'Across the NATs', max_tokens: 24, temperature: 0});
    t.is(completion.usage?.completion_tokens, 24);
    t.deepEqual(await requestRoutes(a, 1), [`peers:${b.id.slice(0, 16)}`]);
    const delivered = (await peers(a)).peers.find((peer) => peer.id === b.id)!.deliveredTokensPerSecond;
    t.true(delivered !== null && delivered > 0, 'the pace through the relay counts in ranking');
    const relayed = (await fetchStatus(relay.daemon, '/api/node')).relay!;
    t.true(relayed.pairs >= 1, JSON.stringify(relayed));
    t.true(relayed.bytesRelayed > 0, JSON.stringify(relayed));

    // Over the cap (measured over 10 s) the relay stops offering, while the pair it carries goes on unthrottled.
    let overCap: NonNullable<NodeStatus['relay']> | undefined;
    const watching = waitFor(async () => {
        const status = (await fetchStatus(relay.daemon, '/api/node')).relay!;
        if (!status.offering && status.mbps > 0.02)
            overCap = status;
        return overCap !== undefined;
    }, 60_000, 200);
    const long = await client.completions.create({model: 'demo', prompt: 'A long answer through the relay', max_tokens: 1500, temperature: 0});
    t.is(long.usage?.completion_tokens, 1500);
    await watching;
    t.true(overCap!.bytesRelayed > relayed.bytesRelayed);
    await waitFor(async () => (await fetchStatus(relay.daemon, '/api/node')).relay!.offering, 60_000, 500);
});

labTest('a port-preserving NAT and a random one connect: by punching, or through the relay as soon as a punch fails', async (t) => {
    const lab = await startLab(t, [{name: 'relay', nat: 'none'}, {name: 'a', nat: 'consistent'}, {name: 'b', nat: 'random'}]);
    const relay = await startNode(t, lab, lab.hosts.relay!, []);
    await waitFor(async () => (await fetchStatus(relay.daemon, '/api/node')).relay?.offering === true, CONNECT_TIMEOUT_MS, 500);
    const b = await startNode(t, lab, lab.hosts.b!, [], {tokensPerSecond: 100});
    const a = await startNode(t, lab, lab.hosts.a!, []);
    await waitFor(async () => (await peers(a)).peers.some((peer) => peer.id === b.id && peer.capabilities.models.every((model) => model.loaded)),
        CONNECT_TIMEOUT_MS, 500);
    t.like((await fetchStatus(a.daemon, '/api/node')).nat, {type: 'consistent', reachable: false});
    t.log('route', (await peers(a)).peers.find((peer) => peer.id === b.id)!.route.kind);
    const completion = await new OpenAI({baseURL: a.daemon.baseUrl, apiKey: 'x', maxRetries: 0})
        .completions.create({model: 'demo', prompt: 'Half punched', max_tokens: 16, temperature: 0});
    t.is(completion.usage?.completion_tokens, 16);
});

labTest('without a relay, two random NATs never connect, and each says why', async (t) => {
    const lab = await startLab(t, [{name: 'a', nat: 'random'}, {name: 'b', nat: 'random'}]);
    const b = await startNode(t, lab, lab.hosts.b!, []);
    const a = await startNode(t, lab, lab.hosts.a!, []);
    const failure = async () => (await peers(a)).unreachable.find((entry) => entry.peerId === b.id);
    await waitFor(async () => (await failure()) !== undefined, CONNECT_TIMEOUT_MS, 500);
    const reported = (await failure())!;
    t.regex(reported.code, /HOLEPUNCH/);
    t.is(reported.relay, null);
    t.deepEqual((await peers(a)).peers, []);
    const logged = a.daemon.logs.find((record) => record.msg === 'could not connect to a peer' && record.peer === b.id.slice(0, 16));
    t.truthy(logged);
    t.regex(String(logged!.code), /HOLEPUNCH/);
});

labTest('a relay that dies mid-stream is a peer failure like any other: the answer continues from another peer', async (t) => {
    const lab = await startLab(t, [{name: 'relay', nat: 'none'}, {name: 'a', nat: 'random'}, {name: 'b', nat: 'random'}, {name: 'c', nat: 'none'}]);
    const relay = await startNode(t, lab, lab.hosts.relay!, ['--relay', 'on', '--serve-peers', 'off']);
    // b measured itself faster, so a sends to b (through the relay) first
    const b = await startNode(t, lab, lab.hosts.b!, ['--relay', 'off'], {tokensPerSecond: 1000});
    const c = await startNode(t, lab, lab.hosts.c!, ['--relay', 'off'], {tokensPerSecond: 1});
    const a = await startNode(t, lab, lab.hosts.a!, ['--relay-through', relay.id]);
    await waitForRoute(a, b, 'relayed');
    await waitForRoute(a, c, 'direct');
    t.deepEqual((await fetchStatus(a.daemon, '/api/node')).relay!.through, [relay.id]);
    t.is((await peers(a)).peers.find((peer) => peer.id === b.id)!.route.relay, relay.id);

    const client = new OpenAI({baseURL: a.daemon.baseUrl, apiKey: 'x', maxRetries: 0});
    const prompt = 'A long tale told through a relay';
    const maxTokens = 300;
    const expected = await new OpenAI({baseURL: c.daemon.baseUrl, apiKey: 'x', maxRetries: 0}).completions.create({model: 'demo', prompt, max_tokens: maxTokens, temperature: 0});
    let text = '';
    let chunks = 0;
    let seamText = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of await client.completions.create({model: 'demo', prompt, max_tokens: maxTokens, temperature: 0, stream: true, stream_options: {include_usage: true}})) {
        text += chunk.choices[0]?.text ?? '';
        usage = chunk.usage ?? usage;
        if (++chunks === 20) {
            seamText = text;
            relay.daemon.process.kill('SIGKILL');
        }
    }
    // Past the seam a near-tie may part the answer from the uninterrupted run (README): logged, not asserted.
    t.true(expected.choices[0]!.text.startsWith(seamText));
    t.true(text.startsWith(seamText));
    t.log(seamReport(text, expected.choices[0]!.text, seamText));
    t.is(usage?.completion_tokens, maxTokens);
    t.deepEqual(await requestRoutes(a, 1), [`peers:${b.id.slice(0, 16)},${c.id.slice(0, 16)}`]);
});
