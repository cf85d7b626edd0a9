import type {Request, RequestHandler, Response} from 'express';
import type {z} from 'zod';
import type {FinishReason, GenerationRequest, GenerationResult, TokenLogprob, ToolCall} from '../../core/inference-types.js';
import type {InferenceService} from '../../inference/inference-service.js';
import {
    chatCompletionSchema, completionSchema, parseBody, toChatRequest, toCompletionRequest
} from '../request-schemas.js';
import {SseWriter} from '../stream-writers.js';
import {
    assertModelServed, assertWithinLimits, cancelOnClientClose, countingSentTokens, routingFor, streamFailure, toolCallId, type ResponseLocals
} from './route-helpers.js';

/** How chat and text completions differ on the wire; everything else they share. */
interface CompletionFlavor {
    idPrefix: string,
    object: string,
    chunkObject: string,
    parse(body: unknown): {request: GenerationRequest, stream: boolean, includeUsage: boolean, choices: number},
    /** `offset`: characters of the choice's text before this delta. */
    deltaChoice(index: number, text: string, first: boolean, logprobs: TokenLogprob[] | undefined, offset: number): object,
    /** A whole tool call as a delta: its `callIndex` among the choice's calls (chat only). */
    toolCallDeltaChoice?(index: number, call: ToolCall & {id: string, callIndex: number}, first: boolean): object,
    finalDeltaChoice(index: number, finishReason: FinishReason): object,
    fullChoice(index: number, result: GenerationResult): object
}

interface StreamingFields {
    n?: number | null,
    stream?: boolean | null,
    stream_options?: {include_usage?: boolean} | null
}

function generationParser<B extends StreamingFields>(schema: z.ZodType<B>, toRequest: (body: B) => GenerationRequest): CompletionFlavor['parse'] {
    return (body) => {
        const parsed = parseBody(schema, body);
        const request = toRequest(parsed);
        assertWithinLimits(request);
        return {request, stream: parsed.stream ?? false, includeUsage: parsed.stream_options?.include_usage ?? false, choices: parsed.n ?? 1};
    };
}

const chatFlavor: CompletionFlavor = {
    idPrefix: 'chatcmpl',
    object: 'chat.completion',
    chunkObject: 'chat.completion.chunk',
    parse: generationParser(chatCompletionSchema, toChatRequest),
    deltaChoice: (index, text, first, logprobs) => ({
        index, delta: first ? {role: 'assistant', content: text} : {content: text}, logprobs: chatLogprobs(logprobs), finish_reason: null
    }),
    toolCallDeltaChoice: (index, {callIndex, id, name, arguments: args}, first) => ({
        index,
        delta: {...first && {role: 'assistant', content: null}, tool_calls: [{index: callIndex, id, type: 'function', function: {name, arguments: args}}]},
        logprobs: null,
        finish_reason: null
    }),
    finalDeltaChoice: (index, finishReason) => ({index, delta: {}, logprobs: null, finish_reason: finishReason}),
    fullChoice: (index, result) => {
        const calls = result.toolCalls ?? [];
        return {
            index,
            message: {
                role: 'assistant',
                // Only whitespace before the calls: no text, as OpenAI writes a reply that is only calls.
                content: calls.length > 0 && result.text.trim() === '' ? null : result.text,
                refusal: null,
                ...(calls.length > 0 && {tool_calls: calls.map(toOpenAiToolCall)})
            },
            logprobs: chatLogprobs(result.logprobs),
            finish_reason: result.finishReason
        };
    }
};

/** Chat's logprobs: each token with its bytes and alternatives. */
function chatLogprobs(logprobs: TokenLogprob[] | undefined) {
    if (logprobs === undefined)
        return null;
    return {
        content: logprobs.map(({token, bytes, logprob, top}) => ({
            token, logprob, bytes, top_logprobs: top.map((alternative) => ({token: alternative.token, logprob: alternative.logprob, bytes: alternative.bytes}))
        })),
        refusal: null
    };
}

/**
 * The legacy completions' logprobs: parallel lists, the alternatives as text → logprob (tokens of the same text
 * keep the likeliest), and each token's offset in the choice's text.
 */
function completionLogprobs(logprobs: TokenLogprob[] | undefined, offset: number) {
    if (logprobs === undefined)
        return null;
    const textOffset: number[] = [];
    let at = offset;
    for (const {token} of logprobs) {
        textOffset.push(at);
        at += token.length;
    }
    return {
        tokens: logprobs.map(({token}) => token),
        token_logprobs: logprobs.map(({logprob}) => logprob),
        top_logprobs: logprobs.map(({top}) => Object.fromEntries([...top].reverse().map(({token, logprob}) => [token, logprob]))),
        text_offset: textOffset
    };
}

function toOpenAiToolCall({name, arguments: args}: ToolCall) {
    return {id: toolCallId(), type: 'function', function: {name, arguments: args}};
}

