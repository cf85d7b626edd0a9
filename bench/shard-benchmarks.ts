
import {mkdir, mkdtemp, rm} from 'node:fs/promises';
import {connect} from 'node:net';
import {tmpdir} from 'node:os';
import {dirname, join} from 'node:path';
import OpenAI from 'openai';
import {writeDemoModel, type DemoModelOptions} from '../engine/demo/demo-model.js';
import type {EngineSupervisor} from '../engine/engine-supervisor.js';
import {byteTokenBan} from '../harness/byte-token-ban.js';
import {modelLayoutOf} from '../engine/model-files.js';
import {prepareRpcServerDir, type RpcServerFiles} from '../engine/rpc/rpc-server-dir.js';
import {RpcServerHost} from '../engine/rpc/rpc-server-host.js';
import {probeSandbox} from '../engine/rpc/rpc-sandbox.js';
import {AllocationBudget, RpcGuard} from '../inference/sharded/tunnel/rpc-guard.js';
import {RpcSession} from '../inference/sharded/tunnel/rpc-stream.js';
import {captureStageSession, type RecordedRequest} from '../harness/rpc-capture.js';
import {guardedConnection} from '../harness/rpc-lab.js';
import type {GenerationRequest} from '../core/inference-types.js';
import {startDaemon, waitFor, type DaemonHandle} from '../harness/cli-process.js';
import {fetchStatus} from '../harness/node-status.js';
import {TEST_RPC_DIR, testRpcBinaries} from '../harness/rpc-binaries.js';
import {createLab, labSupported, netemSupported, type Lab, type LabHost} from '../harness/netns-lab.js';
import {nodeIdOf, peersOf, startSwarmDaemon, startTestnet} from '../harness/swarm-fixture.js';
import {DelayedStream, ownDevices, type RpcAddress, startDirectPipeline, startRpcServers} from './lib/direct-pipeline.js';
import {machine, writeReport} from './lib/report.js';
import {median, round} from './lib/statistics.js';
import {StreamTimer, summarizeRuns, type StreamMeasurement} from './lib/stream-measurement.js';

const MiB = 2 ** 20;
const THREADS = 1;
const CONTEXT = 1024;
const MAX_TOKENS = 256;
const REPEATS = 5;
const PROMPT = 'The swarm of doges gathered to share their GPUs and';
const MODEL_NAME = 'medium (12 layers, width 768, ~86M params, F16)';
const MODEL: DemoModelOptions = {layers: 12, width: 768, headCount: 12, feedForwardLength: 2048, endsText: false};
/**
 * Room for four layers (13.5 MiB of weights and 3 MiB of KV cache at 1,024 tokens each) and a stage's compute buffer
 * (23 MiB as the planner counts it) on every node, the coordinator's input and output layers included, and not
 * five: the plan needs all three stages.
 */
const STAGE_MEMORY = 100 * MiB;
/** Replays of a recorded stage session through the host's codec, each way. */
const REPLAYS = 5;
/** Rpc servers started for the sandbox's start cost, each way. */
const SANDBOX_STARTS = 10;
/** Tokens streamed before the host is killed, one failover trial each: different points of the answer. */
const KILL_AT = [16, 64, 112, 160, 208];
/** A resumed stream's first token follows the largest silence after the kill; tokens come every few ms otherwise. */
const RTT_MS = 10;
const NETNS_REPEATS = 3;

interface Chunk {
    text: string,
    at: number
}

interface Run {
    measurement: StreamMeasurement,
    text: string,
    chunks: Chunk[]
}


const logitBias = byteTokenBan();

