import type {JobErrorCode} from './worker/engine-messages.js';

export type EngineErrorCode =
    | JobErrorCode
    /** Too many requests waiting: retry later. */
    | 'queue_full'
    /** The engine process died or hung while the request ran; it is being restarted. */
    | 'engine_crashed'
    /** The engine is stopped, or could not load its models. */
    | 'engine_unavailable'
    /** The caller cancelled (client disconnected). */
    | 'cancelled';

export class EngineError extends Error {
    constructor(readonly code: EngineErrorCode, message: string, readonly retryAfterSeconds?: number) {
        super(message);
        this.name = 'EngineError';
    }
}
