/**
 * `npm run bench`: strongdoge's proxy against node-llama-cpp in-process and against llama.cpp's llama-server,
 * same model, prompt, threads and client load. Writes bench/results/inference.json. Targets are reported,
 * never asserted: benchmarks measure, tests check behaviour.
 */
import {mkdir, mkdtemp, rm, writeFile} from 'node:fs/promises';
import {cpus, tmpdir} from 'node:os';
import {join} from 'node:path';
import OpenAI from 'openai';
import {writeDemoModel, type DemoModelOptions} from '../engine/demo/demo-model.js';
import {buildDemoVocab} from '../engine/demo/demo-vocab.js';
import {TokenType} from '../engine/gguf/gguf-types.js';
import {startDaemon} from '../test/helpers/cli-process.js';
import {openDirectLlama} from './lib/direct-llama.js';
import {llamaServerAvailable, startLlamaServer} from './lib/llama-server.js';
import {median, round} from './lib/statistics.js';
import {measureConcurrentClients, measureStreamedCompletion, type CompletionLoad, type StreamMeasurement} from './lib/stream-measurement.js';

const THREADS = 1;
const PARALLEL = 4;
const CONTEXT = 4096;
const MAX_TOKENS = 256;
const REPEATS = 5;
const CONCURRENCY = [1, 2, 4];
const PROMPT = 'The swarm of doges gathered to share their GPUs and';

const MODELS: {name: string, options: DemoModelOptions}[] = [
    // Models that never end by themselves: every contestant generates all MAX_TOKENS.
    {name: 'tiny (8 layers, width 256, ~5M params)', options: {endsText: false}},
    {name: 'medium (12 layers, width 768, ~86M params)', options: {layers: 12, width: 768, headCount: 12, feedForwardLength: 2048, endsText: false}}
];

/** Random weights emit byte tokens that llama-server refuses to stream (docs/architecture.md, "Benchmarks"): ban them for every contestant. */
function byteTokenBan() {
    const vocab = buildDemoVocab();
    const bias: Record<string, number> = {};
    vocab.tokenTypes.forEach((type, id) => {
        if (type === TokenType.byte)
            bias[String(id)] = -100;
    });
    return bias;
}

function summarize(runs: StreamMeasurement[]) {
    return {
        generationTokensPerSecond: round(median(runs.map((run) => run.generationTokensPerSecond))),
        ttftMs: round(median(runs.map((run) => run.ttftMs))),
        completionTokens: median(runs.map((run) => run.completionTokens)),
        runs: runs.length
    };
}

async function repeat(measure: () => Promise<StreamMeasurement>) {
    await measure(); // warm-up: caches, first-token allocations
    const runs: StreamMeasurement[] = [];
    for (let i = 0; i < REPEATS; i++)
        runs.push(await measure());
    return summarize(runs);
}

