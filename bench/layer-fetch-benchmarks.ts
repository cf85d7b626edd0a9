/**
 * Hosts that fetch their layers from the model's source (docs/architecture.md, "Hosts that fetch their layers"),
 * measured with the real parts over the direct pipeline (bench/lib/direct-pipeline.ts): the coordinator's uplink
 * limited to 20 Mbit/s and each host's link to the source to 100 Mbit/s, in user space (this kernel has no netem).
 * (1) Time to form a 3-stage pipeline when every weight crosses the uplink (today's path), against hosts that
 * download the big tensors of their layers. (2) Time from a stage's death to the next token, with a ready spare, with
 * a replacement that downloads its layers, and on today's path.
 */
import {createHash} from 'node:crypto';
import {mkdir, mkdtemp, readFile, rm} from 'node:fs/promises';
import {tmpdir, totalmem} from 'node:os';
import {join} from 'node:path';
import type {GenerationRequest} from '../core/inference-types.js';
import type {TensorDigest} from '../core/tensor-digest.js';
import {writeDemoModel, type DemoModelOptions} from '../engine/demo/demo-model.js';
import type {EngineSupervisor} from '../engine/engine-supervisor.js';
import {modelLayoutOf} from '../engine/model-files.js';
import {prepareRpcServerDir, type RpcServerFiles} from '../engine/rpc/rpc-server-dir.js';
import {HASH_THRESHOLD_BYTES} from '../engine/rpc/tensor-cache-seed.js';
import {digestsOfLayers, tensorDigests} from '../engine/tensor-digests.js';
import {SocketStream} from '../inference/sharded/tunnel/socket-pipe.js';
import {byteTokenBan} from '../harness/byte-token-ban.js';
import {waitFor} from '../harness/cli-process.js';
import {serveFile} from '../harness/file-server.js';
import {testRpcBinaries} from '../harness/rpc-binaries.js';
import {DelayedStream, startDirectPipeline, startRpcServers} from './lib/direct-pipeline.js';
import {RateLimitedLink, ThrottledStream} from './lib/rate-limited-link.js';
import {machine, writeReport} from './lib/report.js';
import {StageHost, type StageSession} from './lib/stage-host.js';
import {round} from './lib/statistics.js';

const MB = 1e6;
/** Bytes per second of one Mbit/s. */
const MBIT = 1e6 / 8;
const UPLINK_MBIT = 20;
const SOURCE_MBIT = 100;
/** Round trip added on each remote stage's link (half each way), as a link between two homes has. */
const RTT_MS = 20;
const THREADS = 1;
const CONTEXT = 512;
const TOKENS = 64;
/** Tokens streamed before a stage's rpc server is SIGKILLed. */
const KILL_AT = 16;
const PROMPT = 'The swarm of doges gathered to share their GPUs and';
/**
 * Every weight matrix but attn_k and attn_v over ggml-rpc's 10 MiB hash threshold (attn_q and attn_output 12.5 MiB,
 * the feed-forward ones 33.75 MiB, F16), grouped-query attention as large models have: 96% of a layer's bytes can be
 * fetched, as in a 70B Q4_K_M (whose attn_k and attn_v are under the threshold too).
 */
const MODEL: DemoModelOptions = {layers: 4, width: 2560, headCount: 20, headCountKv: 4, feedForwardLength: 6912, endsText: false};
const MODEL_NAME = 'wide (4 layers, width 2560, 20 heads / 4 KV heads, feed-forward 6912, F16, ~280M params)';
/** Layers of each remote stage; the coordinator keeps none (its own device holds the output layer). */
const STAGE_LAYERS = [2, 2];
/** The stage whose server is killed: the second remote one. */
const VICTIM = 1;
const SOURCE_PATH = 'models/bench.gguf';

const logitBias = byteTokenBan();
const uplink = new RateLimitedLink(UPLINK_MBIT * MBIT);

interface Run {
    text: string,
    tokens: number[],
    firstTokenAt: number,
    /** Bytes the uplink had carried when the first token came. */
    uplinkAtFirstToken: number
}