/** One streamed completion through a node's API, every chunk timed (`onChunk` may act on the stream as it goes). */
async function stream(client: OpenAI, onChunk?: (chunks: Chunk[]) => void): Promise<Run> {
    const timer = new StreamTimer();
    const chunks: Chunk[] = [];
    let completionTokens = 0;
    const response = await client.completions.create({
        model: 'bench', prompt: PROMPT, max_tokens: MAX_TOKENS, temperature: 0, logit_bias: logitBias, stream: true,
        stream_options: {include_usage: true}
    });
    for await (const chunk of response) {
        const text = chunk.choices[0]?.text;
        if (text) {
            timer.textArrived();
            chunks.push({text, at: performance.now()});
            onChunk?.(chunks);
        }
        completionTokens = chunk.usage?.completion_tokens ?? completionTokens;
    }
    return {measurement: timer.finish(completionTokens), text: chunks.map((chunk) => chunk.text).join(''), chunks};
}

/** The same generation through an engine child in this process (the direct-TCP pipeline). */
async function generate(engine: EngineSupervisor): Promise<Run> {
    const request: GenerationRequest = {
        kind: 'completion', model: 'bench', prompt: PROMPT,
        sampling: {temperature: 0, stop: [], maxTokens: MAX_TOKENS, logitBias, responseFormat: {type: 'text'}}
    };
    const timer = new StreamTimer();
    const chunks: Chunk[] = [];
    const result = await engine.generate(request, {
        onText: (text) => {
            if (text) {
                timer.textArrived();
                chunks.push({text, at: performance.now()});
            }
        }
    });
    return {measurement: timer.finish(result.usage.completionTokens), text: chunks.map((chunk) => chunk.text).join(''), chunks};
}


async function repeat(count: number, measure: () => Promise<Run>) {
    const warmUp = await measure();
    const runs: Run[] = [];
    for (let i = 0; i < count; i++)
        runs.push(await measure());
    return {runs, warmUp};
}

/** The anchor (bench/lib/direct-pipeline.ts) with this bench's engine; `guardTiming`: the remote stages behind the host's codec and guard, timed. */
function startBenchPipeline(modelPath: string, files: RpcServerFiles, coordinatorLayers: number, stageLayers: number[],
    stageServers: RpcAddress[], own: {first: RpcAddress, output: RpcAddress}, delayMs?: () => number, guardTiming?: {ms: number}) {
    return startDirectPipeline({
        model: {id: 'bench', path: modelPath}, files, coordinatorLayers, stageLayers, stageServers, own,
        engine: {threads: THREADS, parallelSequences: 1, contextSize: CONTEXT, gpu: false},
        ...(guardTiming !== undefined && {connectStage: (server: RpcAddress) => guardedConnection(server.port, {timing: guardTiming})}),
        ...(delayMs !== undefined && {delayMs})
    });
}

/** Milliseconds the host's codec takes over a recorded session's requests and replies, with the guard or not. */
function replayThroughCodec(session: RecordedRequest[], guarded: boolean) {
    const guard = guarded ? new RpcGuard({budget: new AllocationBudget(2n ** 40n)}) : undefined;
    const codec = new RpcSession(guard === undefined ? {} : {guard});
    let ms = 0;
    for (const request of session) {
        const header = Buffer.alloc(9);
        header[0] = request.command;
        header.writeBigUInt64LE(BigInt(request.payload.length), 1);
        const frame = Buffer.concat([header, request.payload]);
        const started = performance.now();
        codec.fromClient(frame);
        ms += performance.now() - started;
        if (request.reply !== undefined) {
            const replyHeader = Buffer.alloc(8);
            replyHeader.writeBigUInt64LE(BigInt(request.reply.length));
            codec.fromServer(Buffer.concat([replyHeader, request.reply]));
        }
    }
    return ms;
}

function cluster(daemon: DaemonHandle) {
    return fetchStatus(daemon, '/api/cluster');
}

async function pipeline(daemon: DaemonHandle) {
    const status = await cluster(daemon);
    const found = status.pipelines[0];
    if (found === undefined)
        throw new Error(`no pipeline: ${JSON.stringify(status)}`);
    return found;
}

