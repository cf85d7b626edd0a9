/**
 * A network of 80 nodes with `--max-peers 6` on a loopback HyperDHT testnet (issue 26): 77 in-process `SwarmNode`s
 * with the model gossip at a daemon's defaults, one daemon serving the demo model (A) and two asking for it (C1,
 * C2; `--serve-peers off`). Measures the first token of a request for A's model from a requester not connected to
 * A (found and connected on demand) against the same request once the two are connected, the connections and
 * memory per node, and the gossip's bytes per node and minute. Writes bench/results/network-scale.json.
 */
import {setTimeout as sleep} from 'node:timers/promises';
import {waitFor} from '../harness/cli-process.js';
import {residentBytes, SCALE_DEMO_MODEL, startGossipNodes, startScaleDaemon, stopGossipNodes, timedCompletion, waitForPeerCount,
    watchConnections, type GossipNode, type ScaleDaemon} from '../harness/network-scale-fixture.js';
import {fetchStatus} from '../harness/node-status.js';
import {peersOf, startTestnet} from '../harness/swarm-fixture.js';
import {machine, writeReport} from './lib/report.js';
import {median, round} from './lib/statistics.js';

const NETWORK = 'scale-bench';
const MAX_PEERS = 6;
const IN_PROCESS = 77;
/** On-demand connections close after this long idle, so each repetition starts unconnected again. */
const IDLE_PEER_TIMEOUT_S = Number(process.env.SCALE_IDLE_PEER_TIMEOUT_S ?? 2);
/** In-process nodes that look up the provider's DHT topic, one after another. */
const LOOKUPS = 10;
const REPETITIONS = 5;
const MAX_TOKENS = 8;
const GOSSIP_WINDOW_MS = 60_000;
const PROMPT = 'Such wow, much network';

const gc = (globalThis as {gc?: () => void}).gc;
const memory = () => {
    gc?.();
    const {rss, heapUsed} = process.memoryUsage();
    return {rss, heapUsed};
};

const {testnet, bootstrap} = await startTestnet();
const before = memory();
let nodes: GossipNode[] = [];
const daemons: {name: string, handle: ScaleDaemon}[] = [];
const mib = (bytes: number) => round(bytes / 2 ** 20, 1);
const spread = (values: number[]) => ({min: Math.min(...values), median: median(values), max: Math.max(...values)});