/** A greedy completion; `continuation`: the tokens streamed before a failure, which it resumes after. */
async function generate(engine: EngineSupervisor, continuation?: number[]): Promise<Run> {
    const request: GenerationRequest = {
        kind: 'completion', model: 'bench', prompt: PROMPT,
        sampling: {temperature: 0, stop: [], maxTokens: TOKENS, logitBias, responseFormat: {type: 'text'}},
        ...(continuation !== undefined && {continuation: {tokens: continuation}})
    };
    let text = '';
    const tokens: number[] = [];
    let firstTokenAt: number | undefined;
    let uplinkAtFirstToken = 0;
    await engine.generate(request, {
        onText: (chunk, chunkTokens) => {
            if (firstTokenAt === undefined) {
                firstTokenAt = performance.now();
                uplinkAtFirstToken = uplink.carriedBytes;
            }
            text += chunk;
            tokens.push(...chunkTokens);
        }
    });
    if (firstTokenAt === undefined)
        throw new Error('no token was generated');
    return {text, tokens, firstTokenAt, uplinkAtFirstToken};
}

interface Formation {
    pipeline: Awaited<ReturnType<typeof startDirectPipeline>>,
    hosts: StageHost[],
    sessions: StageSession[]
}

function bytesOf(digests: readonly TensorDigest[]) {
    return digests.reduce((sum, digest) => sum + digest.bytes, 0);
}

function fetchFigures(session: StageSession) {
    const outcome = session.fetched;
    return outcome === undefined ? null : {
        stored: outcome.stored.length, failed: outcome.failed.length, present: outcome.present, totalBytes: outcome.totalBytes,
        downloadedBytes: outcome.downloadedBytes, ms: session.fetchMs === null ? null : round(session.fetchMs),
        mbitPerSecond: outcome.bytesPerSecond === null ? null : round(outcome.bytesPerSecond / MBIT, 1)
    };
}