async function concurrencySweep(client: OpenAI, load: CompletionLoad) {
    const results: Record<string, {aggregateTokensPerSecond: number, worstTtftMs: number}> = {};
    for (const clients of CONCURRENCY) {
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

async function benchmarkModel(dir: string, name: string, options: DemoModelOptions) {
    const dataDir = join(dir, name.split(' ')[0]!);
    await mkdir(join(dataDir, 'models'), {recursive: true});
    const modelPath = join(dataDir, 'models', 'bench.gguf');
    process.stderr.write(`\n[${name}] writing model\n`);
    await writeDemoModel(modelPath, options);
    const logitBias = byteTokenBan();
    const load: CompletionLoad = {model: 'bench', prompt: PROMPT, maxTokens: MAX_TOKENS, logitBias};

    process.stderr.write(`[${name}] node-llama-cpp in-process\n`);
    const direct = await openDirectLlama(modelPath, THREADS);
    const directResult = await repeat(() => direct.measure(PROMPT, MAX_TOKENS, logitBias));
    await direct.dispose();

    process.stderr.write(`[${name}] strongdoge proxy\n`);
    const daemon = await startDaemon(['--model', 'bench', '--data-dir', dataDir, '--threads', String(THREADS),
        '--parallel', String(PARALLEL), '--context-size', String(CONTEXT)]);
    const proxyClient = new OpenAI({baseURL: daemon.baseUrl, apiKey: 'bench', maxRetries: 0});
    const proxyResult = await repeat(() => measureStreamedCompletion(proxyClient, load));
    const proxyConcurrency = await concurrencySweep(proxyClient, load);
    await daemon.stop();

    let llamaServer: {single: ReturnType<typeof summarize>, concurrency: Awaited<ReturnType<typeof concurrencySweep>>} | {skipped: string};
    if (llamaServerAvailable()) {
        process.stderr.write(`[${name}] llama-server\n`);
        const server = await startLlamaServer(modelPath, {threads: THREADS, parallel: PARALLEL, contextPerSlot: CONTEXT});
        const serverClient = new OpenAI({baseURL: server.baseUrl, apiKey: 'bench', maxRetries: 0});
        try {
            llamaServer = {
                single: await repeat(() => measureStreamedCompletion(serverClient, load)),
                concurrency: await concurrencySweep(serverClient, load)
            };
        } catch (error) {
            // Reported, not fatal: the comparison is missing, the other measurements stand.
            llamaServer = {skipped: `llama-server failed (${(error as Error).message}, exit ${server.exitCode()}): ${server.logTail()}`};
        }
        await server.stop().catch(() => undefined);
    } else {
        llamaServer = {skipped: 'llama-server not built: run scripts/build-llama-server.sh'};
    }

    const vsServer = 'single' in llamaServer
        ? {
            singleStreamTokensPerSecond: round(proxyResult.generationTokensPerSecond / llamaServer.single.generationTokensPerSecond, 3),
            singleStreamTtftMsDifference: round(proxyResult.ttftMs - llamaServer.single.ttftMs),
            concurrentAggregateTokensPerSecond: Object.fromEntries(CONCURRENCY.map((clients) => [clients,
                round(proxyConcurrency[clients]!.aggregateTokensPerSecond / llamaServer.concurrency[clients]!.aggregateTokensPerSecond, 3)]))
        }
        : undefined;

    return {
        model: name,
        direct: directResult,
        proxy: {single: proxyResult, concurrency: proxyConcurrency},
        llamaServer,
        ratios: {
            proxyOverDirectTokensPerSecond: round(proxyResult.generationTokensPerSecond / directResult.generationTokensPerSecond, 3),
            proxyMinusDirectTtftMs: round(proxyResult.ttftMs - directResult.ttftMs),
            ...(vsServer && {proxyOverLlamaServer: vsServer})
        }
    };
}

const dir = await mkdtemp(join(tmpdir(), 'strongdoge-bench-'));
try {
    const results = [];
    for (const {name, options} of MODELS)
        results.push(await benchmarkModel(dir, name, options));
    const report = {
        benchmark: 'inference: proxy vs node-llama-cpp in-process vs llama-server',
        date: new Date().toISOString(),
        machine: {cpu: cpus()[0]?.model, cores: cpus().length, node: process.version},
        settings: {threads: THREADS, parallelSequences: PARALLEL, contextPerSequence: CONTEXT, maxTokens: MAX_TOKENS, repeats: REPEATS,
            temperature: 0, byteTokensBanned: true},
        targets: {proxyOverDirectTokensPerSecond: '>= 0.95', proxyOverLlamaServerTokensPerSecond: '>= 0.95', ttftVsLlamaServer: 'no worse'},
        results
    };
    await mkdir(new URL('./results/', import.meta.url), {recursive: true});
    const out = new URL('./results/inference.json', import.meta.url);
    await writeFile(out, JSON.stringify(report, null, 2) + '\n');
    process.stdout.write(JSON.stringify(results.map((result) => ({model: result.model, ...result.ratios})), null, 2) + '\n');
    process.stderr.write(`wrote ${out.pathname}\n`);
} finally {
    await rm(dir, {recursive: true, force: true});
}