/** Milliseconds from `killedAt` to the first token after the resume: the token that follows the longest silence after the kill. */
function resumeAfter(chunks: Chunk[], killedIndex: number, killedAt: number) {
    let resume = -1;
    let longestGap = -1;
    for (let index = killedIndex; index < chunks.length; index++) {
        const gap = chunks[index]!.at - Math.max(killedAt, chunks[index - 1]?.at ?? killedAt);
        if (gap > longestGap) {
            longestGap = gap;
            resume = index;
        }
    }
    return {resumeIndex: resume, ms: resume < 0 ? null : chunks[resume]!.at - killedAt};
}

/** Where `text` parts from `reference` (streamed as `referenceChunks`, one token each), in tokens after `seamTokens`. */
function partingAfterSeam(text: string, reference: string, referenceChunks: Chunk[], seamTokens: number) {
    if (text === reference)
        return null;
    let differs = 0;
    while (differs < text.length && differs < reference.length && text[differs] === reference[differs])
        differs++;
    let offset = 0;
    let token = 0;
    for (; token < referenceChunks.length; token++) {
        offset += referenceChunks[token]!.text.length;
        if (offset > differs)
            break;
    }
    return token - seamTokens;
}

// --- network namespaces ---------------------------------------------------------------------------------------

/** The lab's hosts of the remote stages' rpc servers: direct links from this process, no DHT (harness/netns-lab.ts). */
const STAGE_HOSTS = ['stage1', 'stage2'];
const STAGE_PORT = 50_101;

/** An rpc server inside a lab host, as the node runs it (setpriv ties it to this process), on the host's direct address. */
async function startNamespacedServer(files: RpcServerFiles, host: LabHost) {
    const env = {...process.env};
    delete env.GGML_BACKEND_PATH;
    const address = {host: host.directAddress!, port: STAGE_PORT};
    host.spawn('setpriv', ['--pdeathsig', 'KILL', '--', files.serverPath, '-H', address.host, '-p', String(address.port), '-t', String(THREADS)],
        {cwd: dirname(files.serverPath), env, stdio: 'ignore'});
    await waitFor(() => new Promise<boolean>((resolve) => {
        const socket = connect(address);
        socket.once('connect', () => {
            socket.destroy();
            resolve(true);
        });
        socket.once('error', () => resolve(false));
    }), 30_000, 100);
    return address;
}

async function roundTripsWithDelay(modelPath: string, files: RpcServerFiles, coordinatorLayers: number, stageLayers: number[]) {
    const support = labSupported();
    if (!support.ok)
        return {skipped: `skipped: ${support.reason}`};
    let lab: Lab | undefined;
    let output: RpcServerHost[] = [];
    let direct: Awaited<ReturnType<typeof startDirectPipeline>> | undefined;
    try {
        lab = await createLab(STAGE_HOSTS.map((name) => ({name, nat: 'none', direct: true})), {dhtNodes: 0});
        const labHosts = lab.hosts;
        const hosts = STAGE_HOSTS.map((name) => labHosts[name]!);
        const stageServers = [];
        for (const host of hosts)
            stageServers.push(await startNamespacedServer(files, host));
        output = await startRpcServers(files, 2, THREADS);
        const netem = netemSupported();
        let userDelayMs = 0;
        direct = await startBenchPipeline(modelPath, files, coordinatorLayers, stageLayers, stageServers, ownDevices(output),
            netem ? undefined : () => userDelayMs);
        const started = direct;
        process.stderr.write(`[netns] no added delay (${netem ? 'netem' : 'no netem in this kernel: delay in user space'})\n`);
        const without = summarizeRuns((await repeat(NETNS_REPEATS, () => generate(started.engine))).runs);
        if (netem)
            for (const host of hosts)
                await host.setDelay(RTT_MS / 2);
        else
            userDelayMs = RTT_MS / 2;
        DelayedStream.applied.length = 0;
        process.stderr.write(`[netns] ${RTT_MS} ms RTT\n`);
        const withDelay = summarizeRuns((await repeat(NETNS_REPEATS, () => generate(started.engine))).runs);
        const remoteStages = stageLayers.length;
        // User-space timers fire late: divide by the round trip actually applied.
        const rttMs = netem ? RTT_MS : 2 * DelayedStream.applied.reduce((sum, ms) => sum + ms, 0) / Math.max(1, DelayedStream.applied.length);
        return {
            setup: netem
                ? `direct-TCP pipeline (no Hyperswarm): each remote stage's rpc server in its own network namespace behind a veth link with netem ${RTT_MS / 2} ms each way; this node's own devices on loopback`
                : `direct-TCP pipeline (no Hyperswarm): each remote stage's rpc server in its own network namespace behind a veth link; this kernel has no netem (tc: "Specified qdisc kind is unknown"), so ${RTT_MS / 2} ms each way is added in user space on each remote stage's tunnel stream in the bench process (order kept); this node's own devices on loopback, undelayed`,
            delay: netem ? 'netem' : 'user space', rttMs: round(rttMs, 3), nominalRttMs: RTT_MS, remoteStages, placementMatches: direct.placementMatches,
            withoutDelay: without, withDelay,
            roundTripsPerTokenPerRemoteStage: round((withDelay.msPerToken - without.msPerToken) / rttMs / remoteStages, 3),
            roundTripsPerTokenPerRemoteStageAtNominalRtt: round((withDelay.msPerToken - without.msPerToken) / RTT_MS / remoteStages, 3),
            addedTtftMs: round(withDelay.ttftMs - without.ttftMs),
            target: '<= 1.2'
        };
    } finally {
        await direct?.stop().catch(() => undefined);
        await Promise.all(output.map((server) => server.stop()));
        await lab?.close();
    }
}