const textFlavor: CompletionFlavor = {
    idPrefix: 'cmpl',
    object: 'text_completion',
    chunkObject: 'text_completion',
    parse: generationParser(completionSchema, toCompletionRequest),
    deltaChoice: (index, text, _first, logprobs, offset) => ({index, text, logprobs: completionLogprobs(logprobs, offset), finish_reason: null}),
    finalDeltaChoice: (index, finishReason) => ({index, text: '', logprobs: null, finish_reason: finishReason}),
    fullChoice: (index, result) => ({index, text: result.text, logprobs: completionLogprobs(result.logprobs, 0), finish_reason: result.finishReason})
};

/** The prompt is counted once, the choices' tokens together, as OpenAI counts them. */
function usageOf(results: GenerationResult[]) {
    const completionTokens = results.reduce((sum, result) => sum + result.usage.completionTokens, 0);
    const promptTokens = results[0]!.usage.promptTokens;
    return {prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens};
}

/**
 * Choice `index` of `n`: the same request, with the seed moved on by the index so that seeded choices differ and
 * each can be reproduced alone. The choices run at once, so the engine decodes them in one batch.
 */
function choiceRequest(request: GenerationRequest, index: number): GenerationRequest {
    const {seed} = request.sampling;
    return index === 0 || seed === undefined ? request : {...request, sampling: {...request.sampling, seed: seed + index}};
}

/** One result for the request log and counters: the choices' tokens together, the first choice's timings. */
function combined(results: GenerationResult[]): GenerationResult {
    const usage = usageOf(results);
    return {...results[0]!, usage: {promptTokens: usage.prompt_tokens, completionTokens: usage.completion_tokens}};
}

/** Per-request speed, named as llama.cpp's llama-server names it. */
function timingsOf(result: GenerationResult) {
    return {
        prompt_n: result.usage.promptTokens,
        prompt_ms: result.timings.promptMs,
        prompt_per_second: result.timings.promptTokensPerSecond,
        predicted_n: result.usage.completionTokens,
        predicted_ms: result.timings.generationMs,
        predicted_per_second: result.timings.generationTokensPerSecond
    };
}

function generationHandler(flavor: CompletionFlavor, inference: InferenceService): RequestHandler {
    return async (req: Request, res: Response<unknown, ResponseLocals>) => {
        const {request, stream, includeUsage, choices} = flavor.parse(req.body);
        res.locals.model = request.model;
        res.locals.stream = stream;
        assertModelServed(inference, request.model);

        // One choice failing fails the request: the others are stopped.
        const controller = new AbortController();
        const clientGone = cancelOnClientClose(res);
        clientGone.addEventListener('abort', () => controller.abort(), {once: true});
        const {signal} = controller;
        const generateAll = (onText?: (index: number) => (text: string, tokens: number[]) => void) => Promise.all(
            Array.from({length: choices}, (_, index) => inference.generate(choiceRequest(request, index), {
                signal, ...routing, ...(onText && {onText: onText(index)})
            }))).catch((error: unknown) => {
            controller.abort();
            throw error;
        });
        const routing = routingFor(req, res);
        const base = {
            id: `${flavor.idPrefix}-${res.locals.requestId}`,
            created: Math.floor(Date.now() / 1000),
            model: request.model,
            system_fingerprint: null
        };
        const record = (results: GenerationResult[]) => {
            res.locals.result = combined(results);
            return results;
        };

        if (!stream) {
            const results = record(await generateAll());
            res.json({
                ...base, object: flavor.object, choices: results.map((result, index) => flavor.fullChoice(index, result)),
                usage: usageOf(results), timings: timingsOf(results[0]!)
            });
            return;
        }

        const sse = new SseWriter(res);
        const started = new Set<number>();
        const callsSent = new Map<number, number>();
        const textSent = new Map<number, number>();
        try {
            const results = record(await generateAll((index) => countingSentTokens(res, (text, {toolCall, logprobs}) => {
                const first = !started.has(index);
                started.add(index);
                if (toolCall === undefined) {
                    const offset = textSent.get(index) ?? 0;
                    textSent.set(index, offset + text.length);
                    sse.send({...base, object: flavor.chunkObject, choices: [flavor.deltaChoice(index, text, first, logprobs, offset)]});
                    return;
                }
                const callIndex = callsSent.get(index) ?? 0;
                callsSent.set(index, callIndex + 1);
                sse.send({...base, object: flavor.chunkObject, choices: [flavor.toolCallDeltaChoice!(index, {...toolCall, id: toolCallId(), callIndex}, first)]});
            })));
            for (const [index, result] of results.entries())
                sse.send({
                    ...base, object: flavor.chunkObject, choices: [flavor.finalDeltaChoice(index, result.finishReason)],
                    timings: timingsOf(result)
                });
            if (includeUsage)
                sse.send({...base, object: flavor.chunkObject, choices: [], usage: usageOf(results)});
            sse.done();
        } catch (error) {
            if (clientGone.aborted)
                return;
            // Headers are gone: the error travels in the stream, as OpenAI sends it.
            sse.send(streamFailure(res, error, sse.isOpen).toBody());
            sse.done();
        }
    };
}

export function chatCompletionsHandler(inference: InferenceService) {
    return generationHandler(chatFlavor, inference);
}

export function completionsHandler(inference: InferenceService) {
    return generationHandler(textFlavor, inference);
}
