import {EngineError, type EngineErrorCode} from '../engine/engine-error.js';

export type ApiErrorType =
    | 'invalid_request_error'
    | 'authentication_error'
    | 'not_found_error'
    | 'rate_limit_error'
    | 'server_error';

/** An error answered as OpenAI does: `{error: {message, type, param, code}}` with an HTTP status. */
export class ApiError extends Error {
    constructor(
        readonly status: number,
        message: string,
        readonly type: ApiErrorType,
        readonly param: string | null = null,
        readonly code: string | null = null,
        readonly retryAfterSeconds?: number
    ) {
        super(message);
        this.name = 'ApiError';
    }

    toBody() {
        return {error: {message: this.message, type: this.type, param: this.param, code: this.code}};
    }

    static invalid(message: string, param: string | null = null, code: string | null = null) {
        return new ApiError(400, message, 'invalid_request_error', param, code);
    }

    static unsupported(param: string, message: string) {
        return new ApiError(400, message, 'invalid_request_error', param, 'unsupported_parameter');
    }

    static modelNotFound(model: string) {
        return new ApiError(404, `The model '${model}' does not exist or is not served by this node. GET /v1/models lists the models.`,
            'invalid_request_error', 'model', 'model_not_found');
    }
}

const engineErrorStatus: Record<Exclude<EngineErrorCode, 'cancelled'>, [number, ApiErrorType, string | null]> = {
    invalid_request: [400, 'invalid_request_error', null],
    context_length_exceeded: [400, 'invalid_request_error', 'context_length_exceeded'],
    model_not_found: [404, 'invalid_request_error', 'model_not_found'],
    queue_full: [429, 'rate_limit_error', 'queue_full'],
    engine_crashed: [503, 'server_error', 'engine_restarting'],
    engine_unavailable: [503, 'server_error', 'engine_unavailable'],
    engine_error: [500, 'server_error', 'engine_error']
};

/** Maps anything thrown while serving a request to the error the client sees. */
export function toApiError(error: unknown): ApiError {
    if (error instanceof ApiError)
        return error;
    if (error instanceof EngineError && error.code !== 'cancelled') {
        const [status, type, code] = engineErrorStatus[error.code];
        const retryAfter = error.retryAfterSeconds ?? (status === 503 ? 1 : undefined);
        return new ApiError(status, error.message, type, null, code ?? error.code, retryAfter);
    }
    return new ApiError(500, 'internal error while serving the request', 'server_error', null, 'internal_error');
}
