import type OpenAI from 'openai';
import {waitFor} from '../../harness/cli-process.js';
import {median, round} from './statistics.js';

/** One streamed generation as a client sees it. */
export interface StreamMeasurement {
    /** Request sent → first text chunk received. */
    ttftMs: number,
    completionTokens: number,
    /** Tokens after the first, over the time between the first and the last chunk. */
    generationTokensPerSecond: number,
    wallMs: number
}

export interface CompletionLoad {
    model: string,
    prompt: string,
    maxTokens: number,
    logitBias: Record<string, number>
}

/** Times one generation from the request to each piece of text that arrives. */
export class StreamTimer {
    private readonly startedAt = performance.now();
    private firstAt: number | undefined;
    private lastAt = this.startedAt;

    textArrived() {
        this.firstAt ??= performance.now();
        this.lastAt = performance.now();
    }

    finish(completionTokens: number): StreamMeasurement {
        const first = this.firstAt ?? this.lastAt;
        return {
            ttftMs: first - this.startedAt,
            completionTokens,
            generationTokensPerSecond: this.lastAt > first ? (completionTokens - 1) / ((this.lastAt - first) / 1000) : 0,
            wallMs: performance.now() - this.startedAt
        };
    }
}

/** Medians of repeated streams, as reports give them. */
export function summarizeStreams(runs: StreamMeasurement[]) {
    return {
        generationTokensPerSecond: round(median(runs.map((run) => run.generationTokensPerSecond))),
        ttftMs: round(median(runs.map((run) => run.ttftMs))),
        completionTokens: median(runs.map((run) => run.completionTokens)),
        runs: runs.length
    };
}

/** summarizeStreams with the mean time per token and each run's tokens/s: for reports that compare runs of one setup. */
export function summarizeRuns(runs: {measurement: StreamMeasurement}[]) {
    const tokensPerSecond = median(runs.map((run) => run.measurement.generationTokensPerSecond));
    return {
        generationTokensPerSecond: round(tokensPerSecond),
        msPerToken: round(1000 / tokensPerSecond, 3),
        ttftMs: round(median(runs.map((run) => run.measurement.ttftMs))),
        completionTokens: median(runs.map((run) => run.measurement.completionTokens)),
        runs: runs.length,
        tokensPerSecondEachRun: runs.map((run) => round(run.measurement.generationTokensPerSecond))
    };
}

export async function measureStreamedCompletion(client: OpenAI, load: CompletionLoad): Promise<StreamMeasurement> {
    const timer = new StreamTimer();
    let completionTokens = 0;
    const stream = await client.completions.create({
        model: load.model, prompt: load.prompt, max_tokens: load.maxTokens, temperature: 0,
        logit_bias: load.logitBias, stream: true, stream_options: {include_usage: true}
    });
    for await (const chunk of stream) {
        if (chunk.choices[0]?.text)
            timer.textArrived();
        completionTokens = chunk.usage?.completion_tokens ?? completionTokens;
    }
    return timer.finish(completionTokens);
}

/** N clients at once; aggregate tokens/s = all completion tokens over the wall time of the whole batch. */
export async function measureConcurrentClients(client: OpenAI, load: CompletionLoad, clients: number) {
    const startedAt = performance.now();
    const runs = await Promise.all(Array.from({length: clients}, (_, index) =>
        measureStreamedCompletion(client, {...load, prompt: `${load.prompt} (${index})`})));
    const wallMs = performance.now() - startedAt;
    const tokens = runs.reduce((sum, run) => sum + run.completionTokens, 0);
    return {aggregateTokensPerSecond: tokens / (wallMs / 1000), tokens, wallMs, ttftMs: Math.max(...runs.map((run) => run.ttftMs))};
}

/** Chunks to wait for on every running stream before the long prompt is sent (they are decoding steadily by then). */
const STEADY_CHUNKS = 16;

/**
 * How much a long prompt arriving stalls the streams already running: `running` streams decode, then a request with
 * `longPrompt` arrives; the worst gap between two chunks of a running stream while that prompt is processed
 * (request sent → its answer) is what their users see as a freeze.
 */
export async function measurePromptInterference(client: OpenAI, load: CompletionLoad, running: number, longPrompt: string) {
    const arrivals: number[][] = Array.from({length: running}, () => []);
    const streams = arrivals.map(async (times, index) => {
        const stream = await client.completions.create({
            model: load.model, prompt: `${load.prompt} (${index})`, max_tokens: load.maxTokens, temperature: 0,
            logit_bias: load.logitBias, stream: true
        });
        for await (const chunk of stream)
            if (chunk.choices[0]?.text)
                times.push(performance.now());
    });
    await waitFor(() => arrivals.every((times) => times.length >= STEADY_CHUNKS), 120_000, 5);
    const sentAt = performance.now();
    const long = await client.completions.create({model: load.model, prompt: longPrompt, max_tokens: 4, temperature: 0, logit_bias: load.logitBias});
    const answeredAt = performance.now();
    await Promise.all(streams);
    const gaps = (times: number[], inWindow: (from: number, to: number) => boolean) =>
        times.slice(1).flatMap((time, index) => inWindow(times[index]!, time) ? [time - times[index]!] : []);
    const during = arrivals.flatMap((times) => gaps(times, (from, to) => to > sentAt && from < answeredAt));
    const before = arrivals.flatMap((times) => gaps(times, (_from, to) => to <= sentAt));
    if (arrivals.some((times) => times.at(-1)! < answeredAt))
        throw new Error('a running stream ended before the long prompt was answered: raise maxTokens');
    return {
        promptTokens: long.usage?.prompt_tokens ?? 0,
        promptMs: answeredAt - sentAt,
        worstGapMs: Math.max(...during),
        medianGapMsBefore: median(before)
    };
}
