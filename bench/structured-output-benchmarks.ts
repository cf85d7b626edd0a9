/**
 * `npm run bench:structured`: what enforcing `response_format` costs. Generation tokens/s and TTFT of a plain
 * chat reply, a `json_schema` reply (strongdoge's own GBNF grammar, inference/json-schema/) and a `json_object`
 * reply, on strongdoge's proxy and on llama.cpp's llama-server with the same request, runs alternating between
 * the two. Every JSON reply is validated with ajv. Writes bench/results/structured-output.json. Targets are
 * reported, never asserted.
 */
import {mkdir, mkdtemp, rm, writeFile} from 'node:fs/promises';
import {cpus, loadavg, tmpdir} from 'node:os';
import {join} from 'node:path';
import Ajv2020Module from 'ajv/dist/2020.js';
import {getLlama} from 'node-llama-cpp';
import OpenAI from 'openai';
import {writeDemoModel, type DemoModelOptions} from '../engine/demo/demo-model.js';
import {byteTokenBan} from '../test/helpers/byte-token-ban.js';
import {startDaemon} from '../test/helpers/cli-process.js';
import {llamaServerAvailable, startLlamaServer} from './lib/llama-server.js';
import {median, round} from './lib/statistics.js';
import {StreamTimer} from './lib/stream-measurement.js';

const THREADS = 1;
/** One stream at a time: one sequence on the node, one slot on llama-server. */
const PARALLEL = 1;
const CONTEXT = 4096;
const REPEATS = Number(process.env.BENCH_REPEATS ?? 7);
const MODEL_NAME = 'medium (12 layers, width 768, ~86M params)';
/** The inference benchmark's "medium" model: never ends by itself, so the plain reply runs to max_tokens. */
const MODEL: DemoModelOptions = {layers: 12, width: 768, headCount: 12, feedForwardLength: 2048, endsText: false};

/**
 * 6 small objects: a reply of about 230 tokens that ends by itself when the grammar is done. The demo vocabulary
 * spells JSON almost character by character: 20 objects took about 750 tokens on both servers.
 */
const ITEMS = 6;
const SCHEMA = {
    type: 'object',
    properties: {
        items: {
            type: 'array', minItems: ITEMS, maxItems: ITEMS,
            items: {
                type: 'object',
                properties: {id: {type: 'integer', minimum: 0, maximum: 999}, name: {type: 'string', maxLength: 8}, ok: {type: 'boolean'}},
                required: ['id', 'name', 'ok'], additionalProperties: false
            }
        }
    },
    required: ['items'], additionalProperties: false
};
const PROMPT = 'List twenty parts of a swarm of doges sharing their GPUs, each with an id, a short name and whether it works.';

type Mode = 'plain' | 'json_schema' | 'json_object';
const MODES: {mode: Mode, maxTokens: number, responseFormat?: OpenAI.ChatCompletionCreateParams['response_format']}[] = [
    {mode: 'plain', maxTokens: 256},
    // Room to finish: the grammar ends the reply.
    {mode: 'json_schema', maxTokens: 1024, responseFormat: {type: 'json_schema', json_schema: {name: 'parts', schema: SCHEMA}}},
    {mode: 'json_object', maxTokens: 256, responseFormat: {type: 'json_object'}}
];

const Ajv2020 = (Ajv2020Module as unknown as {default: typeof Ajv2020Module.default}).default;
const ajv = new Ajv2020({strict: false, validateFormats: false});
const validators: Record<Mode, ((value: unknown) => boolean) | undefined> = {
    plain: undefined,
    json_schema: ajv.compile(SCHEMA),
    // strongdoge's JSON mode writes an object; llama-server's (a schema of {}) writes any JSON value.
    json_object: ajv.compile({type: 'object'})
};

interface Run {
    /** Why the request failed; the run is then left out of the timings. */
    error?: string,
    ttftMs: number,
    generationTokensPerSecond: number,
    completionTokens: number,
    promptTokens: number,
    finishReason: string,
    content: string
}

async function measureChat(client: OpenAI, mode: typeof MODES[number], logitBias: Record<string, number>): Promise<Run> {
    try {
        return await streamChat(client, mode, logitBias);
    } catch (error) {
        return {error: (error as Error).message, ttftMs: 0, generationTokensPerSecond: 0, completionTokens: 0, promptTokens: 0, finishReason: 'error', content: ''};
    }
}

