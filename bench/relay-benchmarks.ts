/**
 * Connections across NATs in the network-namespace lab (harness/netns-lab.ts: home routers with port-preserving
 * or random NATs, a private HyperDHT, an internet that eats low-TTL punches). Per NAT combination, a fresh lab per
 * try: a reachable relay node (no model, `--relay auto`), serving node B (a generated model that never ends by
 * itself) and requesting node A (no model). Measured: the time until A lists B with its model loaded, the route A
 * got to B (direct or relayed), and tokens/s streamed through A (served by B over that route) against the same
 * completion streamed from B's own API in the same try. Random↔random without a relay is expected never to connect;
 * there the failure codes A reports are the result. Needs root (labSupported() says why not; then it is skipped,
 * exit 0, and bench/results/relay.json is left as it was). Writes bench/results/relay.json.
 */
import {copyFile, mkdir, mkdtemp, rm} from 'node:fs/promises';
import {loadavg, tmpdir} from 'node:os';
import {join} from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import OpenAI from 'openai';
import {writeDemoModel} from '../engine/demo/demo-model.js';
import {type DaemonHandle, waitFor} from '../harness/cli-process.js';
import {startLabDaemon} from '../harness/lab-daemon.js';
import {createLab, labSupported, type Lab, type LabHost, type NatKind} from '../harness/netns-lab.js';
import {fetchStatus} from '../harness/node-status.js';
import {machine, writeReport} from './lib/report.js';
import {median, round} from './lib/statistics.js';
import {measureStreamedCompletion, type CompletionLoad, type StreamMeasurement} from './lib/stream-measurement.js';

const TRIES = 3;
const RUNS = 5;
const MAX_TOKENS = 128;
/** Connecting through a fresh DHT, punching and falling back to a relay; far above what a connection took here. */
const CONNECT_TIMEOUT_MS = 90_000;
/** Random↔random without a relay: how long A is watched not connecting to B. */
const NO_RELAY_WAIT_MS = 45_000;
/** A relay in `auto` mode offers once the DHT finds it reachable. */
const RELAY_OFFER_TIMEOUT_MS = 60_000;
const POLL_MS = 100;
const MODEL = {name: 'demo (8 layers, width 256, F16, never ends by itself)', options: {endsText: false}};
const LOAD: CompletionLoad = {model: 'demo', prompt: 'Across the routers of the internet the doges', maxTokens: MAX_TOKENS, logitBias: {}};

interface Combination {
    name: string,
    a: NatKind,
    b: NatKind,
    relay: boolean
}

const COMBINATIONS: Combination[] = [
    {name: 'none↔none', a: 'none', b: 'none', relay: true},
    {name: 'consistent↔consistent', a: 'consistent', b: 'consistent', relay: true},
    {name: 'consistent↔random', a: 'consistent', b: 'random', relay: true},
    {name: 'random↔random', a: 'random', b: 'random', relay: true},
    {name: 'random↔random, no relay', a: 'random', b: 'random', relay: false}
];

interface Try {
    connected: boolean,
    /** From spawning A's daemon until A lists B with its model loaded. */
    timeToFirstPeerMs: number | null,
    /** In A's own log: 'joining the swarm' → 'peer connected' for B (the connection alone, without the process start). */
    joinToPeerConnectedMs: number | null,
    /** A's daemon spawned → its API answered /health (B was usually listed by then already). */
    aHealthyAfterMs: number,
    route: 'direct' | 'relayed' | null,
    /** The relay's node id when relayed. */
    relay: string | null,
    /** Whether that relay is the lab's relay node (else A or B relayed themselves, or unknown). */
    relayIsRelayNode: boolean | null,
    /** A's route to B after the measurements, when it changed. */
    routeAfter?: 'direct' | 'relayed' | null,
    natA: string | null,
    natB: string | null,
    relayOfferingAfterMs: number | null,
    throughViaATokensPerSecond: number | null,
    directOnBTokensPerSecond: number | null,
    /** through A / direct on B */
    ratio: number | null,
    ttftViaAMs: number | null,
    ttftDirectOnBMs: number | null,
    completionTokens: number | null,
    /** Bytes the relay node forwarded during the try (it carries every byte of a relayed pair). */
    relayNodeBytesRelayed: number | null,
    /** HyperDHT codes A reported for B in /api/peers `unreachable` while waiting, in order first seen. */
    failureCodes: string[],
    error?: string
}

