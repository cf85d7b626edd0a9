import {InferenceError, type InferenceErrorCode} from '../core/inference-error.js';
import {LedgerError, type LedgerErrorCode} from '../ledger/ledger-error.js';

export type ApiErrorType =
    | 'invalid_request_error'
    | 'authentication_error'
    | 'not_found_error'
    | 'rate_limit_error'
    | 'server_error';

/** Longest piece of client input (a model name, a path, a header) echoed in an error or a log line. */
export const MAX_ECHO_CHARS = 64;

/** Client input as it may be echoed: a hostile 1 MB model name must not travel back, or into the logs, whole. */
export function clip(text: string, max = MAX_ECHO_CHARS) {
    return text.length > max ? `${text.slice(0, max)}…` : text;
}

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

    /**
     * The error as Anthropic's Messages API answers it (README, "Endpoints"): its own types, and 529 for an
     * overloaded server where OpenAI's routes say 503.
     */
    toAnthropic(): {status: number, body: {type: 'error', error: {type: AnthropicErrorType, message: string}}} {
        const [status, type] = anthropicStatus(this.status);
        return {status, body: {type: 'error', error: {type, message: this.message}}};
    }

    static invalid(message: string, param: string | null = null, code: string | null = null) {
        return new ApiError(400, message, 'invalid_request_error', param, code);
    }

    static unsupported(param: string, message: string) {
        return new ApiError(400, message, 'invalid_request_error', param, 'unsupported_parameter');
    }

    static modelNotFound(model: string) {
        return new ApiError(404, `The model '${clip(model)}' does not exist or is not served by this node. GET /v1/models lists the models.`,
            'invalid_request_error', 'model', 'model_not_found');
    }
}

export type AnthropicErrorType =
    | 'invalid_request_error' | 'authentication_error' | 'not_found_error' | 'request_too_large'
    | 'rate_limit_error' | 'api_error' | 'overloaded_error';

function anthropicStatus(status: number): [number, AnthropicErrorType] {
    switch (status) {
        case 401: return [401, 'authentication_error'];
        case 404: return [404, 'not_found_error'];
        case 413: return [413, 'request_too_large'];
        case 429: return [429, 'rate_limit_error'];
        case 503: return [529, 'overloaded_error'];
    }
    return status < 500 ? [400, 'invalid_request_error'] : [500, 'api_error'];
}

/** The HTTP status and OpenAI error type of each inference error code: the only place they are chosen. */
const inferenceErrorStatus: Record<Exclude<InferenceErrorCode, 'cancelled'>, [number, ApiErrorType]> = {
    invalid_request: [400, 'invalid_request_error'],
    context_length_exceeded: [400, 'invalid_request_error'],
    model_not_found: [404, 'invalid_request_error'],
    over_budget: [402, 'invalid_request_error'],
    queue_full: [429, 'rate_limit_error'],
    busy: [503, 'server_error'],
    limit: [503, 'server_error'],
    model_unavailable: [503, 'server_error'],
    disabled: [503, 'server_error'],
    no_peer_available: [503, 'server_error'],
    payment_required: [402, 'invalid_request_error'],
    engine_restarting: [503, 'server_error'],
    engine_unavailable: [503, 'server_error'],
    engine_error: [500, 'server_error'],
    peer_stalled: [503, 'server_error'],
    peer_disconnected: [503, 'server_error'],
    peer_violation: [503, 'server_error'],
    peers_failed: [503, 'server_error']
};

/** The ledger's errors as the status API answers them. */
const ledgerErrorStatus: Record<LedgerErrorCode, [number, ApiErrorType]> = {
    // Only the node's own records reach the log through the API (an anchor record): a refusal is the node's fault.
    INVALID_RECORD: [500, 'server_error'],
    NOT_CONFIGURED: [409, 'invalid_request_error'],
    INVALID_REQUEST: [400, 'invalid_request_error'],
    NOTHING_TO_REVOKE: [409, 'invalid_request_error'],
    WRONG_CHAIN: [409, 'invalid_request_error'],
    FEE_TOO_HIGH: [503, 'server_error'],
    CHAIN_UNAVAILABLE: [503, 'server_error'],
    REVERTED: [502, 'server_error'],
    // Payments (/api/wallet/…): a voucher that does not verify is the sender's fault; a call the contract refuses
    // (a close not yet due, a channel closing) conflicts with the channel's state, as NOT_CONFIGURED with the node's.
    INVALID_VOUCHER: [400, 'invalid_request_error'],
    CHANNEL_REFUSED: [409, 'invalid_request_error'],
    STORAGE: [500, 'server_error']
};

/** Maps anything thrown while serving a request to the error the client sees. */
export function toApiError(error: unknown): ApiError {
    if (error instanceof ApiError)
        return error;
    if (error instanceof LedgerError) {
        const [status, type] = ledgerErrorStatus[error.code];
        return new ApiError(status, error.message, type, null, error.code.toLowerCase());
    }
    if (error instanceof InferenceError && error.code !== 'cancelled') {
        const [status, type] = inferenceErrorStatus[error.code];
        const retryAfter = error.retryAfterSeconds ?? (status === 503 ? 1 : undefined);
        return new ApiError(status, error.message, type, error.param, error.code, retryAfter);
    }
    return new ApiError(500, 'internal error while serving the request', 'server_error', null, 'internal_error');
}
