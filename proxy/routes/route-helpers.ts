import type {Response} from 'express';
import type {GenerationResult} from '../../engine/inference-types.js';
import {ApiError} from '../api-error.js';
import type {InferenceService} from '../inference-service.js';

/** What handlers leave on `res.locals` for the request log and counters. */
export interface ResponseLocals {
    requestId?: string,
    model?: string,
    stream?: boolean,
    result?: GenerationResult,
    promptTokens?: number,
    /** Set when a stream failed after its 200 status was sent. */
    failedStatus?: number
}

export function assertModelServed(inference: InferenceService, model: string) {
    if (!inference.listModels().some((served) => served.id === model))
        throw ApiError.modelNotFound(model);
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
