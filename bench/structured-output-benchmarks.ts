/**
 * `npm run bench:structured`: what enforcing `response_format` and tool calls costs. Generation tokens/s and TTFT
 * of a plain chat reply, a `json_schema` reply (strongdoge's own GBNF grammar, inference/json-schema/), a
 * `json_object` reply and a tool call (one function whose parameters are the json_schema row's schema, so that
 * beside that row it isolates what the call's syntax costs), on strongdoge's proxy and on llama.cpp's llama-server
 * with the same request, runs alternating between the two. The tools make the call's prompt about 9 times the
 * others', and decoding slows with context: a plain reply to a prompt of that length (the tools listed as a system
 * message) is the tool call's baseline. Every JSON reply and every call's arguments are validated with ajv. Every
 * measured request finds its prompt cached (an unmeasured one-token request with the same messages goes first), as
 * a client that repeats its prompt would. Writes bench/results/structured-output.json. Targets are reported, never
 * asserted.
 */
import {mkdir, mkdtemp, rm} from 'node:fs/promises';
import {loadavg, tmpdir} from 'node:os';
import {join} from 'node:path';
import {getLlama, resolveChatWrapper} from 'node-llama-cpp';
import OpenAI from 'openai';
import {writeDemoModel, type DemoModelOptions} from '../engine/demo/demo-model.js';
import {Ajv2020} from '../core/json-schema/ajv.js';
import {DEMO_TOOL_TOKENS} from '../engine/demo/demo-vocab.js';
import {tokensOfOpen, toolCallSyntaxOf} from '../engine/worker/tool-calling.js';
import {byteTokenBan} from '../harness/byte-token-ban.js';
import {startDaemon} from '../harness/cli-process.js';
import {llamaServerAvailable, startLlamaServer} from './lib/llama-server.js';
import {machine, writeReport} from './lib/report.js';
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
/** The tool-call row's one function: its arguments are what the json_schema row's reply is. */
const TOOL: OpenAI.ChatCompletionFunctionTool = {type: 'function', function: {name: 'list_parts', description: 'Records the parts of a swarm.', parameters: SCHEMA}};

type Mode = 'plain' | 'json_schema' | 'json_object' | 'plain_tool_prompt' | 'tool_call';
interface ModeSpec {
    mode: Mode,
    maxTokens: number,
    responseFormat?: OpenAI.ChatCompletionCreateParams['response_format'],
    /** A system message first: the tools as the template lists them in the tool call's prompt. */
    toolPrompt?: true,
    /** The tool-call row: not streamed, timed by the servers' own timings (see measureToolCall). */
    toolCall?: true
}
const MODES: ModeSpec[] = [
    {mode: 'plain', maxTokens: 256},
    // The tool call's baseline: a plain reply with a prompt as long as the call's. Not just before the tool call:
    // its prompt starts as the call's, which would leave the call's prompt half cached on strongdoge.
    {mode: 'plain_tool_prompt', maxTokens: 256, toolPrompt: true},
    // Room to finish: the grammar ends the reply.
    {mode: 'json_schema', maxTokens: 1024, responseFormat: {type: 'json_schema', json_schema: {name: 'parts', schema: SCHEMA}}},
    {mode: 'json_object', maxTokens: 256, responseFormat: {type: 'json_object'}},
    // `tool_choice: required` with one function (llama-server reads a named function as `auto`), no parallel calls.
    {mode: 'tool_call', maxTokens: 1024, toolCall: true}
];
/** The unmeasured tool call before each measured one (see measureToolCall): more than strongdoge writes itself. */
const COLD_CALL_MAX_TOKENS = 32;

const ajv = new Ajv2020({strict: false, validateFormats: false});
const validators: Record<Mode, ((value: unknown) => boolean) | undefined> = {
    plain: undefined,
    plain_tool_prompt: undefined,
    json_schema: ajv.compile(SCHEMA),
    // strongdoge's JSON mode writes an object; llama-server's (a schema of {}) writes any JSON value.
    json_object: ajv.compile({type: 'object'}),
    // Each call's arguments.
    tool_call: ajv.compile(SCHEMA)
};

/** What both servers put in a reply's `timings` (llama-server's own fields; strongdoge writes the same ones). */
interface ServerTimings {
    prompt_ms: number,
    /** From the first generated token to the last. */
    predicted_ms: number
}

