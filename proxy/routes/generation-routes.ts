import type {Request, RequestHandler, Response} from 'express';
import type {z} from 'zod';
import type {FinishReason, GenerationRequest, GenerationResult} from '../../inference/inference-types.js';
import {requestLimitViolation} from '../../inference/request-limits.js';
import {ApiError, toApiError} from '../api-error.js';
import type {InferenceService, RouteInfo} from '../../inference/inference-service.js';
import {
    chatCompletionSchema, completionSchema, parseBody, toChatRequest, toCompletionRequest
} from '../request-schemas.js';
import {SseWriter} from '../sse-writer.js';
import {assertModelServed, cancelOnClientClose, countingSentTokens, maxPriceFrom, type ResponseLocals} from './route-helpers.js';

/** How chat and text completions differ on the wire; everything else they share. */
interface CompletionFlavor {
    idPrefix: string,
    object: string,
    chunkObject: string,
    parse(body: unknown): {request: GenerationRequest, stream: boolean, includeUsage: boolean},
    deltaChoice(text: string, first: boolean): object,
    finalDeltaChoice(finishReason: FinishReason): object,
    fullChoice(result: GenerationResult): object
}

interface StreamingFields {
    stream?: boolean | null,
    stream_options?: {include_usage?: boolean} | null
}

function generationParser<B extends StreamingFields>(schema: z.ZodType<B>, toRequest: (body: B) => GenerationRequest): CompletionFlavor['parse'] {
    return (body) => {
        const parsed = parseBody(schema, body);
        const request = toRequest(parsed);
        const violation = requestLimitViolation(request);
        if (violation !== undefined)
            throw ApiError.invalid(violation.message, violation.param, 'request_too_complex');
        return {request, stream: parsed.stream ?? false, includeUsage: parsed.stream_options?.include_usage ?? false};
    };
}

const chatFlavor: CompletionFlavor = {
    idPrefix: 'chatcmpl',
    object: 'chat.completion',
    chunkObject: 'chat.completion.chunk',
    parse: generationParser(chatCompletionSchema, toChatRequest),
    deltaChoice: (text, first) => ({
        index: 0, delta: first ? {role: 'assistant', content: text} : {content: text}, logprobs: null, finish_reason: null
    }),
    finalDeltaChoice: (finishReason) => ({index: 0, delta: {}, logprobs: null, finish_reason: finishReason}),
    fullChoice: (result) => ({
        index: 0,
        message: {role: 'assistant', content: result.text, refusal: null},
        logprobs: null,
        finish_reason: result.finishReason
    })
};

const textFlavor: CompletionFlavor = {
    idPrefix: 'cmpl',
    object: 'text_completion',
    chunkObject: 'text_completion',
    parse: generationParser(completionSchema, toCompletionRequest),
    deltaChoice: (text) => ({index: 0, text, logprobs: null, finish_reason: null}),
    finalDeltaChoice: (finishReason) => ({index: 0, text: '', logprobs: null, finish_reason: finishReason}),
    fullChoice: (result) => ({index: 0, text: result.text, logprobs: null, finish_reason: result.finishReason})
};

function usageOf(result: GenerationResult) {
    return {
        prompt_tokens: result.usage.promptTokens,
        completion_tokens: result.usage.completionTokens,
        total_tokens: result.usage.promptTokens + result.usage.completionTokens
    };
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
        const {request, stream, includeUsage} = flavor.parse(req.body);
        res.locals.model = request.model;
        res.locals.stream = stream;
        assertModelServed(inference, request.model);

        const signal = cancelOnClientClose(res);
        const routing = {
            ...maxPriceFrom(req),
            onRoute: (route: RouteInfo) => res.locals.servedBy = route.peers
        };
        const base = {
            id: `${flavor.idPrefix}-${res.locals.requestId}`,
            created: Math.floor(Date.now() / 1000),
            model: request.model,
            system_fingerprint: null
        };
        const record = (result: GenerationResult) => {
            res.locals.result = result;
            return result;
        };

        if (!stream) {
            const result = record(await inference.generate(request, {signal, ...routing}));
            res.json({
                ...base, object: flavor.object, choices: [flavor.fullChoice(result)],
                usage: usageOf(result), timings: timingsOf(result)
            });
            return;
        }

        const sse = new SseWriter(res);
        let first = true;
        try {
            const result = record(await inference.generate(request, {
                signal,
                ...routing,
                onText: countingSentTokens(res, (text) => {
                    sse.send({...base, object: flavor.chunkObject, choices: [flavor.deltaChoice(text, first)]});
                    first = false;
                })
            }));
            sse.send({
                ...base, object: flavor.chunkObject, choices: [flavor.finalDeltaChoice(result.finishReason)],
                timings: timingsOf(result)
            });
            if (includeUsage)
                sse.send({...base, object: flavor.chunkObject, choices: [], usage: usageOf(result)});
            sse.done();
        } catch (error) {
            if (signal.aborted)
                return;
            if (!sse.isOpen)
                throw error; // nothing was streamed yet: the client gets the error's own status
            // Headers are gone: the error travels in the stream, as OpenAI sends it.
            const apiError = toApiError(error);
            res.locals.failedStatus = apiError.status;
            sse.send(apiError.toBody());
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
