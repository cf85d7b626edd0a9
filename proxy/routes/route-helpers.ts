import {randomBytes} from 'node:crypto';
import type {Request, Response} from 'express';
import type {ChunkExtras, GenerationRequest, GenerationResult, TextListener} from '../../core/inference-types.js';
import {requestLimitViolation} from '../../core/request-limits.js';
import {ApiError, clip, toApiError} from '../api-error.js';
import type {InferenceService, RouteInfo} from '../../inference/inference-service.js';

/** What handlers leave on `res.locals` for the request log and counters. */
export interface ResponseLocals {
    requestId?: string,
    model?: string,
    stream?: boolean,
    result?: GenerationResult,
    promptTokens?: number,
    /** Tokens streamed to the client so far (what it was sent, if it leaves before the end). */
    sentTokens?: number,
    /** Set when a stream failed after its 200 status was sent. */
    failedStatus?: number,
    /** Where the request was served, when not by this node's engine alone. */
    servedBy?: RouteInfo
}

/** The client's budget for peers, per million tokens: `x-strongdoge-max-price`. */
export const MAX_PRICE_HEADER = 'x-strongdoge-max-price';

export function maxPriceFrom(req: Request): {maxPrice?: number} {
    const header = req.get(MAX_PRICE_HEADER);
    if (header === undefined)
        return {};
    const maxPrice = Number(header);
    if (header.trim() === '' || !Number.isFinite(maxPrice) || maxPrice < 0)
        throw ApiError.invalid(`The ${MAX_PRICE_HEADER} header must be a non-negative number, got "${clip(header)}".`, MAX_PRICE_HEADER, 'invalid_value');
    return {maxPrice};
}

export function assertModelServed(inference: InferenceService, model: string) {
    if (!inference.listModels().some((served) => served.id === model))
        throw ApiError.modelNotFound(model);
}

/** Refuses a request over the bounds of `inference/request-limits.ts` (a JSON schema too deep, or one the grammar cannot hold to). */
export function assertWithinLimits(request: GenerationRequest) {
    const violation = requestLimitViolation(request);
    if (violation !== undefined)
        throw ApiError.invalid(violation.message, violation.param, 'request_too_complex');
}

/**
 * A generation request checked (limits, a served model) and noted for the request log; returns what `generate`
 * takes of the client: its cancel signal, its budget for peers.
 */
export function startGeneration(inference: InferenceService, req: Request, res: Response<unknown, ResponseLocals>, request: GenerationRequest,
    stream: boolean) {
    assertWithinLimits(request);
    res.locals.model = request.model;
    res.locals.stream = stream;
    assertModelServed(inference, request.model);
    return {signal: cancelOnClientClose(res), ...routingFor(req, res)};
}

/** The client's budget for peers, and where the peers that served the request are noted for the request log. */
export function routingFor(req: Request, res: Response<unknown, ResponseLocals>) {
    return {...maxPriceFrom(req), onRoute: (route: RouteInfo) => res.locals.servedBy = route};
}

/**
 * A streamed request that failed. Before its 200 went out the error is thrown again, so the client gets its real
 * status; after, it is noted for the request log and returned, to be told in the stream's own shape.
 */
export function streamFailure(res: Response<unknown, ResponseLocals>, error: unknown, streamOpen: boolean): ApiError {
    if (!streamOpen)
        throw error;
    const apiError = toApiError(error);
    res.locals.failedStatus = apiError.status;
    return apiError;
}

/** A text listener that counts the tokens sent to the client (`sentTokens`), then passes them on. */
export function countingSentTokens(res: Response<unknown, ResponseLocals>, onText: (text: string, extras: ChunkExtras) => void): TextListener {
    return (text, tokens, extras) => {
        res.locals.sentTokens = (res.locals.sentTokens ?? 0) + tokens.length;
        onText(text, extras ?? {});
    };
}

/** An id for a tool call, as OpenAI writes them: the client answers the call by it. */
export function toolCallId() {
    return `call_${randomBytes(12).toString('hex')}`;
}

/** An AbortSignal that fires when the client goes away before the response is complete. */
export function cancelOnClientClose(res: Response) {
    const controller = new AbortController();
    // express 5 on Node 20: req 'close' fires once the body is read; only res 'close' means the client left.
    res.on('close', () => {
        if (!res.writableFinished)
            controller.abort();
    });
    return controller.signal;
}
