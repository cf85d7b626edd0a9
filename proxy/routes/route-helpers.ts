import type {Request, Response} from 'express';
import type {GenerationResult} from '../../inference/inference-types.js';
import {ApiError, clip} from '../api-error.js';
import type {InferenceService} from '../../inference/inference-service.js';

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
    /** Peers that served the request, when it was not served locally. */
    servedBy?: string[]
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

/** A text listener that counts the tokens sent to the client (`sentTokens`), then passes them on. */
export function countingSentTokens(res: Response<unknown, ResponseLocals>, onText: (text: string) => void) {
    return (text: string, tokens: number[]) => {
        res.locals.sentTokens = (res.locals.sentTokens ?? 0) + tokens.length;
        onText(text);
    };
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