// --- the benchmark --------------------------------------------------------------------------------------------

// The lab deletes its namespaces on exit, which these signals would skip.
for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.once(signal, () => process.exit(130));

const dir = await mkdtemp(join(tmpdir(), 'strongdoge-shard-bench-'));
const {testnet, bootstrap} = await startTestnet();
const daemons: DaemonHandle[] = [];
const hostDirs: string[] = [];
try {
    process.stderr.write('rpc binaries (built once, about a minute the first time)\n');
    const files = await prepareRpcServerDir(await testRpcBinaries((line) => process.stderr.write(`  ${line}\n`)));
    const coordinatorDir = join(dir, 'coordinator');
    await mkdir(join(coordinatorDir, 'models'), {recursive: true});
    const modelPath = join(coordinatorDir, 'models', 'bench.gguf');
    await writeDemoModel(modelPath, MODEL);
    const layout = await modelLayoutOf(modelPath);

    // (a) the whole model on one node
    process.stderr.write(`[${MODEL_NAME}] local\n`);
    const single = await startDaemon(['--model', 'bench', '--data-dir', coordinatorDir, '--threads', String(THREADS), '--parallel', '1', '--context-size', String(CONTEXT)]);
    const singleClient = new OpenAI({baseURL: single.baseUrl, apiKey: 'x', maxRetries: 0});
    const localRuns = await repeat(REPEATS, () => stream(singleClient));
    await single.stop();
    const reference = localRuns.runs[0]!;

    // (b) split over Hyperswarm: coordinator and hosts as separate nodes; a third host stands by for failovers
    const swarmArgs = ['--network', 'shard-bench', '--rpc-dir', TEST_RPC_DIR, '--context-size', String(CONTEXT), '--parallel', '1'];
    async function startHost() {
        const hostDir = join(dir, `host-${hostDirs.length}`);
        hostDirs.push(hostDir);
        await mkdir(hostDir, {recursive: true});
        const daemon = await startSwarmDaemon(bootstrap, hostDir, [...swarmArgs, '--max-shard-memory', String(STAGE_MEMORY)]);
        daemons.push(daemon);
        return {daemon, id: await nodeIdOf(daemon)};
    }
    const hosts = await Promise.all([0, 1, 2].map(() => startHost()));
    // Its /health answers 200 once the pipeline serves (formed and loaded), as the wait below does.
    const coordinator = await startSwarmDaemon(bootstrap, coordinatorDir, [...swarmArgs, '--model', 'bench', '--shard', 'always', '--max-stages', '3',
        '--memory-limit', String(STAGE_MEMORY), '--serve-peers', 'off'], {readyTimeoutMs: 180_000});
    daemons.push(coordinator);
    process.stderr.write(`[${MODEL_NAME}] forming the pipeline\n`);
    await waitFor(async () => (await pipeline(coordinator)).state === 'ready', 180_000, 200).catch(async (error: Error) => {
        throw new Error(`${error.message}: ${JSON.stringify(await cluster(coordinator))}`);
    });
    const formed = await pipeline(coordinator);
    const remoteStages = formed.stages.filter((stage) => !stage.self);
    const coordinatorLayers = formed.stages.filter((stage) => stage.self).reduce((sum, stage) => sum + (stage.layers === null ? 0 : stage.layers[1] - stage.layers[0] + 1), 0);
    const stageLayers = remoteStages.map((stage) => stage.layers![1] - stage.layers![0] + 1);

    // (c) the anchor: the same split over direct TCP to the same kind of rpc servers. Its runs alternate with (b)'s,
    // so that whatever else the machine does weighs on both alike.
    process.stderr.write(`[${MODEL_NAME}] direct TCP (${coordinatorLayers} + ${stageLayers.join(' + ')} layers) and over Hyperswarm, alternating\n`);
    const stageServers = await startRpcServers(files, stageLayers.length, THREADS, join(dir, 'direct-cache'));
    const ownServers = await startRpcServers(files, 2, THREADS);
    const direct = await startBenchPipeline(modelPath, files, coordinatorLayers, stageLayers,
        stageServers.map((server) => ({host: '127.0.0.1', port: server.port!})), ownDevices(ownServers));
    // (d) the same again with each remote stage behind the host's codec and guard (docs/peer-protocol.md, "Graph
    // checks"), timed: what checking every request and graph costs per token.
    const guardedStageServers = await startRpcServers(files, stageLayers.length, THREADS, join(dir, 'guarded-cache'));
    const guardedOwnServers = await startRpcServers(files, 2, THREADS);
    const guardTiming = {ms: 0};
    const guarded = await startBenchPipeline(modelPath, files, coordinatorLayers, stageLayers,
        guardedStageServers.map((server) => ({host: '127.0.0.1', port: server.port!})), ownDevices(guardedOwnServers), undefined, guardTiming);
    const coordinatorClient = new OpenAI({baseURL: coordinator.baseUrl, apiKey: 'x', maxRetries: 0});
    await generate(direct.engine); // warm-up
    await generate(guarded.engine);
    const swarmWarmUp = await stream(coordinatorClient);
    const bytesBefore = await pipeline(coordinator);
    const directRuns: Run[] = [];
    const guardedRuns: Run[] = [];
    const swarmRuns: Run[] = [];
    guardTiming.ms = 0;
    for (let i = 0; i < REPEATS; i++) {
        directRuns.push(await generate(direct.engine));
        guardedRuns.push(await generate(guarded.engine));
        swarmRuns.push(await stream(coordinatorClient));
    }
    const guardMs = guardTiming.ms;
    const directPlacement = direct.placementMatches;
    await direct.stop();
    await guarded.stop();
    await Promise.all([...stageServers, ...ownServers, ...guardedStageServers, ...guardedOwnServers].map((server) => server.stop()));
    const bytesAfter = await pipeline(coordinator);
    const generated = swarmRuns.reduce((sum, run) => sum + run.measurement.completionTokens, 0);
    const bytesPerToken = bytesAfter.stages.filter((stage) => !stage.self).map((stage, index) => {
        const before = bytesBefore.stages.find((other) => other.peer === stage.peer)!;
        return {
            stage: index + 1, layers: stage.layers,
            upBytesPerToken: round((stage.bytesSent - before.bytesSent) / generated, 1),
            downBytesPerToken: round((stage.bytesReceived - before.bytesReceived) / generated, 1),
            hopMs: stage.hopMs
        };
    });
    const swarmReference = swarmRuns[0]!;

    // failover: SIGKILL a stage's host at different points of an answer; the standby host takes its place
    const trials = [];
    for (const [trial, killAt] of KILL_AT.entries()) {
        const before = await pipeline(coordinator);
        const stageIndex = before.stages.findIndex((stage) => !stage.self) + (trial % 2);
        const victimId = before.stages[stageIndex]!.peer;
        const victim = hosts.find((host) => host.id === victimId)!;
        process.stderr.write(`[failover ${trial + 1}/${KILL_AT.length}] killing stage ${stageIndex} at token ${killAt}\n`);
        let killedAt = 0;
        let killedWallMs = 0;
        const run = await stream(coordinatorClient, (chunks) => {
            if (chunks.length === killAt && killedAt === 0) {
                killedAt = performance.now();
                killedWallMs = Date.now();
                victim.daemon.process.kill('SIGKILL');
            }
        });
        const {resumeIndex, ms} = resumeAfter(run.chunks, killAt, killedAt);
        await waitFor(async () => (await pipeline(coordinator)).state === 'ready', 60_000, 200);
        const after = await pipeline(coordinator);
        const failure = after.failures.at(-1);
        const seamChars = run.chunks.slice(0, resumeIndex).reduce((sum, chunk) => sum + chunk.text.length, 0);
        trials.push({
            killedAtToken: killAt, stage: stageIndex, msToNextToken: ms === null ? null : round(ms),
            tokensStreamedAfterKillBeforeResume: resumeIndex - killAt,
            detectedAfterMs: failure === undefined ? null : Date.parse(failure.at) - killedWallMs,
            reason: failure?.reason ?? null, failovers: after.failovers - before.failovers,
            completionTokens: run.measurement.completionTokens,
            identical: run.text === swarmReference.text,
            seamAtChar: seamChars,
            partsTokensAfterSeam: partingAfterSeam(run.text, swarmReference.text, swarmReference.chunks, resumeIndex)
        });
        hosts.splice(hosts.indexOf(victim), 1);
        // A new standby for the next trial
        const standby = await startHost();
        hosts.push(standby);
        await waitFor(async () => (await peersOf(coordinator)).peers.some((peer) => peer.id === standby.id && peer.capabilities.shardHost != null), 60_000, 200);
    }
    const failoverMs = trials.flatMap((trial) => trial.msToNextToken === null ? [] : [trial.msToNextToken]);

    for (const daemon of daemons.splice(0))
        await daemon.stop('SIGKILL');

    // validation cost, precisely: the first remote stage's session recorded as llama.cpp's client ran it, replayed
    // through the host's codec with and without the guard on an otherwise idle process, alternately
    process.stderr.write(`[guard] replaying a recorded stage session through the host's codec, with and without the guard\n`);
    const recorded = await captureStageSession({model: MODEL, coordinatorLayers, stageLayers: stageLayers[0]!, parallel: 1, contextSize: CONTEXT,
        tokens: MAX_TOKENS, flashAttention: 'auto'});
    const replayMs = {guarded: [] as number[], plain: [] as number[]};
    for (let round = 0; round < REPLAYS + 1; round++)
        for (const way of ['plain', 'guarded'] as const) {
            const ms = replayThroughCodec(recorded, way === 'guarded');
            if (round > 0) // the first round warms the JIT
                replayMs[way].push(ms);
        }
    const replayTokens = MAX_TOKENS;

    // the sandbox's start cost: a host's rpc server started in bubblewrap and not, alternately
    process.stderr.write(`[sandbox] ${SANDBOX_STARTS} starts each way\n`);
    const sandbox = await probeSandbox({launcherDir: TEST_RPC_DIR});
    if (!sandbox.available)
        throw new Error(`the sandbox does not work here: ${sandbox.reason}`);
    const startMs = {sandboxed: [] as number[], plain: [] as number[]};
    for (let i = 0; i < SANDBOX_STARTS; i++)
        for (const way of ['sandboxed', 'plain'] as const) {
            const server = new RpcServerHost({binaries: files, threads: THREADS, cacheDir: join(dir, 'sandbox-cache'), ...(way === 'sandboxed' && {sandbox})});
            const started = performance.now();
            await server.start();
            startMs[way].push(performance.now() - started);
            await server.stop();
        }

    // round trips per token per remote stage, with 10 ms RTT
    process.stderr.write(`[${MODEL_NAME}] round trips with ${RTT_MS} ms RTT\n`);
    const roundTrips = await roundTripsWithDelay(modelPath, files, coordinatorLayers, stageLayers).catch((error: Error) => ({skipped: `failed: ${error.message}`}));

    const local = summarizeRuns(localRuns.runs);
    const overSwarm = summarizeRuns(swarmRuns);
    const overDirect = summarizeRuns(directRuns);
    const guardedTokens = guardedRuns.reduce((sum, run) => sum + run.measurement.completionTokens, 0);
    const identical = (runs: Run[]) => runs.every((run) => run.text === reference.text);
    const report = {
        benchmark: 'layer sharding: local vs 3-stage split over Hyperswarm (hosts sandboxed and guarded) vs the same split over direct TCP, with and without the host\'s guard; round trips at 10 ms RTT; failover; the sandbox\'s start cost',
        date: new Date().toISOString(),
        machine: machine(),
        model: {
            name: MODEL_NAME,
            why: 'the ~86M-parameter bench model of inference-benchmarks: a 3-stage split of it is practical here (4 layers a stage, 56.6 MB of weights to each host, loaded in seconds over loopback)',
            layerBytes: layout.layerBytes[0], inputBytes: layout.inputBytes, outputBytes: layout.outputBytes
        },
        settings: {maxTokens: MAX_TOKENS, repeats: REPEATS, temperature: 0, byteTokensBanned: true, threads: THREADS, parallel: 1, contextSize: CONTEXT,
            stageMemoryBytes: STAGE_MEMORY, split: {coordinatorLayers, stageLayers, coordinatorDevices: 'its layers on its own first rpc server, the output layer on its own last one'}},
        targets: {hyperswarmOverDirectTokensPerSecond: '>= 0.9', roundTripsPerTokenPerRemoteStage: '<= 1.2', failoverMsToNextToken: '< 10000'},
        results: {
            local: {...local, how: 'one node, the whole model (strongdoge daemon, offline), through its API'},
            hyperswarm: {...overSwarm, how: 'coordinator + 2 hosts, separate daemons on a loopback HyperDHT testnet, through the coordinator\'s API',
                plan: formed.plan, placementMatches: formed.placementMatches},
            direct: {...overDirect, how: 'the anchor: an EngineSupervisor engine child in the bench process, TunnelEndpoints with the RPC codec (same memory rewrite, same split) joined by TCP to 3 local ggml-rpc-server processes (RpcServerHost); no HTTP in front',
                placementMatches: directPlacement},
            guard: {
                validation: {
                    msPerTokenPerStage: round((median(replayMs.guarded) - median(replayMs.plain)) / replayTokens, 4),
                    codecMsPerTokenPerStage: round(median(replayMs.plain) / replayTokens, 4),
                    fractionOfShardedTokenTime: round(stageLayers.length * (median(replayMs.guarded) - median(replayMs.plain)) / replayTokens / overSwarm.msPerToken, 5),
                    target: '< 0.01 of the sharded token time',
                    how: `the first remote stage's session as llama.cpp's client ran it (load, prompt and ${replayTokens} tokens, recorded both ways) replayed ${REPLAYS} times through the host's RPC codec with the guard (buffers, budget, every tensor and graph checked) and without, alternately, after a round that warms the JIT; the difference over the tokens, times the ${stageLayers.length} remote stages, against the Hyperswarm run's time per token`,
                    replayMs: {guarded: replayMs.guarded.map((ms) => round(ms, 2)), plain: replayMs.plain.map((ms) => round(ms, 2))}
                },
                pipeline: {
                    ...summarizeRuns(guardedRuns),
                    overDirectTokensPerSecond: round(summarizeRuns(guardedRuns).generationTokensPerSecond / overDirect.generationTokensPerSecond, 3),
                    codecAndGuardWallMsPerToken: round(guardMs / guardedTokens, 4),
                    how: 'the direct pipeline again, each remote stage\'s connection passing the host\'s codec and guard before its server, as a host serves a peer, alternating with the direct and Hyperswarm runs; codecAndGuardWallMsPerToken is the wall time spent in the host\'s codec and guard on the coordinator\'s bytes over the tokens of the measured runs, both stages, on a machine whose 2 cores the engine and servers share at the same time'
                }
            },
            sandbox: {
                startMs: {sandboxed: round(median(startMs.sandboxed)), plain: round(median(startMs.plain)), sandboxedEach: startMs.sandboxed.map((ms) => round(ms)), plainEach: startMs.plain.map((ms) => round(ms))},
                how: `${SANDBOX_STARTS} rpc servers started (start() until they accept a connection) in bubblewrap (the launcher's ready line) and not (polling /proc and the port every 50 ms), alternately; the Hyperswarm run's hosts ran every session in the sandbox`
            },
            ratios: {
                hyperswarmOverDirectTokensPerSecond: round(overSwarm.generationTokensPerSecond / overDirect.generationTokensPerSecond, 3),
                hyperswarmOverLocalTokensPerSecond: round(overSwarm.generationTokensPerSecond / local.generationTokensPerSecond, 3),
                directOverLocalTokensPerSecond: round(overDirect.generationTokensPerSecond / local.generationTokensPerSecond, 3),
                hyperswarmMinusDirectTtftMs: round(overSwarm.ttftMs - overDirect.ttftMs),
                hyperswarmMinusLocalTtftMs: round(overSwarm.ttftMs - local.ttftMs)
            },
            sameText: {directAsLocal: identical(directRuns), guardedAsLocal: identical(guardedRuns), hyperswarmAsLocal: identical(swarmRuns) && swarmWarmUp.text === reference.text},
            bytesPerToken: {perRemoteStage: bytesPerToken, note: '/api/cluster bytesSent (up, to the stage) and bytesReceived deltas over the measured runs, over the tokens generated (prompt processing included)'},
            roundTrips,
            failover: {
                trials: trials.length,
                medianMsToNextToken: failoverMs.length > 0 ? round(median(failoverMs)) : null,
                maxMsToNextToken: failoverMs.length > 0 ? round(Math.max(...failoverMs)) : null,
                fractionIdentical: round(trials.filter((trial) => trial.identical).length / trials.length, 3),
                partsTokensAfterSeam: trials.flatMap((trial) => trial.partsTokensAfterSeam === null ? [] : [trial.partsTokensAfterSeam]),
                how: 'a stage\'s host SIGKILLed after N streamed tokens; time to the first token after the resume (the one after the longest silence); a standby host takes the stage and receives its weights again (no tensor of this model exceeds the rpc tensor cache\'s 10 MiB threshold, so the cache is never used: warm means warm processes and page cache); each full text compared with an uninterrupted run over the same pipeline',
                trialsDetail: trials
            }
        }
    };
    await writeReport('shard', report, {ratios: report.results.ratios, guard: {...report.results.guard.validation, replayMs: undefined},
        sandbox: report.results.sandbox.startMs, roundTrips, failover: {...report.results.failover, trialsDetail: undefined}, bytesPerToken});
} finally {
    for (const daemon of daemons)
        await daemon.stop('SIGKILL').catch(() => undefined);
    await testnet.destroy();
    await rm(dir, {recursive: true, force: true});
}
