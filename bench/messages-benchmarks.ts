/**
 * `npm run bench:messages`: what Anthropic's Messages API costs beside OpenAI's chat route on the same node. The same
 * greedy conversation is streamed through `/v1/messages` (the official @anthropic-ai/sdk) and `/v1/chat/completions`
 * (the official openai client), runs alternating between the two, then sent without streaming through each. Reports
 * generation tokens/s and time to first token per route and their ratio (target: Messages ≥ 0.98× chat).
 * Writes bench/results/messages.json. Targets are reported, never asserted.
 */
import {mkdir, mkdtemp, rm} from 'node:fs/promises';
import {loadavg, tmpdir} from 'node:os';
import {join} from 'node:path';
import OpenAI from 'openai';
import {writeDemoModel, type DemoModelOptions} from '../engine/demo/demo-model.js';
import {anthropicClient, greedy} from '../harness/anthropic-client.js';
import {startDaemon} from '../harness/cli-process.js';
import {machine, writeReport} from './lib/report.js';
import {median, round} from './lib/statistics.js';
import {StreamTimer, summarizeStreams, type StreamMeasurement} from './lib/stream-measurement.js';

const THREADS = 1;
const REPEATS = Number(process.env.BENCH_REPEATS ?? 9);
const MAX_TOKENS = 256;
const MODEL_NAME = 'medium (12 layers, width 768, ~86M params)';
/** The inference benchmark's "medium" model: never ends by itself, so every reply runs to max_tokens. */
const MODEL: DemoModelOptions = {layers: 12, width: 768, headCount: 12, feedForwardLength: 2048, endsText: false};
const SYSTEM = 'You are a helpful assistant on a network of hobbyists who pool their GPUs.';
const QUESTION = 'Explain in a few paragraphs how a model is split into layer shards across peers.';

type Route = 'chat' | 'messages';

async function streamChat(client: OpenAI): Promise<StreamMeasurement> {
    const timer = new StreamTimer();
    let completionTokens = 0;
    const stream = await client.chat.completions.create({
        model: 'demo', messages: [{role: 'system', content: SYSTEM}, {role: 'user', content: QUESTION}], max_tokens: MAX_TOKENS, temperature: 0,
        stream: true, stream_options: {include_usage: true}
    });
    for await (const chunk of stream) {
        if (chunk.choices[0]?.delta.content)
            timer.textArrived();
        completionTokens = chunk.usage?.completion_tokens ?? completionTokens;
    }
    return timer.finish(completionTokens);
}

async function streamMessages(client: ReturnType<typeof anthropicClient>): Promise<StreamMeasurement> {
    const timer = new StreamTimer();
    let completionTokens = 0;
    const stream = await client.messages.create(greedy({
        model: 'demo', system: SYSTEM, messages: [{role: 'user' as const, content: QUESTION}], max_tokens: MAX_TOKENS, stream: true as const
    }));
    for await (const event of stream) {
        if (event.type === 'content_block_delta' && event.delta.type === 'text_delta' && event.delta.text !== '')
            timer.textArrived();
        if (event.type === 'message_delta')
            completionTokens = event.usage.output_tokens;
    }
    return timer.finish(completionTokens);
}

/** A reply not streamed: the request's wall time as the client sees it. */
async function wholeMs(route: Route, chat: OpenAI, messages: ReturnType<typeof anthropicClient>) {
    const startedAt = performance.now();
    const tokens = route === 'chat'
        ? (await chat.chat.completions.create({
            model: 'demo', messages: [{role: 'system', content: SYSTEM}, {role: 'user', content: QUESTION}], max_tokens: MAX_TOKENS, temperature: 0
        })).usage!.completion_tokens
        : (await messages.messages.create(greedy({model: 'demo', system: SYSTEM, messages: [{role: 'user' as const, content: QUESTION}], max_tokens: MAX_TOKENS})))
            .usage.output_tokens;
    if (tokens !== MAX_TOKENS)
        throw new Error(`${route} generated ${tokens} tokens, not ${MAX_TOKENS}`);
    return performance.now() - startedAt;
}

const dir = await mkdtemp(join(tmpdir(), 'strongdoge-bench-messages-'));
try {
    const dataDir = join(dir, 'data');
    await mkdir(join(dataDir, 'models'), {recursive: true});
    await writeDemoModel(join(dataDir, 'models', 'demo.gguf'), MODEL);
    const daemon = await startDaemon(['--model', 'demo', '--data-dir', dataDir, '--threads', String(THREADS), '--parallel', '1']);
    try {
        const chat = new OpenAI({baseURL: daemon.baseUrl, apiKey: 'unused', maxRetries: 0});
        const messages = anthropicClient(daemon.origin);
        // Warm-up, unmeasured: the prompt is cached for every measured run on both routes alike.
        await streamChat(chat);
        await streamMessages(messages);
        const streamed: Record<Route, StreamMeasurement[]> = {chat: [], messages: []};
        const whole: Record<Route, number[]> = {chat: [], messages: []};
        for (let run = 0; run < REPEATS; run++) {
            // Alternating, and in turn first: neither route gains from the machine's drift.
            const order: Route[] = run % 2 === 0 ? ['chat', 'messages'] : ['messages', 'chat'];
            for (const route of order)
                streamed[route].push(route === 'chat' ? await streamChat(chat) : await streamMessages(messages));
            for (const route of order)
                whole[route].push(await wholeMs(route, chat, messages));
        }
        const chatStream = summarizeStreams(streamed.chat);
        const messagesStream = summarizeStreams(streamed.messages);
        const chatWholeMs = round(median(whole.chat));
        const messagesWholeMs = round(median(whole.messages));
        const report = {
            benchmark: 'Anthropic Messages API against OpenAI chat completions, same node, same greedy request',
            machine: machine({loadavg: loadavg().map((value) => round(value))}),
            model: MODEL_NAME,
            threads: THREADS,
            maxTokens: MAX_TOKENS,
            repeats: REPEATS,
            streamed: {chat: chatStream, messages: messagesStream},
            notStreamed: {chatWallMs: chatWholeMs, messagesWallMs: messagesWholeMs},
            ratios: {
                generationTokensPerSecond: round(messagesStream.generationTokensPerSecond / chatStream.generationTokensPerSecond, 3),
                // Lower is better for times: chat's over Messages', so that ≥ 0.98 means as fast.
                ttft: round(chatStream.ttftMs / messagesStream.ttftMs, 3),
                notStreamedWall: round(chatWholeMs / messagesWholeMs, 3)
            },
            target: 'Messages ≥ 0.98× chat completions in tokens/s and time to first token'
        };
        await writeReport('messages', report, {streamed: report.streamed, notStreamed: report.notStreamed, ratios: report.ratios});
    } finally {
        await daemon.stop();
    }
} finally {
    await rm(dir, {recursive: true, force: true});
}