try {
    nodes = await startGossipNodes({bootstrap: testnet.bootstrap, network: NETWORK, count: IN_PROCESS, maxPeers: MAX_PEERS});
    const watch = watchConnections(() => daemons.map(({name, handle}) => ({name, daemon: handle.daemon})), nodes, 500);
    const start = async (name: string, serving: boolean) => {
        const handle = await startScaleDaemon({bootstrap, network: NETWORK, maxPeers: MAX_PEERS, serving,
            extra: serving ? [] : ['--idle-peer-timeout', String(IDLE_PEER_TIMEOUT_S)]});
        daemons.push({name, handle});
        return handle;
    };
    const requesters = await Promise.all([start('C1', false), start('C2', false)]);
    await Promise.all(requesters.map((requester) => waitForPeerCount(requester.daemon, MAX_PEERS - 1, 120_000)));
    const a = await start('A', true);
    const knows = async (requester: ScaleDaemon) =>
        ((await fetchStatus(requester.daemon, '/api/network/models')).models.find((entry) => entry.id === 'demo')?.gossip?.providers.length ?? 0) > 0;
    const knownAfter = performance.now();
    await waitFor(async () => (await knows(requesters[0]!)) && (await knows(requesters[1]!)), 180_000, 500);
    const modelKnownMs = performance.now() - knownAfter;
    const connectedToA = async (requester: ScaleDaemon) => (await peersOf(requester.daemon)).peers.some((peer) => peer.id === a.id);
    const unconnected: ScaleDaemon[] = [];
    for (const requester of requesters)
        if (!await connectedToA(requester))
            unconnected.push(requester);
    if (unconnected.length === 0)
        throw new Error('both requesters met A on the network topic: no request to measure without a connection (run again)');
    const requester = unconnected[0]!;

    const direct = (await a.client.completions.create({model: 'demo', prompt: PROMPT, max_tokens: MAX_TOKENS, temperature: 0})).choices[0]!.text;
    const pairs: {unconnectedMs: number, connectedMs: number, reasons: string[]}[] = [];
    const failures: {repetition: number, error: string}[] = [];
    let textsEqual = true;
    // one pair more than measured: the first warms the requester's and A's paths (not counted)
    for (let repetition = 0; repetition <= REPETITIONS; repetition++) {
        await waitFor(async () => !await connectedToA(requester), 120_000, 250);
        let unconnectedAnswer: Awaited<ReturnType<typeof timedCompletion>>;
        try {
            unconnectedAnswer = await timedCompletion(requester.client, PROMPT, MAX_TOKENS);
        } catch (error) {
            failures.push({repetition, error: (error as Error).message});
            process.stderr.write(`repetition ${repetition}: ${(error as Error).message}\n`);
            continue;
        }
        const reasons = (await peersOf(requester.daemon)).peers.find((peer) => peer.id === a.id)?.reasons ?? [];
        const connectedAnswer = await timedCompletion(requester.client, PROMPT, MAX_TOKENS);
        textsEqual &&= unconnectedAnswer.text === direct && connectedAnswer.text === direct;
        process.stderr.write(`repetition ${repetition}: ${round(unconnectedAnswer.firstTokenMs)} ms unconnected, ${round(connectedAnswer.firstTokenMs)} ms connected\n`);
        if (repetition > 0)
            pairs.push({unconnectedMs: unconnectedAnswer.firstTokenMs, connectedMs: connectedAnswer.firstTokenMs, reasons});
    }

    // the DHT's part: a look-up of the model's provider topic, as a request does once gossip's providers are spent
    const sha256 = (await fetchStatus(a.daemon, '/api/network/models')).models.find((entry) => entry.id === 'demo')!.sha256!;
    const lookups: {ms: number, foundA: boolean, found: number}[] = [];
    for (const {node} of nodes.slice(0, LOOKUPS)) {
        const startedAt = performance.now();
        const found = await node.lookupProviders(sha256);
        lookups.push({ms: performance.now() - startedAt, foundA: found.includes(a.id), found: found.length});
    }

    // connections and memory, settled
    await sleep(5_000);
    const daemonConnections = await Promise.all(daemons.map(async ({name, handle}) => ({name, ...(await peersOf(handle.daemon)).connections!})));
    const inProcessCounts = nodes.map(({node}) => node.connectionCounts());
    const after = memory();
    const daemonMemory = await Promise.all(daemons.map(async ({name, handle}) => ({name, rssMiB: mib((await residentBytes(handle.daemon.process.pid)) ?? Number.NaN)})));

    // gossip over a minute of the settled network
    const gossipBefore = nodes.map(({gossip}) => gossip.stats());
    const windowStart = performance.now();
    await sleep(GOSSIP_WINDOW_MS);
    const minutes = (performance.now() - windowStart) / 60_000;
    const deltas = nodes.map(({gossip}, index) => {
        const now = gossip.stats();
        const then = gossipBefore[index]!;
        return {framesSent: now.framesSent - then.framesSent, bytesSent: now.bytesSent - then.bytesSent, bytesReceived: now.bytesReceived - then.bytesReceived};
    });
    const frameBytes = deltas.reduce((sum, delta) => sum + delta.bytesSent, 0) / Math.max(1, deltas.reduce((sum, delta) => sum + delta.framesSent, 0));
    watch.stop();

    const unconnectedMs = pairs.map((pair) => pair.unconnectedMs);
    const connectedMs = pairs.map((pair) => pair.connectedMs);
    const report = {
        benchmark: 'network scale: first token for a model held by one node of an 80-node network with --max-peers 6, from a node not connected to it vs'
            + ' once connected; connections and memory per node; model gossip bytes per node and minute',
        date: new Date().toISOString(),
        machine: machine(),
        settings: {
            nodes: IN_PROCESS + daemons.length,
            daemons: {providers: 1, requesters: 2, how: 'strongdoge start from the sources (tsx), --threads 1, on one loopback HyperDHT testnet (3 bootstrap nodes)'},
            inProcessNodes: {count: IN_PROCESS, how: 'SwarmNode with ModelGossipProtocol at its defaults (5 s rounds, fan-out 2), as node/strongdoge-node.ts attaches it; no model'},
            maxPeers: MAX_PEERS,
            idlePeerTimeoutSeconds: IDLE_PEER_TIMEOUT_S,
            model: {name: 'demo', ...SCALE_DEMO_MODEL},
            maxTokens: MAX_TOKENS,
            temperature: 0,
            repetitions: REPETITIONS
        },
        results: {
            firstToken: {
                unconnectedMedianMs: round(median(unconnectedMs)),
                connectedMedianMs: round(median(connectedMs)),
                addedMedianMs: round(median(pairs.map((pair) => pair.unconnectedMs - pair.connectedMs))),
                unconnectedMs: unconnectedMs.map((ms) => round(ms)),
                connectedMs: connectedMs.map((ms) => round(ms)),
                textsEqualToDirect: textsEqual,
                failedRequests: failures,
                reasonsOnceServed: pairs[0]?.reasons ?? [],
                how: 'each pair: the requester holds no connection to A (its on-demand one closed after --idle-peer-timeout), asks for the model gossip'
                    + ' names A as provider of (A already in its table: the look-up is the table\'s, then a connect by key), then asks again over the'
                    + ' connection just opened (the anchor); one warm-up pair not counted',
                modelKnownAtRequestersMs: round(modelKnownMs),
                requestersConnectedToAByTopic: requesters.length - unconnected.length
            },
            dhtLookup: {
                medianMs: round(median(lookups.map((lookup) => lookup.ms))),
                ms: lookups.map((lookup) => round(lookup.ms)),
                foundProvider: lookups.filter((lookup) => lookup.foundA).length,
                lookups: lookups.length,
                how: `${LOOKUPS} in-process nodes in turn look up the provider topic of A's model (SwarmNode.lookupProviders: HyperDHT's lookup, to`
                    + ' its end): what a request adds before its connect when gossip names no usable provider'
            },
            connections: {
                daemons: daemonConnections,
                inProcess: {held: spread(inProcessCounts.map((counts) => counts.held)), inUse: spread(inProcessCounts.map((counts) => counts.inUse)),
                    maxPeers: MAX_PEERS},
                mostHeldByAnyNode: Math.max(...watch.most.values()),
                samples: watch.samples,
                samplesOverLimitPlusInUse: watch.breaches.length
            },
            memory: {
                daemons: daemonMemory,
                inProcessPerNode: {
                    rssMiB: mib((after.rss - before.rss) / IN_PROCESS),
                    heapUsedMiB: mib((after.heapUsed - before.heapUsed) / IN_PROCESS),
                    how: `this process's RSS and V8 heap after the ${IN_PROCESS} nodes started and ran the measurements, less before, over ${IN_PROCESS}`
                        + ` (gc ${gc === undefined ? 'not exposed' : 'run before each reading'}); each node has its own HyperDHT node and UDP socket`
                }
            },
            gossip: {
                windowSeconds: round(minutes * 60, 1),
                bytesSentPerNodePerMinute: round(median(deltas.map((delta) => delta.bytesSent / minutes))),
                bytesReceivedPerNodePerMinute: round(median(deltas.map((delta) => delta.bytesReceived / minutes))),
                framesSentPerNodePerMinute: round(median(deltas.map((delta) => delta.framesSent / minutes))),
                bytesPerFrame: round(frameBytes),
                how: 'median over the in-process nodes of ModelGossipProtocol.stats() over the window: the encoded frames on strongdoge/gossip'
                    + ' (one model in the table), without Protomux, Noise and UDX headers'
            }
        }
    };
    await writeReport('network-scale', report, {firstToken: report.results.firstToken, dhtLookup: report.results.dhtLookup, connections: report.results.connections,
        memory: report.results.memory, gossip: report.results.gossip});
} finally {
    await Promise.all(daemons.map(({handle}) => handle.cleanup().catch(() => undefined)));
    await stopGossipNodes(nodes);
    await testnet.destroy();
}
