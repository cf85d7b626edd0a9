/**
 * `npm run bench`: strongdoge's proxy against node-llama-cpp in-process and against llama.cpp's llama-server,
 * same model, prompt, threads and client load. Writes bench/results/inference.json. Targets are reported,
 * never asserted: benchmarks measure, tests check behaviour.
 */
import {mkdir, mkdtemp, readFile, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import OpenAI from 'openai';
import {writeDemoModel, type DemoModelOptions} from '../engine/demo/demo-model.js';
import {byteTokenBan} from '../harness/byte-token-ban.js';
import {startDaemon} from '../harness/cli-process.js';
import {repeatedPrompt} from '../harness/generation-requests.js';
import {openDirectLlama} from './lib/direct-llama.js';
import {llamaServerAvailable, startLlamaServer} from './lib/llama-server.js';
import {machine, reportFile, writeReport} from './lib/report.js';
import {median, round} from './lib/statistics.js';
import {
    measureConcurrentClients, measurePromptInterference, measureStreamedCompletion, summarizeStreams, type CompletionLoad, type StreamMeasurement
} from './lib/stream-measurement.js';

const THREADS = 1;
/** Sequences of the node and slots of llama-server: enough for the largest concurrency measured. */
const PARALLEL = 8;
const CONTEXT = 4096;
const PROMPT = 'The swarm of doges gathered to share their GPUs and';
/** The prompt that arrives while streams run (measurePromptInterference): about 2,000 tokens, new each try (no prompt cache). */
const longPrompt = (attempt: number) => `${attempt}: ${repeatedPrompt(150)}`;

interface BenchModel {
    name: string,
    options: DemoModelOptions,
    maxTokens: number,
    repeats: number,
    concurrency: number[],
    /** Also measure how a long prompt stalls running streams. */
    promptInterference: boolean,
    /** Also measure llama-server with flash attention off (its default is on where the device supports it). */
    flashAttentionControl?: boolean
}

const MODELS: BenchModel[] = [
    // Models that never end by themselves: every contestant generates all maxTokens.
    {name: 'tiny (8 layers, width 256, ~5M params)', options: {endsText: false},
        maxTokens: 256, repeats: 5, concurrency: [1, 2, 4, 8], promptInterference: false},
    {name: 'medium (12 layers, width 768, ~86M params)', options: {layers: 12, width: 768, headCount: 12, feedForwardLength: 2048, endsText: false},
        maxTokens: 256, repeats: 5, concurrency: [1, 2, 4, 8], promptInterference: true, flashAttentionControl: true},
    // The same shape in Q8_0: node-llama-cpp's shipped CPU backend is slow on F16 weights, not on quantized ones.
    {name: 'medium-q8 (the medium model in Q8_0)',
        options: {layers: 12, width: 768, headCount: 12, feedForwardLength: 2048, weightType: 'Q8_0', endsText: false},
        maxTokens: 256, repeats: 5, concurrency: [1, 4], promptInterference: false},
    // TinyLlama's shape (grouped-query attention, 1.0B parameters) in Q4_0, as users run models: weights cost
    // memory bandwidth and compute per token, so per-token overhead and batching show as users feel them.
    {name: 'realistic (22 layers, width 2048, GQA 32/4, ~1.0B params, Q4_0)',
        options: {layers: 22, width: 2048, headCount: 32, headCountKv: 4, feedForwardLength: 5632, weightType: 'Q4_0', endsText: false},
        maxTokens: 64, repeats: 3, concurrency: [1, 4], promptInterference: false}
];


async function repeat(repeats: number, measure: () => Promise<StreamMeasurement>) {
    await measure(); // warm-up: caches, first-token allocations
    const runs: StreamMeasurement[] = [];
    for (let i = 0; i < repeats; i++)
        runs.push(await measure());
    return summarizeStreams(runs);
}

async function concurrencySweep(client: OpenAI, load: CompletionLoad, concurrency: number[]) {
    const results: Record<string, {aggregateTokensPerSecond: number, worstTtftMs: number}> = {};
    for (const clients of concurrency) {
        const samples = [];
        for (let i = 0; i < 3; i++)
            samples.push(await measureConcurrentClients(client, load, clients));
        results[String(clients)] = {
            aggregateTokensPerSecond: round(median(samples.map((sample) => sample.aggregateTokensPerSecond))),
            worstTtftMs: round(median(samples.map((sample) => sample.ttftMs)))
        };
    }
    return results;
}

/** 3 streams running, then the long prompt; the median of 3 tries (each try's worst gap). */
async function promptInterference(client: OpenAI, load: CompletionLoad) {
    const tries = [];
    for (let i = 0; i < 3; i++)
        tries.push(await measurePromptInterference(client, {...load, maxTokens: 1024}, 3, longPrompt(i)));
    return {
        runningStreams: 3,
        promptTokens: tries[0]!.promptTokens,
        promptMs: round(median(tries.map((run) => run.promptMs))),
        worstGapMs: round(median(tries.map((run) => run.worstGapMs))),
        medianGapMsBefore: round(median(tries.map((run) => run.medianGapMsBefore)))
    };
}

/** One server's measurements: a stream alone, concurrent streams, and (if asked) a long prompt among running streams. */
async function measureServer(client: OpenAI, load: CompletionLoad, bench: BenchModel) {
    return {
        single: await repeat(bench.repeats, () => measureStreamedCompletion(client, load)),
        concurrency: await concurrencySweep(client, load, bench.concurrency),
        ...(bench.promptInterference && {promptInterference: await promptInterference(client, load)})
    };
}

/** llama-server with its default settings and `extraArgs`, measured as the proxy is; a failure is reported, not fatal. */
async function measureLlamaServer(modelPath: string, load: CompletionLoad, bench: BenchModel, extraArgs: string[] = []):
    Promise<Awaited<ReturnType<typeof measureServer>> | {skipped: string}> {
    if (!llamaServerAvailable())
        return {skipped: 'llama-server not built: run scripts/build-llama-server.sh'};
    process.stderr.write(`[${bench.name}] llama-server ${extraArgs.join(' ')}\n`);
    const server = await startLlamaServer(modelPath, {threads: THREADS, parallel: PARALLEL, contextPerSlot: CONTEXT, extraArgs});
    try {
        return await measureServer(new OpenAI({baseURL: server.baseUrl, apiKey: 'bench', maxRetries: 0}), load, bench);
    } catch (error) {
        // the comparison is missing, the other measurements stand
        return {skipped: `llama-server failed (${(error as Error).message}, exit ${server.exitCode()}): ${server.logTail()}`};
    } finally {
        await server.stop().catch(() => undefined);
    }
}

/** Rounds of the single-stream head-to-head, each a stream on either server, the order alternating. */
const HEAD_TO_HEAD_ROUNDS = 8;

/**
 * One stream at a time on the proxy and on llama-server (default settings), alternating with both running: the
 * machine's drift over the minutes between the suites above falls on both alike.
 */
async function singleStreamHeadToHead(proxyClient: OpenAI, modelPath: string, load: CompletionLoad, bench: BenchModel) {
    process.stderr.write(`[${bench.name}] single stream, alternating\n`);
    const server = await startLlamaServer(modelPath, {threads: THREADS, parallel: PARALLEL, contextPerSlot: CONTEXT});
    try {
        const serverClient = new OpenAI({baseURL: server.baseUrl, apiKey: 'bench', maxRetries: 0});
        const runs: {proxy: StreamMeasurement[], llamaServer: StreamMeasurement[]} = {proxy: [], llamaServer: []};
        await measureStreamedCompletion(serverClient, load); // its warm-up: the proxy is warm from its suite
        for (let round = 0; round < HEAD_TO_HEAD_ROUNDS; round++) {
            const order = round % 2 === 0 ? ['proxy', 'llamaServer'] as const : ['llamaServer', 'proxy'] as const;
            for (const which of order)
                runs[which].push(await measureStreamedCompletion(which === 'proxy' ? proxyClient : serverClient, load));
        }
        const proxy = summarizeStreams(runs.proxy);
        const llamaServer = summarizeStreams(runs.llamaServer);
        return {proxy, llamaServer, ratio: round(proxy.generationTokensPerSecond / llamaServer.generationTokensPerSecond, 3)};
    } finally {
        await server.stop().catch(() => undefined);
    }
}

async function benchmarkModel(dir: string, bench: BenchModel) {
    const {name, options} = bench;
    const dataDir = join(dir, name.split(' ')[0]!);
    await mkdir(join(dataDir, 'models'), {recursive: true});
    const modelPath = join(dataDir, 'models', 'bench.gguf');
    process.stderr.write(`\n[${name}] writing model\n`);
    await writeDemoModel(modelPath, options);
    const logitBias = byteTokenBan();
    const load: CompletionLoad = {model: 'bench', prompt: PROMPT, maxTokens: bench.maxTokens, logitBias};

    process.stderr.write(`[${name}] node-llama-cpp in-process\n`);
    const direct = await openDirectLlama(modelPath, THREADS);
    engineBuild = direct.buildType;
    const directResult = await repeat(bench.repeats, () => direct.measure(PROMPT, bench.maxTokens, logitBias));
    await direct.dispose();

    process.stderr.write(`[${name}] strongdoge proxy\n`);
    const daemon = await startDaemon(['--model', 'bench', '--data-dir', dataDir, '--threads', String(THREADS),
        '--parallel', String(PARALLEL), '--context-size', String(CONTEXT)]);
    const proxyClient = new OpenAI({baseURL: daemon.baseUrl, apiKey: 'bench', maxRetries: 0});
    const proxy = await measureServer(proxyClient, load, bench);
    const {models: [loaded]} = await (await fetch(new URL('/api/node', daemon.baseUrl))).json() as {models: {flashAttention: string}[]};

    const llamaServer = await measureLlamaServer(modelPath, load, bench);
    // Its flash attention off (strongdoge's `--flash-attention off`): the streams alone and 4 together.
    const llamaServerFlashAttentionOff = bench.flashAttentionControl
        ? await measureLlamaServer(modelPath, load, {...bench, concurrency: [1, 4], promptInterference: false}, ['-fa', 'off'])
        : undefined;
    const headToHead = llamaServerAvailable() ? await singleStreamHeadToHead(proxyClient, modelPath, load, bench) : undefined;
    await daemon.stop();

    const aggregate = (server: typeof proxy, clients: number) => server.concurrency[clients]!.aggregateTokensPerSecond;
    const vsServer = 'single' in llamaServer
        ? {
            singleStreamTokensPerSecond: round(proxy.single.generationTokensPerSecond / llamaServer.single.generationTokensPerSecond, 3),
            singleStreamTtftMsDifference: round(proxy.single.ttftMs - llamaServer.single.ttftMs),
            concurrentAggregateTokensPerSecond: Object.fromEntries(bench.concurrency.map((clients) => [clients,
                round(aggregate(proxy, clients) / aggregate(llamaServer as typeof proxy, clients), 3)])),
            ...(proxy.promptInterference && llamaServer.promptInterference && {
                worstGapDuringLongPrompt: round(proxy.promptInterference.worstGapMs / llamaServer.promptInterference.worstGapMs, 3)
            })
        }
        : undefined;

    return {
        model: name,
        direct: directResult,
        proxy: {...proxy, flashAttention: loaded?.flashAttention},
        llamaServer,
        ...(llamaServerFlashAttentionOff && {llamaServerFlashAttentionOff}),
        ...(headToHead && {singleStreamHeadToHead: headToHead}),
        ratios: {
            proxyOverDirectTokensPerSecond: round(proxy.single.generationTokensPerSecond / directResult.generationTokensPerSecond, 3),
            proxyMinusDirectTtftMs: round(proxy.single.ttftMs - directResult.ttftMs),
            proxyConcurrentOverOneStream: Object.fromEntries(bench.concurrency.filter((clients) => clients > 1).map((clients) => [clients,
                round(aggregate(proxy, clients) / aggregate(proxy, 1), 3)])),
            ...(vsServer && {proxyOverLlamaServer: vsServer}),
            ...(llamaServerFlashAttentionOff && 'single' in llamaServerFlashAttentionOff && {proxyOverLlamaServerFlashAttentionOff: {
                singleStreamTokensPerSecond: round(proxy.single.generationTokensPerSecond / llamaServerFlashAttentionOff.single.generationTokensPerSecond, 3),
                fourStreamsAggregateTokensPerSecond: round(aggregate(proxy, 4) / aggregate(llamaServerFlashAttentionOff as typeof proxy, 4), 3)
            }})
        }
    };
}

/** Which node-llama-cpp binaries ran: a build for this machine (`strongdoge engine build`) is used when present. */
let engineBuild = 'prebuilt';

const dir = await mkdtemp(join(tmpdir(), 'strongdoge-bench-'));
try {
    const results: (Awaited<ReturnType<typeof benchmarkModel>> & {date?: string})[] = [];
    const only = process.env.BENCH_MODELS?.split(',');
    for (const bench of MODELS.filter((model) => only === undefined || only.includes(model.name.split(' ')[0]!)))
        results.push({...await benchmarkModel(dir, bench), date: new Date().toISOString()});
    const report = {
        benchmark: 'inference: proxy vs node-llama-cpp in-process vs llama-server',
        date: new Date().toISOString(),
        machine: machine(),
        engineBuild,
        settings: {threads: THREADS, parallelSequences: PARALLEL, contextPerSequence: CONTEXT, temperature: 0, byteTokensBanned: true,
            perModel: Object.fromEntries(MODELS.map(({name, maxTokens, repeats, concurrency}) => [name, {maxTokens, repeats, concurrency}]))},
        targets: {
            proxyOverDirectTokensPerSecond: '>= 0.95',
            proxyOverLlamaServerSingleStream: '>= 0.95 (medium model; singleStreamHeadToHead alternates the two)',
            proxyFourStreamsOverOneStream: '>= 1.5 (medium model)',
            proxyOverLlamaServerFourStreams: '>= 0.9 (medium model)',
            worstGapDuringLongPrompt: 'no worse than llama-server (ratio <= 1)',
            ttftVsLlamaServer: 'no worse'
        },
        results
    };
    // Results with an engine built for this CPU go beside the ones with node-llama-cpp's shipped binaries.
    const name = engineBuild === 'prebuilt' ? 'inference' : 'inference-local-build';
    if (only !== undefined) {
        // Some models only: the others keep their earlier results (their own dates).
        const earlier = JSON.parse(await readFile(reportFile(name), 'utf8').catch(() => '{"results": []}')) as {date?: string, results: {model: string, date?: string}[]};
        const measured = new Set(results.map((result) => result.model));
        report.results = [...earlier.results.filter((result) => !measured.has(result.model))
            .map((result) => ({...result, date: result.date ?? earlier.date})), ...results] as typeof results;
        report.results.sort((a, b) => MODELS.findIndex((model) => model.name === a.model) - MODELS.findIndex((model) => model.name === b.model));
    }
    await writeReport(name, report, results.map((result) => ({model: result.model, ...result.ratios})));
} finally {
    await rm(dir, {recursive: true, force: true});
}