const dir = await mkdtemp(join(tmpdir(), 'strongdoge-layer-fetch-bench-'));
const cleanups: (() => Promise<unknown>)[] = [];
/** Formations not ended yet: their engine children and servers are stopped whatever happens. */
const running = new Set<Formation>();
try {
    process.stderr.write('rpc binaries (built once, about a minute the first time)\n');
    const files: RpcServerFiles = await prepareRpcServerDir(await testRpcBinaries((line) => process.stderr.write(`  ${line}\n`)));
    const modelPath = join(dir, 'bench.gguf');
    process.stderr.write(`[${MODEL_NAME}] writing the model\n`);
    await writeDemoModel(modelPath, MODEL);
    const layout = await modelLayoutOf(modelPath);
    const content = await readFile(modelPath);
    const fileSha256 = createHash('sha256').update(content).digest('hex');
    // The coordinator's side: the SHA-256 of each big tensor, computed once per file and cached (engine/tensor-digests.ts).
    const digestStarted = performance.now();
    const digests = await tensorDigests(modelPath, fileSha256, join(dir, 'digests'));
    const digestMs = performance.now() - digestStarted;
    let firstLayer = 0;
    const stageDigests = STAGE_LAYERS.map((count) => {
        const layers: [number, number] = [firstLayer, firstLayer + count - 1];
        firstLayer += count;
        return digestsOfLayers(digests, layers);
    });
    const remoteLayerBytes = layout.layerBytes.reduce((sum, bytes) => sum + bytes, 0);
    const fetchableBytes = bytesOf(digests);

    const source = await serveFile(SOURCE_PATH, content);
    cleanups.push(() => source.close());
    // The coordinator's own device (the output layer): on loopback, outside the uplink, kept across formations as LocalDevices does.
    const [own] = await startRpcServers(files, 1, THREADS);
    cleanups.push(() => own!.stop());
    const ownAddress = {host: '127.0.0.1', port: own!.port!};
    let hostCount = 0;
    const newHost = async () => {
        const name = `host-${++hostCount}`;
        await mkdir(join(dir, name), {recursive: true});
        const host = await StageHost.start({name, cacheDir: join(dir, name), files, threads: THREADS, source: {port: source.port, path: SOURCE_PATH},
            downloadBytesPerSecond: SOURCE_MBIT * MBIT});
        cleanups.push(() => host.close());
        return host;
    };
    const startPipeline = (sessions: StageSession[]) => startDirectPipeline({
        model: {id: 'bench', path: modelPath}, files, coordinatorLayers: 0, stageLayers: STAGE_LAYERS,
        stageServers: sessions.map((session) => session.address), own: {first: ownAddress, output: ownAddress},
        engine: {threads: THREADS, parallelSequences: 1, contextSize: CONTEXT, gpu: false},
        // Coordinator → host bytes through the one uplink, then half the round trip each way.
        connectStage: (server) => new ThrottledStream(new DelayedStream(new SocketStream(server.port, server.host), () => RTT_MS / 2), uplink)
    });
    const endFormation = async (formation: Formation) => {
        const {pipeline, sessions} = formation;
        running.delete(formation);
        await pipeline.stop();
        await Promise.all(sessions.map((session) => session.close()));
    };

    /** From nothing to the first token: the hosts' sessions (and fetches), the load over the uplink, the prompt. */
    const form = async (hosts: StageHost[], fetch: boolean) => {
        const uplinkBefore = uplink.carriedBytes;
        const started = performance.now();
        const sessions = await Promise.all(hosts.map((host, index) => host.open(fetch ? stageDigests[index] : undefined)));
        const opened = performance.now();
        const pipeline = await startPipeline(sessions);
        const loaded = performance.now();
        const stageBytes = pipeline.endpoints.slice(0, STAGE_LAYERS.length).map((endpoint) => endpoint.bytesToStage);
        const formation: Formation = {pipeline, hosts, sessions};
        running.add(formation);
        const run = await generate(pipeline.engine);
        return {
            formation,
            run,
            figures: {
                msToFirstToken: round(run.firstTokenAt - started),
                uplinkBytes: run.uplinkAtFirstToken - uplinkBefore,
                uplinkBytesPerStageAtLoad: stageBytes,
                phasesMs: {sessions: round(opened - started), load: round(loaded - opened), firstToken: round(run.firstTokenAt - loaded)},
                fetch: sessions.map(fetchFigures),
                placementMatches: pipeline.placementMatches
            }
        };
    };

    // (1a) today's path: every weight of the remote stages through the coordinator's uplink
    process.stderr.write(`[formation] today's path: ${(remoteLayerBytes / MB).toFixed(0)} MB over the ${UPLINK_MBIT} Mbit/s uplink\n`);
    const viaUplink = await form([await newHost(), await newHost()], false);
    await endFormation(viaUplink.formation);
    // (1b) hosts fetch their big tensors from the source at 100 Mbit/s each; the small ones cross the uplink
    process.stderr.write(`[formation] hosts fetch their layers from the source at ${SOURCE_MBIT} Mbit/s each\n`);
    const viaFetch = await form([await newHost(), await newHost()], true);
    const reference = viaFetch.run.text;
    const sameText = viaUplink.run.text === reference;

    // A spare fetches the layers of the stage it would replace while the pipeline serves (`--spare-stages`).
    const spare = await newHost();
    process.stderr.write(`[failover] a spare prefetches stage ${VICTIM + 1}'s layers\n`);
    const spareStarted = performance.now();
    const prefetched = await spare.fetch(stageDigests[VICTIM]!);
    const spareReadyMs = performance.now() - spareStarted;

    /**
     * SIGKILLs the victim stage's rpc server after `KILL_AT` streamed tokens; then as the coordinator does
     * (inference/sharded/cluster-coordinator.ts: fail(), then form()): the engine restarts, every session of the old
     * formation closes, new ones open on the survivor and `replacement` (fetching, or not: today's path), the model
     * loads again and the answer resumes after the tokens streamed.
     */
    const failover = async (current: Formation, replacement: StageHost, fetch: boolean) => {
        const victim = current.sessions[VICTIM]!;
        const streamed: number[] = [];
        let textBefore = '';
        let collecting = true;
        let killedAt = 0;
        let killed!: () => void;
        const kill = new Promise<void>((resolve) => {
            killed = resolve;
        });
        const interrupted = current.pipeline.engine.generate({
            kind: 'completion', model: 'bench', prompt: PROMPT,
            sampling: {temperature: 0, stop: [], maxTokens: TOKENS, logitBias, responseFormat: {type: 'text'}}
        }, {
            onText: (text, tokens) => {
                if (!collecting)
                    return;
                textBefore += text;
                streamed.push(...tokens);
                if (killedAt === 0 && streamed.length >= KILL_AT) {
                    killedAt = performance.now();
                    process.kill(victim.server.pid!, 'SIGKILL');
                    killed();
                }
            }
        }).then(() => 'finished before the kill', (error: Error) => error.message);
        await kill;
        // The stage's tunnel stream closes when its server dies: the coordinator's signal (TunnelEndpoint's onStreamClosed).
        await waitFor(() => current.pipeline.failures.length > 0, 30_000, 1);
        const detectedAt = performance.now();
        await endFormation(current);
        const interruption = await interrupted;
        collecting = false;
        const tornDownAt = performance.now();
        const uplinkBefore = uplink.carriedBytes;
        const hosts = current.hosts.map((host, index) => index === VICTIM ? replacement : host);
        const sessions = await Promise.all(hosts.map((host, index) => host.open(fetch ? stageDigests[index] : undefined)));
        const openedAt = performance.now();
        const pipeline = await startPipeline(sessions);
        const loadedAt = performance.now();
        const formation: Formation = {pipeline, hosts, sessions};
        running.add(formation);
        const resumed = await generate(pipeline.engine, streamed);
        return {
            formation,
            figures: {
                msToNextToken: round(resumed.firstTokenAt - killedAt),
                phasesMs: {detect: round(detectedAt - killedAt), teardown: round(tornDownAt - detectedAt), sessions: round(openedAt - tornDownAt),
                    load: round(loadedAt - openedAt), firstToken: round(resumed.firstTokenAt - loadedAt)},
                uplinkBytes: resumed.uplinkAtFirstToken - uplinkBefore,
                fetch: sessions.map(fetchFigures),
                killedAtToken: streamed.length,
                interruption,
                identical: textBefore + resumed.text === reference,
                placementMatches: pipeline.placementMatches
            }
        };
    };

    process.stderr.write('[failover] with a ready spare\n');
    const withSpare = await failover(viaFetch.formation, spare, true);
    process.stderr.write('[failover] no spare: the replacement downloads its layers\n');
    const withDownload = await failover(withSpare.formation, await newHost(), true);
    process.stderr.write('[failover] no spare, today\'s path: every weight through the uplink\n');
    const withoutFetch = await failover(withDownload.formation, await newHost(), false);
    await endFormation(withoutFetch.formation);

    const hostBigBytes = stageDigests.map(bytesOf);
    const report = {
        benchmark: 'layer fetch: time to form a 3-stage pipeline with every weight over a 20 Mbit/s uplink vs hosts downloading their big tensors from the model\'s source at 100 Mbit/s; time from a stage\'s death to the next token with a ready spare, with a downloading replacement, and over the uplink',
        date: new Date().toISOString(),
        machine: machine(),
        model: {
            name: MODEL_NAME,
            fileBytes: content.length,
            remoteLayerBytes,
            fetchableBytes,
            fetchableFraction: round(fetchableBytes / remoteLayerBytes, 4),
            bigTensorsPerStage: stageDigests.map((tensors) => tensors.length),
            why: `as large as a 20 Mbit/s uplink allows in this bench's ~15 minutes: today's path moves every remote weight over it twice (formation and failover), ${(remoteLayerBytes / MB).toFixed(0)} MB at ${UPLINK_MBIT} Mbit/s is ${Math.round(remoteLayerBytes / (UPLINK_MBIT * MBIT))} s each; the machine (${Math.round(totalmem() / 2 ** 30)} GiB) could hold tens of times more, which would take hours. The shape puts 96% of the layers' bytes in tensors over ggml-rpc's ${HASH_THRESHOLD_BYTES / 2 ** 20} MiB hash threshold, about as in large real models`
        },
        settings: {
            uplinkMbitPerSecond: UPLINK_MBIT, sourceMbitPerSecondPerHost: SOURCE_MBIT, rttMs: RTT_MS, threads: THREADS, contextSize: CONTEXT,
            tokens: TOKENS, killAtToken: KILL_AT, temperature: 0, byteTokensBanned: true,
            split: {coordinatorLayers: 0, stageLayers: STAGE_LAYERS, coordinatorDevices: 'the input layer in the engine, the output layer on its own rpc server on loopback (outside the uplink)'}
        },
        results: {
            formation: {
                viaUplink: {...viaUplink.figures, how: `today's path: the two hosts' rpc servers have no tensor cache, so every weight of the remote stages (${(remoteLayerBytes / MB).toFixed(1)} MB) crosses the coordinator's uplink at load`},
                viaFetch: {...viaFetch.figures, how: `each host fetches the big tensors of its layers (${hostBigBytes.map((bytes) => (bytes / MB).toFixed(1)).join(' and ')} MB) from the source with fetchLayers (4 range requests at once, each SHA-256 checked) into its store while its rpc server starts, links them into a new TensorCacheView that the server reads (-c), then the load sends the rest over the uplink; the coordinator's SET_TENSOR_HASH finds the big ones`},
                ratio: {
                    viaUplinkOverViaFetchTime: round(viaUplink.figures.msToFirstToken / viaFetch.figures.msToFirstToken, 2),
                    uplinkBytesViaFetchOverViaUplink: round(viaFetch.figures.uplinkBytes / viaUplink.figures.uplinkBytes, 4)
                },
                digests: {ms: round(digestMs), note: 'the coordinator\'s SHA-256 of every big tensor of the file, computed once per file and cached (engine/tensor-digests.ts); not in the times above, a first formation after the model\'s download adds it once'},
                sameText,
                how: `wall time from the start (opening the hosts' sessions) to the first token of a ${TOKENS}-token greedy completion: rpc servers started, the fetches (fetch path), the engine child's load through the direct pipeline (bench/lib/direct-pipeline.ts: TunnelEndpoints with the RPC codec, no Hyperswarm, no sandbox), the prompt; coordinator→host bytes of both remote stages cross one ${UPLINK_MBIT} Mbit/s link in user space (bench/lib/rate-limited-link.ts: one shared clock, 64 KiB pieces, store and forward), host→coordinator bytes unlimited, ${RTT_MS} ms round trip added on each remote stage's link; each host reaches the source (harness/file-server.ts on loopback) through its own ${SOURCE_MBIT} Mbit/s link (a TCP proxy whose answers cross it). uplinkBytes: what the uplink carried until the first token. One run each (the uplink run takes minutes); the texts of both runs compared`
            },
            failover: {
                spare: {...withSpare.figures, spareReadyMs: round(spareReadyMs), sparePrefetchedBytes: prefetched.downloadedBytes,
                    how: `a spare host had prefetched stage ${VICTIM + 1}'s big tensors into its store while the pipeline served (${round(spareReadyMs / 1000, 1)} s, not in the failover); the survivor's are in its store from its own fetch`},
                downloadingReplacement: {...withDownload.figures, how: 'no spare: a fresh host (empty store) downloads the stage\'s big tensors from the source at 100 Mbit/s after the failure; the survivor\'s are in its store'},
                viaUplink: {...withoutFetch.figures, how: 'no spare and no fetching (today\'s path, or a model without a public source): the replacement and the survivor (its new session has no cache: a sandboxed server\'s cache is read-only, so nothing it received before was kept) receive every weight over the uplink'},
                ratio: {
                    viaUplinkOverSpare: round(withoutFetch.figures.msToNextToken / withSpare.figures.msToNextToken, 2),
                    downloadingOverSpare: round(withDownload.figures.msToNextToken / withSpare.figures.msToNextToken, 2)
                },
                how: `the formed pipeline streams a ${TOKENS}-token greedy completion; after ${KILL_AT} tokens the rpc server of remote stage ${VICTIM + 1} is SIGKILLed; msToNextToken is from the kill to the first token of the resumed answer. As the coordinator does on a failure: the stage's closed stream is the signal (detect), the engine child and every session of the old formation are stopped (teardown), new sessions open on the survivor and the replacement (with their fetches), the engine child starts and loads the model again over the same ${UPLINK_MBIT} Mbit/s uplink, and the answer resumes after the tokens streamed (continuation). identical: the interrupted answer's text plus the resumed one equals the formation's uninterrupted text. One trial each; the three run one after the other, each replacing the stage the previous one formed; through the direct pipeline, not daemons: no Hyperswarm, sandbox, planner or stage watchdog (a killed server's stream closes at once; a frozen host is found by the watchdog instead), the bench takes the coordinator's steps itself, with no restart backoff`
            }
        }
    };
    await writeReport('layer-fetch', report, {formation: {viaUplink: viaUplink.figures.msToFirstToken, viaFetch: viaFetch.figures.msToFirstToken, ...report.results.formation.ratio, sameText},
        failover: {spare: withSpare.figures.msToNextToken, downloadingReplacement: withDownload.figures.msToNextToken, viaUplink: withoutFetch.figures.msToNextToken, ...report.results.failover.ratio}});
    if (!sameText)
        throw new Error(`the two formations wrote different texts:\n${viaUplink.run.text}\n---\n${reference}`);
} finally {
    for (const {pipeline, sessions} of running) {
        await pipeline.stop().catch(() => undefined);
        await Promise.all(sessions.map((session) => session.close().catch(() => undefined)));
    }
    for (const cleanup of cleanups.reverse())
        await cleanup().catch(() => undefined);
    await rm(dir, {recursive: true, force: true});
}