interface Run {
    /** Why the request failed; the run is then left out of the timings. */
    error?: string,
    ttftMs: number,
    generationTokensPerSecond: number,
    /**
     * Tokens after the first over the server's own generation time (`timings.predicted_ms`, first token to last),
     * tokens counted as the tool-call row counts them (see measureToolCall).
     */
    serverGenerationTokensPerSecond: number,
    completionTokens: number,
    promptTokens: number,
    finishReason: string,
    content: string,
    /** The tool-call row: the calls the reply holds. */
    toolCalls?: {name: string, arguments: string}[],
    /** The tool-call row: completion tokens per second as the server counts them (strongdoge's include what it wrote itself). */
    countedTokensPerSecond?: number,
    /** The tool-call row: the unmeasured request before this one, with the prompt not cached. */
    coldTtftMs?: number,
    /** The tool-call row: the servers' `timings.prompt_ms`, of that request and of this one. */
    promptMs?: {cold: number, cached: number}
}

/** How a server is asked for a tool call (the tool-call row); see the comment where llama-server's is made. */
interface ToolCalling {
    client: OpenAI,
    /** Messages after the user's: llama-server's assistant prefill that starts the call. */
    prefill: OpenAI.ChatCompletionMessageParam[],
    /** Body fields of the unmeasured request before each measured one, so that it processes the whole prompt. */
    coldBody: Record<string, unknown>,
    /** Completion tokens the server writes itself, evaluated with the prompt: the call's opening on strongdoge. */
    writtenTokens: number
}

const failedRun = (error: unknown): Run => ({error: (error as Error).message, ttftMs: 0, generationTokensPerSecond: 0,
    serverGenerationTokensPerSecond: 0, completionTokens: 0, promptTokens: 0, finishReason: 'error', content: ''});

/** The tools as the demo template lists them in a tool call's prompt (set once the model is written). */
let toolPromptText = '';

function messagesFor({toolPrompt}: ModeSpec): OpenAI.ChatCompletionMessageParam[] {
    return [...toolPrompt ? [{role: 'system' as const, content: toolPromptText}] : [], {role: 'user', content: PROMPT}];
}

async function measureChat(contestant: Contestant, mode: ModeSpec, logitBias: Record<string, number>): Promise<Run> {
    try {
        return mode.toolCall ? await measureToolCall(contestant.toolCalling, mode, logitBias) : await measureStreamed(contestant.client, mode, logitBias);
    } catch (error) {
        return failedRun(error);
    }
}

async function measureStreamed(client: OpenAI, mode: ModeSpec, logitBias: Record<string, number>) {
    // The row's prompt cached, as the previous row's may differ (see the file's comment).
    await client.chat.completions.create({model: 'bench', messages: messagesFor(mode), max_tokens: 1, temperature: 0, logit_bias: logitBias});
    return await streamChat(client, mode, logitBias);
}

const serverTokensPerSecond = (tokens: number, timings: ServerTimings | undefined) =>
    timings !== undefined && timings.predicted_ms > 0 ? (tokens - 1) / (timings.predicted_ms / 1000) : 0;