async function streamChat(client: OpenAI, {maxTokens, responseFormat}: typeof MODES[number], logitBias: Record<string, number>): Promise<Run> {
    const timer = new StreamTimer();
    let content = '';
    let completionTokens = 0;
    let promptTokens = 0;
    let finishReason = '';
    const stream = await client.chat.completions.create({
        model: 'bench', messages: [{role: 'user', content: PROMPT}], max_tokens: maxTokens, temperature: 0,
        logit_bias: logitBias, stream: true, stream_options: {include_usage: true},
        ...(responseFormat && {response_format: responseFormat})
    });
    for await (const chunk of stream) {
        const text = chunk.choices[0]?.delta?.content;
        if (text) {
            timer.textArrived();
            content += text;
        }
        finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
        completionTokens = chunk.usage?.completion_tokens ?? completionTokens;
        promptTokens = chunk.usage?.prompt_tokens ?? promptTokens;
    }
    const {ttftMs, generationTokensPerSecond} = timer.finish(completionTokens);
    return {ttftMs, generationTokensPerSecond, completionTokens, promptTokens, finishReason, content};
}

/** Why a finished reply is not what its mode asks for; undefined when it is (or when the mode asks for nothing). */
function replyProblem(mode: Mode, run: Run): string | undefined {
    const validate = validators[mode];
    if (validate === undefined)
        return undefined;
    if (run.error !== undefined)
        return `request failed: ${run.error}`;
    let value: unknown;
    try {
        value = JSON.parse(run.content);
    } catch {
        return 'not JSON';
    }
    if (validate(value))
        return undefined;
    const errors = (validate as unknown as {errors?: {instancePath: string, message?: string}[]}).errors ?? [];
    return errors.slice(0, 3).map((error) => `${error.instancePath || '/'} ${error.message}`).join('; ');
}

function summarize(mode: Mode, runs: Run[]) {
    const timed = runs.filter((run) => run.error === undefined);
    // A reply cut short by max_tokens is incomplete by the client's choice: counted, not validated.
    const finished = runs.filter((run) => run.error !== undefined || run.finishReason === 'stop');
    const problems = finished.map((run) => replyProblem(mode, run));
    const sample = timed[0]?.content ?? '';
    return {
        generationTokensPerSecond: timed.length > 0 ? round(median(timed.map((run) => run.generationTokensPerSecond))) : 0,
        ttftMs: timed.length > 0 ? round(median(timed.map((run) => run.ttftMs))) : 0,
        generationTokensPerSecondPerRun: timed.map((run) => round(run.generationTokensPerSecond, 1)),
        completionTokensPerRun: runs.map((run) => run.completionTokens),
        promptTokens: timed[0]?.promptTokens,
        finishReasons: runs.map((run) => run.finishReason),
        runs: runs.length,
        ...(timed.length < runs.length && {failedRequests: [...new Set(runs.flatMap((run) => run.error === undefined ? [] : [run.error]))]}),
        ...(mode !== 'plain' && {
            finished: finished.length,
            validOfFinished: problems.filter((problem) => problem === undefined).length,
            problems: [...new Set(problems.filter((problem) => problem !== undefined))]
        }),
        // The first measured reply, clipped: what the grammar let through.
        sampleReply: sample.length > 400 ? `${sample.slice(0, 400)}…` : sample
    };
}

/**
 * llama-server's default chat path (Jinja templates) as a client meets it, before the measured server starts. Its
 * `json_schema` grammar begins with the generation prompt, `<|im_start|>assistant\n`, and is fed that prompt's tokens;
 * the demo's SPM vocabulary tokenizes it as `<|im_start|>`, ` as`, `si`, … (a space after the special token), the
 * grammar refuses them and the request fails. Its `json_object` (a schema of `{}`) gets no grammar at all there.
 * The measured llama-server therefore runs with `--no-jinja` (its legacy template path), where both work.
 */
