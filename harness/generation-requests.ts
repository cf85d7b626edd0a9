import OpenAI from 'openai';
import {startDaemon, waitFor, type DaemonHandle} from './cli-process.js';
import {fetchStatus} from './node-status.js';
import type {GenerationRequest, SamplingOptions} from '../core/inference-types.js';

/** A greedy text completion for the `demo` model, as the engine receives it. */
export function greedyCompletion(prompt: string, maxTokens: number, extra: Partial<SamplingOptions> = {}): GenerationRequest {
    return {kind: 'completion', model: 'demo', prompt, sampling: {temperature: 0, stop: [], maxTokens, responseFormat: {type: 'text'}, ...extra}};
}

/** A prompt of `phrases` repetitions of one short phrase: about 13 demo-vocabulary tokens each. */
export function repeatedPrompt(phrases: number) {
    return Array.from({length: phrases}, () => 'such doge said wow.').join(' ');
}

/**
 * How a resumed answer compares with the uninterrupted run, for a test's log. Past the seam the resumed prefill is
 * batched where the original decoded one token at a time, so the two may part at a near-tie (README, "Requests served by peers").
 */
export function seamReport(answer: string, uninterrupted: string, seamText: string) {
    let shared = 0;
    while (shared < answer.length && shared < uninterrupted.length && answer[shared] === uninterrupted[shared])
        shared++;
    return answer === uninterrupted ? 'identical to the uninterrupted run' : `parted from the uninterrupted run ${shared - seamText.length} characters after the seam`;
}

/**
 * A greedy `demo` completion streamed through the OpenAI client: its text, completion tokens (from the usage chunk)
 * and finish reason; `onText` gets the text so far after each chunk.
 */
export async function streamGreedyCompletion(client: OpenAI, prompt: string, maxTokens: number, onText: (text: string) => void = () => undefined) {
    const stream = await client.completions.create({
        model: 'demo', prompt, max_tokens: maxTokens, temperature: 0, stream: true, stream_options: {include_usage: true}
    });
    let text = '';
    let completionTokens = 0;
    let finishReason: string | null = null;
    for await (const chunk of stream) {
        text += chunk.choices[0]?.text ?? '';
        finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
        completionTokens = chunk.usage?.completion_tokens ?? completionTokens;
        onText(text);
    }
    return {text, completionTokens, finishReason};
}

/**
 * The greedy text each prompt gets from the data dir's `demo` model whole, in one process (a daemon of its own):
 * what every pipeline of that model must reproduce token for token.
 */
export async function singleProcessTexts(dataDir: string, prompts: readonly string[], {maxTokens, contextSize}: {maxTokens: number, contextSize: number}) {
    const single = await startDaemon(['--model', 'demo', '--data-dir', dataDir, '--threads', '1', '--context-size', String(contextSize)]);
    try {
        const client = new OpenAI({baseURL: single.baseUrl, apiKey: 'x', maxRetries: 0});
        const texts: string[] = [];
        for (const prompt of prompts)
            texts.push((await client.completions.create({model: 'demo', prompt, max_tokens: maxTokens, temperature: 0})).choices[0]!.text);
        return texts;
    } finally {
        await single.stop();
    }
}

/**
 * SIGKILLs whichever of `providers` has a peer job running (the one serving a request now), once one does within
 * `timeoutMs`; resolves it, or undefined when none was seen serving.
 */
export async function killServingProvider<P extends {daemon: DaemonHandle}>(providers: readonly P[], timeoutMs: number): Promise<P | undefined> {
    let serving: P | undefined;
    try {
        await waitFor(async () => {
            for (const provider of providers)
                if ((await fetchStatus(provider.daemon, '/api/node')).peerJobs.active > 0)
                    serving = provider;
            return serving !== undefined;
        }, timeoutMs, 5);
    } catch {
        return undefined;
    }
    serving!.daemon.process.kill('SIGKILL');
    return serving;
}