const support = labSupported();
if (!support.ok) {
    const skipped = {benchmark: 'relay', skipped: `the network-namespace lab is unsupported here: ${support.reason} (run as root with iproute2 and iptables)`};
    process.stderr.write(`relay benchmark skipped: ${skipped.skipped}; bench/results/relay.json left as it was\n`);
    process.stdout.write(JSON.stringify(skipped) + '\n');
    process.exit(0);
}

// An interrupted run still deletes its namespaces: the lab's exit hook runs on process.exit.
for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.once(signal, () => process.exit(130));

const dir = await mkdtemp(join(tmpdir(), 'strongdoge-relay-bench-'));
const modelTemplate = join(dir, 'demo.gguf');
await writeDemoModel(modelTemplate, MODEL.options);
let dataDirs = 0;

function log(line: string) {
    process.stderr.write(`[relay ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

async function dataDir(withModel: boolean) {
    const path = join(dir, `node-${++dataDirs}`);
    await mkdir(join(path, 'models'), {recursive: true});
    if (withModel)
        await copyFile(modelTemplate, join(path, 'models', 'demo.gguf'));
    return path;
}

async function startNode(lab: Lab, host: LabHost, withModel: boolean) {
    const daemon = await startLabDaemon(lab, host, ['--data-dir', await dataDir(withModel), ...(withModel ? ['--model', 'demo'] : [])]);
    return {daemon, id: (await fetchStatus(daemon, '/api/node')).id};
}

async function measure(client: OpenAI) {
    const run = await measureStreamedCompletion(client, LOAD);
    if (run.completionTokens !== MAX_TOKENS)
        throw new Error(`${run.completionTokens} completion tokens, not ${MAX_TOKENS}`);
    return run;
}

/** One warm-up each, then runs alternating between the route through A and B's own API. */
async function throughput(viaA: OpenAI, onB: OpenAI) {
    await measure(viaA);
    await measure(onB);
    const through: StreamMeasurement[] = [];
    const direct: StreamMeasurement[] = [];
    for (let i = 0; i < RUNS; i++) {
        through.push(await measure(viaA));
        direct.push(await measure(onB));
    }
    const summary = (runs: StreamMeasurement[]) => ({
        tokensPerSecond: median(runs.map((run) => run.generationTokensPerSecond)),
        ttftMs: median(runs.map((run) => run.ttftMs))
    });
    return {through: summary(through), direct: summary(direct)};
}

async function runTry(combination: Combination, index: number): Promise<Try> {
    const result: Try = {
        connected: false, timeToFirstPeerMs: null, joinToPeerConnectedMs: null, aHealthyAfterMs: 0, route: null, relay: null,
        relayIsRelayNode: null, natA: null, natB: null, relayOfferingAfterMs: null, throughViaATokensPerSecond: null,
        directOnBTokensPerSecond: null, ratio: null, ttftViaAMs: null, ttftDirectOnBMs: null, completionTokens: null,
        relayNodeBytesRelayed: null, failureCodes: []
    };
    const label = `${combination.name} #${index + 1}`;
    const hosts = [
        ...(combination.relay ? [{name: 'relay', nat: 'none' as const}] : []),
        {name: 'a', nat: combination.a},
        {name: 'b', nat: combination.b}
    ];
    const lab = await createLab(hosts);
    const daemons: DaemonHandle[] = [];
    try {
        let relayNode: {daemon: DaemonHandle, id: string} | undefined;
        if (combination.relay) {
            const startedAt = performance.now();
            relayNode = await startNode(lab, lab.hosts.relay!, false);
            daemons.push(relayNode.daemon);
            try {
                await waitFor(async () => (await fetchStatus(relayNode!.daemon, '/api/node')).relay?.offering === true, RELAY_OFFER_TIMEOUT_MS, POLL_MS);
                result.relayOfferingAfterMs = round(performance.now() - startedAt);
            } catch {
                log(`${label}: the relay node did not offer relaying within ${RELAY_OFFER_TIMEOUT_MS / 1000} s; going on`);
            }
        }
        const b = await startNode(lab, lab.hosts.b!, true);
        daemons.push(b.daemon);
        await waitFor(async () => (await fetchStatus(b.daemon, '/api/node')).models.some((model) => model.id === 'demo'), 60_000, POLL_MS);

        const spawnedAt = performance.now();
        const a = await startNode(lab, lab.hosts.a!, false);
        daemons.push(a.daemon);
        const healthAt = performance.now();
        result.aHealthyAfterMs = round(healthAt - spawnedAt);

        const codes = new Set<string>();
        const findB = async () => {
            const document = await fetchStatus(a.daemon, '/api/peers');
            for (const entry of document.unreachable)
                if (entry.peerId === b.id)
                    codes.add(entry.code);
            const peer = document.peers.find((candidate) => candidate.id === b.id);
            return peer?.capabilities.models.some((model) => model.id === 'demo' && model.loaded) ? peer : undefined;
        };
        const deadline = healthAt + (combination.relay ? CONNECT_TIMEOUT_MS : NO_RELAY_WAIT_MS);
        let peer: Awaited<ReturnType<typeof findB>>;
        while (!peer && performance.now() < deadline) {
            try {
                peer = await findB();
            } catch {
                // A's API busy or a poll cut short: poll again.
            }
            if (!peer)
                await sleep(POLL_MS);
        }
        const connectedAt = performance.now();
        result.failureCodes = [...codes];
        const [natA, natB] = await Promise.all([a, b].map(async (node) => (await fetchStatus(node.daemon, '/api/node')).nat));
        result.natA = natA ? `${natA.type}${natA.reachable ? ', reachable' : ''}` : null;
        result.natB = natB ? `${natB.type}${natB.reachable ? ', reachable' : ''}` : null;
        if (!peer) {
            log(`${label}: A did not connect to B within ${round((deadline - healthAt) / 1000)} s; codes ${result.failureCodes.join(', ') || 'none'}`);
            return result;
        }
        result.connected = true;
        result.timeToFirstPeerMs = round(connectedAt - spawnedAt);
        // pino's ISO timestamps, to the millisecond
        const loggedAt = (message: string, peerId?: string) => {
            const record = a.daemon.logs.find((candidate) => candidate.msg === message && (peerId === undefined || candidate.peer === peerId.slice(0, 16)));
            return record ? Date.parse(String(record.time)) : undefined;
        };
        const joinedAt = loggedAt('joining the swarm');
        const peerLoggedAt = loggedAt('peer connected', b.id);
        result.joinToPeerConnectedMs = joinedAt !== undefined && peerLoggedAt !== undefined && !Number.isNaN(joinedAt + peerLoggedAt) ? peerLoggedAt - joinedAt : null;
        result.route = peer.route.kind;
        result.relay = peer.route.relay;
        result.relayIsRelayNode = peer.route.kind === 'relayed' ? peer.route.relay === (relayNode?.id ?? null) : null;
        log(`${label}: listed after ${result.timeToFirstPeerMs} ms (connected ${result.joinToPeerConnectedMs} ms after joining), ${result.route}` +
            `${result.relay ? ` through ${result.relay.slice(0, 8)}${result.relayIsRelayNode ? ' (the relay node)' : ''}` : ''}; NAT A ${result.natA}, B ${result.natB}`);

        const relayedBefore = relayNode ? (await fetchStatus(relayNode.daemon, '/api/node')).relay?.bytesRelayed ?? 0 : 0;
        const client = (daemon: DaemonHandle) => new OpenAI({baseURL: daemon.baseUrl, apiKey: 'x', maxRetries: 0});
        const {through, direct} = await throughput(client(a.daemon), client(b.daemon));
        result.throughViaATokensPerSecond = round(through.tokensPerSecond);
        result.directOnBTokensPerSecond = round(direct.tokensPerSecond);
        result.ratio = round(through.tokensPerSecond / direct.tokensPerSecond, 3);
        result.ttftViaAMs = round(through.ttftMs);
        result.ttftDirectOnBMs = round(direct.ttftMs);
        result.completionTokens = MAX_TOKENS;
        if (relayNode)
            result.relayNodeBytesRelayed = ((await fetchStatus(relayNode.daemon, '/api/node')).relay?.bytesRelayed ?? 0) - relayedBefore;
        const after = (await fetchStatus(a.daemon, '/api/peers')).peers.find((candidate) => candidate.id === b.id)?.route.kind ?? null;
        if (after !== result.route)
            result.routeAfter = after;
        log(`${label}: ${result.throughViaATokensPerSecond} tok/s through A, ${result.directOnBTokensPerSecond} on B (ratio ${result.ratio}); ` +
            `TTFT ${result.ttftViaAMs} / ${result.ttftDirectOnBMs} ms${result.relayNodeBytesRelayed ? `; the relay node forwarded ${result.relayNodeBytesRelayed} B` : ''}`);
        return result;
    } catch (error) {
        result.error = (error as Error).message.slice(0, 500);
        log(`${label}: failed: ${result.error}`);
        return result;
    } finally {
        await Promise.all(daemons.map((daemon) => daemon.stop('SIGKILL').catch(() => null)));
        await lab.close();
    }
}

function summarize(tries: Try[]) {
    const connected = tries.filter((entry) => entry.connected);
    const measured = connected.filter((entry) => entry.ratio !== null);
    const medianOf = (values: (number | null)[]) => {
        const present = values.filter((value): value is number => value !== null);
        return present.length ? round(median(present), 3) : null;
    };
    return {
        connected: `${connected.length}/${tries.length}`,
        routes: {direct: connected.filter((entry) => entry.route === 'direct').length, relayed: connected.filter((entry) => entry.route === 'relayed').length},
        medianTimeToFirstPeerMs: medianOf(connected.map((entry) => entry.timeToFirstPeerMs)),
        medianJoinToPeerConnectedMs: medianOf(connected.map((entry) => entry.joinToPeerConnectedMs)),
        medianThroughViaATokensPerSecond: medianOf(measured.map((entry) => entry.throughViaATokensPerSecond)),
        medianDirectOnBTokensPerSecond: medianOf(measured.map((entry) => entry.directOnBTokensPerSecond)),
        medianRatio: medianOf(measured.map((entry) => entry.ratio)),
        medianAddedTtftMs: medianOf(measured.map((entry) => entry.ttftViaAMs! - entry.ttftDirectOnBMs!)),
        failureCodes: [...new Set(tries.flatMap((entry) => entry.failureCodes))],
        errors: tries.filter((entry) => entry.error).length
    };
}

const startedAt = performance.now();
// Other work on the machine moves tokens/s: the load averages (1, 5, 15 min) go into the results.
const loadAtStart = loadavg().map((load) => round(load));
try {
    const results = [];
    for (const combination of COMBINATIONS) {
        const tries: Try[] = [];
        for (let index = 0; index < TRIES; index++) {
            log(`${combination.name} #${index + 1}: A ${combination.a}, B ${combination.b}, ${combination.relay ? 'relay node (none)' : 'no relay node'}`);
            tries.push(await runTry(combination, index));
        }
        results.push({combination: combination.name, natA: combination.a, natB: combination.b, relayNode: combination.relay, summary: summarize(tries), tries});
    }
    const report = {
        benchmark: 'connections across NATs in a network-namespace lab: time to the first peer, the route, tokens/s through it',
        date: new Date().toISOString(),
        machine: machine({loadAverageAtStart: loadAtStart, loadAverageAtEnd: loadavg().map((load) => round(load))}),
        settings: {
            tries: TRIES, freshLabPerTry: true, model: MODEL.name, maxTokens: MAX_TOKENS, runs: RUNS, warmUps: 1, temperature: 0, threads: 1,
            connectTimeoutMs: CONNECT_TIMEOUT_MS, noRelayWaitMs: NO_RELAY_WAIT_MS, relayMode: 'auto (default) on every node',
            timeToFirstPeer: 'timeToFirstPeerMs: from spawning A\'s daemon (B running with its model loaded, the relay node offering) until A\'s ' +
                '/api/peers lists B with its model loaded, polled every 100 ms (A\'s API answers /health after aHealthyAfterMs, by when B was usually listed ' +
                'already); joinToPeerConnectedMs: from A\'s log line \'joining the swarm\' to its \'peer connected\' for B (pino timestamps)',
            throughput: 'a client streams the same completion through A (served by B over the route) and from B\'s own API, alternating; ' +
                'medians of the runs after one warm-up each; both APIs are reached through the lab\'s Unix-socket bridge'
        },
        durationS: round((performance.now() - startedAt) / 1000, 1),
        results
    };
    await writeReport('relay', report, results.map(({combination, summary}) => ({combination, ...summary})));
    log(`done in ${report.durationS} s`);
} finally {
    await rm(dir, {recursive: true, force: true});
}
// Bridges and HTTP keep-alive sockets of the killed daemons must not keep the process up.
process.exit(0);