async function probeJinjaChatPath(modelPath: string, logitBias: Record<string, number>) {
    delete process.env.LLAMA_ARG_JINJA;
    const server = await startLlamaServer(modelPath, {threads: THREADS, parallel: PARALLEL, contextPerSlot: CONTEXT});
    const client = new OpenAI({baseURL: server.baseUrl, apiKey: 'bench', maxRetries: 0});
    const reply = async ({responseFormat}: typeof MODES[number]) => {
        try {
            const completion = await client.chat.completions.create({model: 'bench', messages: [{role: 'user', content: PROMPT}],
                max_tokens: 24, temperature: 0, logit_bias: logitBias, ...(responseFormat && {response_format: responseFormat})});
            return {content: completion.choices[0]?.message.content ?? ''};
        } catch (error) {
            return {error: (error as Error).message};
        }
    };
    try {
        const replies: Record<string, {content?: string, error?: string}> = {};
        for (const mode of MODES)
            replies[mode.mode] = await reply(mode);
        return {jinja: true, maxTokens: 24, replies};
    } finally {
        await server.stop();
    }
}

type Contestant = {name: 'strongdoge' | 'llamaServer', client: OpenAI, runs: Record<Mode, Run[]>};

const startedAt = performance.now();
const loadBefore = loadavg().map((value) => round(value));
// The 1-minute load average every 5 s: this benchmark itself adds about 1 (one thread decoding, the client).
const loadDuring: number[] = [];
const loadSampler = setInterval(() => loadDuring.push(loadavg()[0]!), 5000);
const dir = await mkdtemp(join(tmpdir(), 'strongdoge-bench-structured-'));
const stops: (() => Promise<unknown>)[] = [];
try {
    const dataDir = join(dir, 'data');
    await mkdir(join(dataDir, 'models'), {recursive: true});
    const modelPath = join(dataDir, 'models', 'bench.gguf');
    process.stderr.write(`[${MODEL_NAME}] writing model\n`);
    await writeDemoModel(modelPath, MODEL);
    const logitBias = byteTokenBan();

    const llama = await getLlama({gpu: false, build: 'never'});
    const engineBuild = llama.buildType;
    await llama.dispose();

    const emptyRuns = (): Record<Mode, Run[]> => ({plain: [], json_schema: [], json_object: []});
    const daemon = await startDaemon(['--model', 'bench', '--data-dir', dataDir, '--threads', String(THREADS),
        '--parallel', String(PARALLEL), '--context-size', String(CONTEXT)]);
    stops.push(() => daemon.stop());
    const contestants: Contestant[] = [{name: 'strongdoge', client: new OpenAI({baseURL: daemon.baseUrl, apiKey: 'bench', maxRetries: 0}), runs: emptyRuns()}];
    let llamaServerSkipped: string | undefined;
    let jinjaChatPath: Awaited<ReturnType<typeof probeJinjaChatPath>> | undefined;
    if (llamaServerAvailable()) {
        process.stderr.write('llama-server with its default (Jinja) chat path: one request per mode\n');
        jinjaChatPath = await probeJinjaChatPath(modelPath, logitBias);
        process.env.LLAMA_ARG_JINJA = 'false';
        const server = await startLlamaServer(modelPath, {threads: THREADS, parallel: PARALLEL, contextPerSlot: CONTEXT});
        stops.push(() => server.stop());
        contestants.push({name: 'llamaServer', client: new OpenAI({baseURL: server.baseUrl, apiKey: 'bench', maxRetries: 0}), runs: emptyRuns()});
    } else {
        llamaServerSkipped = 'llama-server not built: run scripts/build-llama-server.sh';
        process.stderr.write(`${llamaServerSkipped}; measuring strongdoge alone\n`);
    }

    // Warm-up, then REPEATS rounds; in each round every mode, the servers one after the other.
    for (let pass = -1; pass < REPEATS; pass++) {
        process.stderr.write(pass < 0 ? 'warm-up\n' : `round ${pass + 1}/${REPEATS}\n`);
        for (const mode of MODES)
            for (const contestant of contestants) {
                const run = await measureChat(contestant.client, mode, logitBias);
                if (pass >= 0)
                    contestant.runs[mode.mode].push(run);
            }
    }

    const results = Object.fromEntries(contestants.map(({name, runs}) =>
        [name, Object.fromEntries(MODES.map(({mode}) => [mode, summarize(mode, runs[mode])]))])) as
        Record<Contestant['name'], Record<Mode, ReturnType<typeof summarize>>>;
    const speed = (name: Contestant['name'], mode: Mode) => results[name][mode].generationTokensPerSecond;
    const servers = contestants.map(({name}) => name);
    const ratios = {
        jsonSchemaOverPlainTokensPerSecond: Object.fromEntries(servers.map((name) => [name, round(speed(name, 'json_schema') / speed(name, 'plain'), 3)])),
        jsonObjectOverPlainTokensPerSecond: Object.fromEntries(servers.map((name) => [name, round(speed(name, 'json_object') / speed(name, 'plain'), 3)])),
        ...(results.llamaServer && {
            strongdogeOverLlamaServerTokensPerSecond: Object.fromEntries(MODES.map(({mode}) =>
                [mode, round(speed('strongdoge', mode) / speed('llamaServer', mode), 3)])),
            strongdogeMinusLlamaServerTtftMs: Object.fromEntries(MODES.map(({mode}) =>
                [mode, round(results.strongdoge[mode].ttftMs - results.llamaServer[mode].ttftMs)]))
        })
    };

    const report = {
        benchmark: 'structured output: plain vs json_schema vs json_object, strongdoge proxy vs llama-server',
        date: new Date().toISOString(),
        machine: {cpu: cpus()[0]?.model, cores: cpus().length, node: process.version,
            loadAverage: {before: loadBefore, after: loadavg().map((value) => round(value)),
                oneMinuteDuring: loadDuring.length > 0 ? {median: round(median(loadDuring)), max: round(Math.max(...loadDuring))} : undefined}},
        engineBuild,
        durationSeconds: round((performance.now() - startedAt) / 1000, 1),
        settings: {model: MODEL_NAME, modelOptions: MODEL, threads: THREADS, parallelSequences: PARALLEL, contextPerSequence: CONTEXT,
            temperature: 0, byteTokensBanned: true, repeats: REPEATS, warmUp: 1, runsAlternate: true, streamed: true,
            endpoint: '/v1/chat/completions', prompt: PROMPT,
            llamaServerFlags: 'as bench/lib/llama-server.ts, plus --no-jinja (LLAMA_ARG_JINJA=false): see llamaServerDefaultChatPath',
            maxTokens: Object.fromEntries(MODES.map(({mode, maxTokens}) => [mode, maxTokens])), schema: SCHEMA,
            validation: 'ajv (draft 2020-12): json_schema replies against the schema, json_object replies against {type: object}; ' +
                'a reply that did not finish (finish_reason length) counts as invalid'},
        targets: {jsonSchemaOverPlainTokensPerSecond: 'near 1 (the grammar costs little per token)',
            strongdogeOverLlamaServerTokensPerSecond: 'as in inference.json for plain; no wider gap with a grammar'},
        results,
        ...(llamaServerSkipped && {llamaServer: {skipped: llamaServerSkipped}}),
        ...(jinjaChatPath && {llamaServerDefaultChatPath: {...jinjaChatPath, findings: [
            jinjaChatPath.replies.json_schema?.error !== undefined
                ? 'json_schema refused: its grammar starts with the generation prompt, which this SPM vocabulary tokenizes with a space after <|im_start|>'
                : 'json_schema accepted',
            jinjaChatPath.replies.json_object?.content === jinjaChatPath.replies.plain?.content
                ? 'json_object not enforced: the plain reply came back' : 'json_object changed the reply'
        ]}}),
        ratios
    };
    await mkdir(new URL('./results/', import.meta.url), {recursive: true});
    const out = new URL('./results/structured-output.json', import.meta.url);
    await writeFile(out, JSON.stringify(report, null, 2) + '\n');
    process.stdout.write(JSON.stringify({ratios, valid: Object.fromEntries(servers.map((name) => [name, {
        json_schema: `${results[name].json_schema.validOfFinished} valid of ${results[name].json_schema.finished} finished`,
        json_object: `${results[name].json_object.validOfFinished} valid of ${results[name].json_object.finished} finished`}]))}, null, 2) + '\n');
    process.stderr.write(`wrote ${out.pathname}\n`);
} finally {
    clearInterval(loadSampler);
    for (const stop of stops.reverse())
        await stop().catch(() => undefined);
    await rm(dir, {recursive: true, force: true});
}