async function streamChat(client: OpenAI, mode: ModeSpec, logitBias: Record<string, number>): Promise<Run> {
    const {maxTokens, responseFormat} = mode;
    const timer = new StreamTimer();
    let content = '';
    let completionTokens = 0;
    let promptTokens = 0;
    let finishReason = '';
    let timings: ServerTimings | undefined;
    const stream = await client.chat.completions.create({
        model: 'bench', messages: messagesFor(mode), max_tokens: maxTokens, temperature: 0,
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
        timings = (chunk as {timings?: ServerTimings}).timings ?? timings;
    }
    const {ttftMs, generationTokensPerSecond} = timer.finish(completionTokens);
    return {ttftMs, generationTokensPerSecond, serverGenerationTokensPerSecond: serverTokensPerSecond(completionTokens, timings),
        completionTokens, promptTokens, finishReason, content};
}

/** A request that is not streamed, with the client's wall time and the server's timings. */
async function timedCompletion(client: OpenAI, body: Record<string, unknown>) {
    const startedAt = performance.now();
    const completion = await client.chat.completions.create(body as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const wallMs = performance.now() - startedAt;
    const timings = (completion as {timings?: ServerTimings}).timings;
    if (timings === undefined)
        throw new Error('the reply has no timings');
    // Request sent → first token, as a streamed reply would show it: the wall time less the server's generation time.
    return {completion, timings, ttftMs: wallMs - timings.predicted_ms};
}

/**
 * One tool call, timed by the server: strongdoge sends each call whole when it is complete (streamed or not), so a
 * client sees no token arrive while a call is written and StreamTimer cannot time it. Both servers are therefore
 * timed the same way in this row: not streamed, generation tokens/s from usage.completion_tokens and the server's
 * `timings.predicted_ms` (first generated token to last, the span StreamTimer measures on the client), TTFT as the
 * client's wall time less `predicted_ms`. strongdoge counts the call's opening it writes itself (`writtenTokens`)
 * as completion tokens, though they are evaluated with the prompt and take no generation step: they are left out
 * of its tokens/s here, which counts sampled tokens on both servers (`countedTokensPerSecond` keeps its count).
 *
 * Before each measured call, the same request unmeasured, with the prompt not cached (`coldTtftMs`: the tools make
 * this prompt about 9 times the others'); after it both servers have this prompt cached, as every other row does.
 */
async function measureToolCall(calling: ToolCalling, {maxTokens}: ModeSpec, logitBias: Record<string, number>): Promise<Run> {
    const body = {model: 'bench', messages: [{role: 'user', content: PROMPT}, ...calling.prefill], temperature: 0, logit_bias: logitBias,
        tools: [TOOL], tool_choice: 'required', parallel_tool_calls: false};
    const cold = await timedCompletion(calling.client, {...body, ...calling.coldBody, max_tokens: COLD_CALL_MAX_TOKENS});
    const {completion, timings, ttftMs} = await timedCompletion(calling.client, {...body, max_tokens: maxTokens});
    const choice = completion.choices[0];
    const toolCalls = (choice?.message.tool_calls ?? []).flatMap((call) =>
        call.type === 'function' ? [{name: call.function.name, arguments: call.function.arguments}] : []);
    const completionTokens = completion.usage?.completion_tokens ?? 0;
    const sampledTokens = completionTokens - calling.writtenTokens;
    return {
        ttftMs, generationTokensPerSecond: serverTokensPerSecond(sampledTokens, timings), serverGenerationTokensPerSecond: serverTokensPerSecond(sampledTokens, timings),
        countedTokensPerSecond: serverTokensPerSecond(completionTokens, timings), coldTtftMs: cold.ttftMs,
        promptMs: {cold: cold.timings.prompt_ms, cached: timings.prompt_ms},
        completionTokens, promptTokens: completion.usage?.prompt_tokens ?? 0, finishReason: choice?.finish_reason ?? '',
        content: toolCalls[0]?.arguments ?? choice?.message.content ?? '', toolCalls
    };
}

function jsonProblem(validate: (value: unknown) => boolean, text: string): string | undefined {
    let value: unknown;
    try {
        value = JSON.parse(text);
    } catch {
        return 'not JSON';
    }
    if (validate(value))
        return undefined;
    const errors = (validate as unknown as {errors?: {instancePath: string, message?: string}[]}).errors ?? [];
    return errors.slice(0, 3).map((error) => `${error.instancePath || '/'} ${error.message}`).join('; ');
}

/** Why a finished reply is not what its mode asks for; undefined when it is (or when the mode asks for nothing). */
function replyProblem(mode: Mode, run: Run): string | undefined {
    const validate = validators[mode];
    if (validate === undefined)
        return undefined;
    if (run.error !== undefined)
        return `request failed: ${run.error}`;
    if (mode !== 'tool_call')
        return jsonProblem(validate, run.content);
    const calls = run.toolCalls ?? [];
    if (run.finishReason !== 'tool_calls')
        return `finish_reason ${run.finishReason}`;
    if (calls.length !== 1)
        return `${calls.length} calls`;
    if (calls[0]!.name !== TOOL.function.name)
        return `called ${calls[0]!.name}`;
    const problem = jsonProblem(validate, calls[0]!.arguments);
    return problem === undefined ? undefined : `arguments: ${problem}`;
}

function summarize(mode: Mode, runs: Run[]) {
    const timed = runs.filter((run) => run.error === undefined);
    // A reply cut short by max_tokens is incomplete by the client's choice: counted, not validated.
    const finished = runs.filter((run) => run.error !== undefined || run.finishReason !== 'length');
    const problems = finished.map((run) => replyProblem(mode, run));
    const sample = timed[0]?.content ?? '';
    const medianOf = (value: (run: Run) => number) => timed.length > 0 ? round(median(timed.map(value))) : 0;
    return {
        generationTokensPerSecond: medianOf((run) => run.generationTokensPerSecond),
        ttftMs: medianOf((run) => run.ttftMs),
        ...(mode === 'tool_call' ? {
            measuredBy: 'server timings, not streamed (see toolCallRow)',
            countedTokensPerSecond: medianOf((run) => run.countedTokensPerSecond ?? 0),
            coldPromptTtftMs: medianOf((run) => run.coldTtftMs ?? 0),
            // The servers' own prompt times: the whole prompt, then (cached) its last token and strongdoge's written opening.
            serverPromptMs: {cold: medianOf((run) => run.promptMs?.cold ?? 0), cached: medianOf((run) => run.promptMs?.cached ?? 0)}
        } : {
            // The same server-timed measure as the tool-call row's, for ratios to it.
            serverGenerationTokensPerSecond: medianOf((run) => run.serverGenerationTokensPerSecond)
        }),
        generationTokensPerSecondPerRun: timed.map((run) => round(run.generationTokensPerSecond, 1)),
        completionTokensPerRun: runs.map((run) => run.completionTokens),
        promptTokens: timed[0]?.promptTokens,
        finishReasons: runs.map((run) => run.finishReason),
        runs: runs.length,
        ...(timed.length < runs.length && {failedRequests: [...new Set(runs.flatMap((run) => run.error === undefined ? [] : [run.error]))]}),
        ...(validators[mode] !== undefined && {
            finished: finished.length,
            validOfFinished: problems.filter((problem) => problem === undefined).length,
            problems: [...new Set(problems.filter((problem) => problem !== undefined))]
        }),
        // The first measured reply (the tool-call row: its call's arguments), clipped: what the grammar let through.
        sampleReply: sample.length > 400 ? `${sample.slice(0, 400)}…` : sample
    };
}

/** A tool call streamed, once per server after the rounds, unmeasured: how each server's calls arrive. */
async function streamedToolCallShape(calling: ToolCalling, logitBias: Record<string, number>, nonStreamed: string | undefined) {
    const startedAt = performance.now();
    const stream = await calling.client.chat.completions.create({model: 'bench', messages: [{role: 'user', content: PROMPT}, ...calling.prefill],
        temperature: 0, logit_bias: logitBias, tools: [TOOL], tool_choice: 'required', parallel_tool_calls: false, max_tokens: 1024, stream: true});
    let chunks = 0;
    const argumentPieces: number[] = [];
    let args = '';
    let firstCallChunkMs: number | undefined;
    let finishReason = '';
    for await (const chunk of stream) {
        chunks++;
        for (const call of chunk.choices[0]?.delta?.tool_calls ?? []) {
            firstCallChunkMs ??= performance.now() - startedAt;
            if (call.function?.arguments !== undefined) {
                argumentPieces.push(call.function.arguments.length);
                args += call.function.arguments;
            }
        }
        finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
    }
    return {chunks, chunksWithArguments: argumentPieces.length, longestArgumentsPiece: Math.max(0, ...argumentPieces),
        firstCallChunkMs: round(firstCallChunkMs ?? 0), wallMs: round(performance.now() - startedAt), finishReason,
        argumentsAsNotStreamed: args === nonStreamed};
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
    const reply = async (extra: Partial<OpenAI.ChatCompletionCreateParamsNonStreaming>) => {
        try {
            const completion = await client.chat.completions.create({model: 'bench', messages: [{role: 'user', content: PROMPT}],
                max_tokens: 24, temperature: 0, logit_bias: logitBias, ...extra});
            const message = completion.choices[0]?.message;
            return {content: message?.content ?? '', ...(message?.tool_calls !== undefined && {toolCalls: message.tool_calls.length})};
        } catch (error) {
            return {error: (error as Error).message};
        }
    };
    try {
        const replies: Record<string, {content?: string, toolCalls?: number, error?: string}> = {};
        for (const {mode, responseFormat, toolPrompt, toolCall} of MODES)
            if (!toolPrompt && !toolCall)
                replies[mode] = await reply(responseFormat ? {response_format: responseFormat} : {});
        // The tool-call row's request, and the same with the function named.
        replies.tool_call = await reply({tools: [TOOL], tool_choice: 'required', parallel_tool_calls: false});
        replies.tool_call_named = await reply({tools: [TOOL], tool_choice: {type: 'function', function: {name: TOOL.function.name}}, parallel_tool_calls: false});
        return {jinja: true, maxTokens: 24, replies};
    } finally {
        await server.stop();
    }
}

type Contestant = {name: 'strongdoge' | 'llamaServer', client: OpenAI, toolCalling: ToolCalling, runs: Record<Mode, Run[]>};

/**
 * llama-server's tool calls (the tool-call row) on an instance of their own. Its tools need `--jinja` (without it a
 * request with tools is refused: "tools param requires --jinja flag"), and on its Jinja path two things stop this
 * model's calls, which llamaServerDefaultChatPath shows:
 * - its call grammar, like its json_schema grammar, starts with the generation prompt `<|im_start|>assistant\n` and is
 *   fed that prompt's tokens, which llama.cpp's SPM tokenizer writes with a space after the special token (` as`,
 *   `si`, …): the grammar refuses them and the request fails ("Failed to initialize samplers"). This instance reads
 *   the same model file with `tokenizer.ggml.add_space_prefix` overridden to false, so that the generation prompt
 *   tokenizes as the grammar spells it. Its prompts then lack those spaces after special tokens (a few tokens fewer
 *   than strongdoge's, and other random text in the arguments); the weights, template and grammar are the same.
 * - `tool_choice: required` lets the model write text before its call (the grammar allows any content up to
 *   `<tool_call>\n`, and more calls after it whatever parallel_tool_calls says), and a named function is read as
 *   `auto`. This model never starts a call by itself, so it writes text to max_tokens. strongdoge, when a call is
 *   required, writes the call's opening itself; llama-server is sent the opening's tag as an assistant prefill
 *   (`<tool_call>\n`, which it continues: its grammar then holds the rest of the call, and it parses the reply into
 *   tool_calls as it would a model's own).
 * The other rows stay on the `--no-jinja` instance, as before.
 */
const TOOL_CALL_LLAMA_SERVER_FLAGS = ['--jinja', '--override-kv', 'tokenizer.ggml.add_space_prefix=bool:false'];
const LLAMA_SERVER_TOOL_PREFILL = `${DEMO_TOOL_TOKENS[0]}\n`;

/**
 * llama-server turns flash attention on where it can (`-fa auto`, its default; it does on this CPU). strongdoge's
 * node-llama-cpp is left at its own default, auto as well, which enables it too (its prebuilt binaries); yet on one
 * CPU thread this llama-server build's generation slows far more with context than strongdoge's, and with `-fa off`
 * it does not. That, not the call, is most of the two servers' gap in the rows with the tools' long prompt. A
 * control, after the rounds: the plain rows on the measured llama-server and on one with `-fa off`, alternating.
 */
async function flashAttentionControl(modelPath: string, measured: OpenAI, logitBias: Record<string, number>) {
    const server = await startLlamaServer(modelPath, {threads: THREADS, parallel: PARALLEL, contextPerSlot: CONTEXT, extraArgs: ['-fa', 'off']});
    try {
        const clients = {auto: measured, off: new OpenAI({baseURL: server.baseUrl, apiKey: 'bench', maxRetries: 0})};
        const modes = MODES.filter(({mode}) => mode === 'plain' || mode === 'plain_tool_prompt');
        const runs: Record<string, Record<string, number[]>> = Object.fromEntries(Object.keys(clients).map((setting) =>
            [setting, Object.fromEntries(modes.map(({mode}) => [mode, []]))]));
        for (let pass = 0; pass < Math.min(REPEATS, 3); pass++)
            for (const mode of modes)
                for (const [setting, client] of Object.entries(clients)) {
                    const run = await measureStreamed(client, mode, logitBias);
                    runs[setting]![mode.mode]!.push(run.generationTokensPerSecond);
                }
        const tokensPerSecond = Object.fromEntries(Object.entries(runs).map(([setting, byMode]) =>
            [setting, Object.fromEntries(Object.entries(byMode).map(([mode, speeds]) => [mode, round(median(speeds))]))]));
        return {flags: '-fa off (the measured instance: auto)', runs: Math.min(REPEATS, 3), generationTokensPerSecond: tokensPerSecond,
            offOverAuto: Object.fromEntries(modes.map(({mode}) => [mode, round(tokensPerSecond.off![mode]! / tokensPerSecond.auto![mode]!, 3)]))};
    } finally {
        await server.stop();
    }
}
/**
 * As strongdoge's engine renders a tool call (engine/worker/tool-calling.ts): the tokens of the call's opening it
 * writes itself when a call is required, and the system turn in which the template lists the tools.
 */
async function strongdogeToolCallPrompt(llama: Awaited<ReturnType<typeof getLlama>>, modelPath: string) {
    const model = await llama.loadModel({modelPath});
    try {
        const chatWrapper = resolveChatWrapper(model);
        const syntax = toolCallSyntaxOf(chatWrapper);
        if (syntax === undefined)
            throw new Error('the demo template writes calls in a way strongdoge cannot hold to a grammar');
        const tokens = tokensOfOpen(model, syntax.open);
        const {contextText} = chatWrapper.generateContextState({chatHistory: [{type: 'user', text: PROMPT}, {type: 'model', response: []}],
            availableFunctions: {[TOOL.function.name]: {description: TOOL.function.description, params: SCHEMA as never}}, documentFunctionParams: true});
        const system = /<\|im_start\|>system\n([\s\S]*?)<\|im_end\|>/.exec(contextText.toString())?.[1];
        if (system === undefined)
            throw new Error('the demo template lists no tools in a system turn');
        return {written: {open: syntax.open, tokens: tokens.length}, system};
    } finally {
        await model.dispose();
    }
}

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
    const toolCallPrompt = await strongdogeToolCallPrompt(llama, modelPath);
    const writtenCall = toolCallPrompt.written;
    toolPromptText = toolCallPrompt.system;
    await llama.dispose();

    const emptyRuns = (): Record<Mode, Run[]> => ({plain: [], json_schema: [], json_object: [], plain_tool_prompt: [], tool_call: []});
    const daemon = await startDaemon(['--model', 'bench', '--data-dir', dataDir, '--threads', String(THREADS),
        '--parallel', String(PARALLEL), '--context-size', String(CONTEXT)]);
    stops.push(() => daemon.stop());
    const strongdogeClient = new OpenAI({baseURL: daemon.baseUrl, apiKey: 'bench', maxRetries: 0});
    const contestants: Contestant[] = [{name: 'strongdoge', client: strongdogeClient,
        // Its one sequence held another row's prompt: the unmeasured call processes the whole prompt as it is.
        toolCalling: {client: strongdogeClient, prefill: [], coldBody: {}, writtenTokens: writtenCall.tokens}, runs: emptyRuns()}];
    let llamaServerSkipped: string | undefined;
    let jinjaChatPath: Awaited<ReturnType<typeof probeJinjaChatPath>> | undefined;
    let toolCallWithoutPrefill: Record<string, unknown> | undefined;
    if (llamaServerAvailable()) {
        process.stderr.write('llama-server with its default (Jinja) chat path: one request per mode\n');
        jinjaChatPath = await probeJinjaChatPath(modelPath, logitBias);
        const toolServer = await startLlamaServer(modelPath, {threads: THREADS, parallel: PARALLEL, contextPerSlot: CONTEXT, extraArgs: TOOL_CALL_LLAMA_SERVER_FLAGS});
        stops.push(() => toolServer.stop());
        const toolClient = new OpenAI({baseURL: toolServer.baseUrl, apiKey: 'bench', maxRetries: 0});
        // The tool-call row's request without the prefill, once: what `required` alone gives with this model.
        try {
            const completion = await toolClient.chat.completions.create({model: 'bench', messages: [{role: 'user', content: PROMPT}], max_tokens: 24,
                temperature: 0, logit_bias: logitBias, tools: [TOOL], tool_choice: 'required', parallel_tool_calls: false});
            toolCallWithoutPrefill = {maxTokens: 24, finishReason: completion.choices[0]?.finish_reason, content: completion.choices[0]?.message.content,
                toolCalls: completion.choices[0]?.message.tool_calls?.length ?? 0};
        } catch (error) {
            toolCallWithoutPrefill = {error: (error as Error).message};
        }
        process.env.LLAMA_ARG_JINJA = 'false';
        const server = await startLlamaServer(modelPath, {threads: THREADS, parallel: PARALLEL, contextPerSlot: CONTEXT});
        stops.push(() => server.stop());
        contestants.push({name: 'llamaServer', client: new OpenAI({baseURL: server.baseUrl, apiKey: 'bench', maxRetries: 0}),
            toolCalling: {client: toolClient, prefill: [{role: 'assistant', content: LLAMA_SERVER_TOOL_PREFILL}], coldBody: {cache_prompt: false}, writtenTokens: 0},
            runs: emptyRuns()});
    } else {
        llamaServerSkipped = 'llama-server not built: run scripts/build-llama-server.sh';
        process.stderr.write(`${llamaServerSkipped}; measuring strongdoge alone\n`);
    }

    // Warm-up, then REPEATS rounds; in each round every mode, the servers one after the other.
    for (let pass = -1; pass < REPEATS; pass++) {
        process.stderr.write(pass < 0 ? 'warm-up\n' : `round ${pass + 1}/${REPEATS}\n`);
        for (const mode of MODES)
            for (const contestant of contestants) {
                const run = await measureChat(contestant, mode, logitBias);
                if (pass >= 0)
                    contestant.runs[mode.mode].push(run);
            }
    }

    const results = Object.fromEntries(contestants.map(({name, runs}) =>
        [name, Object.fromEntries(MODES.map(({mode}) => [mode, summarize(mode, runs[mode])]))])) as
        Record<Contestant['name'], Record<Mode, ReturnType<typeof summarize>>>;
    const speed = (name: Contestant['name'], mode: Mode) => results[name][mode].generationTokensPerSecond;
    /** Server-timed tokens/s, the tool-call row's measure, for ratios to that row. */
    const serverSpeed = (name: Contestant['name'], mode: Mode) => {
        const summary = results[name][mode];
        return 'serverGenerationTokensPerSecond' in summary ? summary.serverGenerationTokensPerSecond : summary.generationTokensPerSecond;
    };
    const servers = contestants.map(({name}) => name);
    const ratios = {
        jsonSchemaOverPlainTokensPerSecond: Object.fromEntries(servers.map((name) => [name, round(speed(name, 'json_schema') / speed(name, 'plain'), 3)])),
        jsonObjectOverPlainTokensPerSecond: Object.fromEntries(servers.map((name) => [name, round(speed(name, 'json_object') / speed(name, 'plain'), 3)])),
        // What a prompt as long as the tool call's costs per generated token, without a grammar.
        plainToolPromptOverPlainTokensPerSecond: Object.fromEntries(servers.map((name) =>
            [name, round(speed(name, 'plain_tool_prompt') / speed(name, 'plain'), 3)])),
        // Tool call ratios by the servers' timings (the tool-call row cannot be timed on the stream; see toolCallRow).
        // Over plain_tool_prompt (the same context length): what the call's grammar and syntax cost.
        toolCallOverPlainToolPromptTokensPerSecond: Object.fromEntries(servers.map((name) =>
            [name, round(serverSpeed(name, 'tool_call') / serverSpeed(name, 'plain_tool_prompt'), 3)])),
        // Over plain and json_schema (a short prompt): the call's grammar and syntax and its longer prompt together.
        toolCallOverPlainTokensPerSecond: Object.fromEntries(servers.map((name) => [name, round(serverSpeed(name, 'tool_call') / serverSpeed(name, 'plain'), 3)])),
        toolCallOverJsonSchemaTokensPerSecond: Object.fromEntries(servers.map((name) => [name, round(serverSpeed(name, 'tool_call') / serverSpeed(name, 'json_schema'), 3)])),
        ...(results.llamaServer && {
            strongdogeOverLlamaServerTokensPerSecond: Object.fromEntries(MODES.map(({mode}) =>
                [mode, round(speed('strongdoge', mode) / speed('llamaServer', mode), 3)])),
            strongdogeMinusLlamaServerTtftMs: Object.fromEntries(MODES.map(({mode}) =>
                [mode, round(results.strongdoge[mode].ttftMs - results.llamaServer[mode].ttftMs)]))
        })
    };

    let flashAttention: Awaited<ReturnType<typeof flashAttentionControl>> | undefined;
    const llamaServer = contestants.find(({name}) => name === 'llamaServer');
    if (llamaServer !== undefined) {
        process.stderr.write('llama-server with flash attention off: the plain rows\n');
        flashAttention = await flashAttentionControl(modelPath, llamaServer.client, logitBias);
    }

    // One streamed call per server, unmeasured: how each sends a call.
    const streamedToolCalls: Record<string, unknown> = {};
    for (const {name, toolCalling, runs} of contestants)
        try {
            streamedToolCalls[name] = await streamedToolCallShape(toolCalling, logitBias, runs.tool_call.at(-1)?.toolCalls?.[0]?.arguments);
        } catch (error) {
            streamedToolCalls[name] = {error: (error as Error).message};
        }

    const report = {
        benchmark: 'structured output: plain vs json_schema vs json_object vs a tool call, strongdoge proxy vs llama-server',
        date: new Date().toISOString(),
        machine: machine({loadAverage: {before: loadBefore, after: loadavg().map((value) => round(value)),
            oneMinuteDuring: loadDuring.length > 0 ? {median: round(median(loadDuring)), max: round(Math.max(...loadDuring))} : undefined}}),
        engineBuild,
        durationSeconds: round((performance.now() - startedAt) / 1000, 1),
        settings: {model: MODEL_NAME, modelOptions: MODEL, threads: THREADS, parallelSequences: PARALLEL, contextPerSequence: CONTEXT,
            temperature: 0, byteTokensBanned: true, repeats: REPEATS, warmUp: 1, runsAlternate: true, streamed: 'every row but tool_call (see toolCallRow)',
            endpoint: '/v1/chat/completions', prompt: PROMPT,
            llamaServerFlags: 'as bench/lib/llama-server.ts, plus --no-jinja (LLAMA_ARG_JINJA=false): see llamaServerDefaultChatPath; ' +
                `the tool-call row on a second instance with ${TOOL_CALL_LLAMA_SERVER_FLAGS.join(' ')}: see toolCallRow`,
            maxTokens: Object.fromEntries(MODES.map(({mode, maxTokens}) => [mode, maxTokens])), schema: SCHEMA,
            tool: TOOL, toolChoice: 'required', parallelToolCalls: false, toolPromptSystemMessage: toolPromptText,
            promptCached: 'an unmeasured request with the same messages (max_tokens 1; the tool call: the same request, max_tokens ' +
                `${COLD_CALL_MAX_TOKENS}, not cached) before every measured one`,
            validation: 'ajv (draft 2020-12): json_schema replies against the schema, json_object replies against {type: object}, a tool call ' +
                'reply must finish with tool_calls and hold one call of list_parts whose arguments the schema validates; ' +
                'a reply that did not finish (finish_reason length) is not validated (finished counts the others)'},
        targets: {jsonSchemaOverPlainTokensPerSecond: 'near 1 (the grammar costs little per token)',
            toolCallOverPlainToolPromptTokensPerSecond: 'near 1 (the call\'s grammar and syntax cost little per token; its longer prompt is ' +
                'plainToolPromptOverPlain\'s cost)',
            strongdogeOverLlamaServerTokensPerSecond: 'as in inference.json for plain; no wider gap with a grammar or a tool call'},
        results,
        toolCallRow: {
            note: 'Not streamed on either server: strongdoge sends a call whole when it is complete, so no token of it reaches a streaming client ' +
                'before the end (see streamedToolCalls). Both servers timed alike: generation tokens/s = (sampled completion tokens - 1) / ' +
                'timings.predicted_ms (first generated token to last); TTFT = wall time of the request - timings.predicted_ms, with the prompt ' +
                'cached (an unmeasured request just before, with the prompt not cached, gives coldPromptTtftMs). strongdoge writes the opening of ' +
                `a required call itself (${JSON.stringify(writtenCall.open)}, ${writtenCall.tokens} tokens, evaluated with the prompt) and counts ` +
                'those tokens as completion tokens: they are left out of its tokens/s (countedTokensPerSecond keeps them). ' +
                'Ratios to other rows use those rows\' server-timed tokens/s (serverGenerationTokensPerSecond). The tools make the prompt ' +
                'about 9 times the other rows\', and decoding slows with context: plain_tool_prompt (a plain reply, the same tools text as a ' +
                'system message, no tools) is the baseline at that length, so toolCallOverPlainToolPrompt is what the call\'s grammar and ' +
                'syntax cost, toolCallOverPlain that and the longer prompt together.',
            strongdogeWrittenOpening: writtenCall,
            ...(contestants.length > 1 && {llamaServer: {
                flags: TOOL_CALL_LLAMA_SERVER_FLAGS,
                assistantPrefill: LLAMA_SERVER_TOOL_PREFILL,
                why: 'tools need --jinja; on the Jinja path the call grammar is fed the generation prompt, which the SPM tokenizer writes with a ' +
                    'space after <|im_start|> (refused: see llamaServerDefaultChatPath.replies.tool_call), hence add_space_prefix=false on this ' +
                    'instance; tool_choice required lets the model write text before its call, and this model never starts one ' +
                    '(withoutPrefill), hence the call tag as an assistant prefill, which strongdoge writes itself',
                withoutPrefill: toolCallWithoutPrefill,
                coldRequest: {cache_prompt: false}
            }}),
            streamedToolCalls
        },
        ...(flashAttention && {llamaServerFlashAttention: {note: 'llama-server enables flash attention by default where it can (-fa auto; ' +
            'it does here; strongdoge\'s node-llama-cpp is at auto too and enables it as well); with it this llama-server build\'s generation ' +
            'slows far more with context than strongdoge\'s, which is most of the servers\' gap in plain_tool_prompt and tool_call. ' +
            'Measured after the rounds, llama-server alone, both settings alternating.',
        ...flashAttention}}),
        ...(llamaServerSkipped && {llamaServer: {skipped: llamaServerSkipped}}),
        ...(jinjaChatPath && {llamaServerDefaultChatPath: {...jinjaChatPath, findings: [
            jinjaChatPath.replies.json_schema?.error !== undefined
                ? 'json_schema refused: its grammar starts with the generation prompt, which this SPM vocabulary tokenizes with a space after <|im_start|>'
                : 'json_schema accepted',
            jinjaChatPath.replies.json_object?.content === jinjaChatPath.replies.plain?.content
                ? 'json_object not enforced: the plain reply came back' : 'json_object changed the reply',
            jinjaChatPath.replies.tool_call?.error !== undefined
                ? 'tool_choice required refused: the call grammar starts with the generation prompt, as json_schema\'s does'
                : 'tool_choice required accepted',
            jinjaChatPath.replies.tool_call_named?.error === undefined && jinjaChatPath.replies.tool_call_named?.toolCalls === undefined
                ? 'a named tool_choice is not enforced (read as auto): text came back, no call' : 'a named tool_choice was enforced'
        ]}}),
        ratios
    };
    const validity = (name: Contestant['name'], mode: Mode) => {
        const summary = results[name][mode];
        return 'finished' in summary ? `${summary.validOfFinished} valid of ${summary.finished} finished` : '';
    };
    await writeReport('structured-output', report, {ratios, valid: Object.fromEntries(servers.map((name) => [name, {
        json_schema: validity(name, 'json_schema'), json_object: validity(name, 'json_object'), tool_call: validity(name, 'tool_call')}]))});
} finally {
    clearInterval(loadSampler);
    for (const stop of stops.reverse())
        await stop().catch(() => undefined);
    await rm(dir, {recursive: true, force: true});
}
