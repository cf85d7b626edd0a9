/**
 * The one error type of inference, wherever it runs (this node's engine, a peer, the router), with a closed set of
 * codes. Each code says whose fault the failure is, and that alone decides what routing does with it
 * (docs/architecture.md, "Errors"). HTTP statuses are chosen in proxy/, never here.
 */

/** Whose fault a failure is. */
export type Fault =
    /** The request itself is wrong: the client gets the error as is, no other node is tried, no node is penalised. */
    | 'client'
    /** A node declined work it cannot take now: another may take it, and the refusal counts against nobody. */
    | 'refusal'
    /** The node that took the work failed: another peer takes over, and this one's success rate drops. */
    | 'server'
    /** The client went away. */
    | 'cancelled';

const FAULTS = {
    /** The request is malformed or asks for what this model cannot do (bad logit_bias, unusable JSON schema). */
    invalid_request: 'client',
    /** The prompt does not fit the model's context. */
    context_length_exceeded: 'client',
    /** No node serves this model. */
    model_not_found: 'client',
    /** Every peer serving the model costs more than the client's budget. */
    over_budget: 'client',
    /** Too many requests wait for this engine. */
    queue_full: 'refusal',
    /** A peer serves as many jobs for others as it allows. */
    busy: 'refusal',
    /** A job exceeds a peer's limits (tokens, prompt size). */
    limit: 'refusal',
    /** A peer does not have the model loaded (any more). */
    model_unavailable: 'refusal',
    /** A peer does not serve others (`--serve-peers off`). */
    disabled: 'refusal',
    /** No connected peer can serve the model now. */
    no_peer_available: 'refusal',
    /** A priced peer does not take the job's payment (no channel, a deposit too small, vouchers owed). */
    payment_required: 'refusal',
    /** The engine process died or hung while the request ran; it is restarting. */
    engine_restarting: 'server',
    /** The engine is stopped, or could not load its models. */
    engine_unavailable: 'server',
    /** The engine failed the request for a reason of its own. */
    engine_error: 'server',
    /** A serving peer sent nothing before its deadline. */
    peer_stalled: 'server',
    /** A serving peer's connection closed, or there was none. */
    peer_disconnected: 'server',
    /** A serving peer broke the request's limits (more tokens than asked, oversized text): dropped and banned. */
    peer_violation: 'server',
    /** Every peer tried failed. */
    peers_failed: 'server',
    /** The client cancelled (disconnected). */
    cancelled: 'cancelled'
} as const satisfies Record<string, Fault>;

export type InferenceErrorCode = keyof typeof FAULTS;
export type CodeOfFault<F extends Fault> = {[C in InferenceErrorCode]: typeof FAULTS[C] extends F ? C : never}[InferenceErrorCode];
export type RefusalCode = CodeOfFault<'refusal'>;

export const inferenceErrorCodes = Object.keys(FAULTS) as [InferenceErrorCode, ...InferenceErrorCode[]];
export const refusalCodes = inferenceErrorCodes.filter((code) => FAULTS[code] === 'refusal') as [RefusalCode, ...RefusalCode[]];

export function faultOf(code: InferenceErrorCode): Fault {
    return FAULTS[code];
}

export interface InferenceErrorOptions {
    /** The request parameter at fault, as the client named it; defaults to none. */
    param?: string | null,
    /** When the client may retry; defaults to the proxy's choice for the code. */
    retryAfterSeconds?: number
}

export class InferenceError extends Error {
    readonly param: string | null;
    readonly retryAfterSeconds: number | undefined;

    constructor(readonly code: InferenceErrorCode, message: string, options: InferenceErrorOptions = {}) {
        super(message);
        this.name = 'InferenceError';
        this.param = options.param ?? null;
        this.retryAfterSeconds = options.retryAfterSeconds;
    }

    get fault(): Fault {
        return faultOf(this.code);
    }

    /** What crosses a process or network boundary (IPC, the jobs channel). */
    toJSON(): InferenceErrorJson {
        return {code: this.code, message: this.message, param: this.param};
    }

    static from(json: InferenceErrorJson) {
        return new InferenceError(json.code, json.message, {param: json.param});
    }

    static invalidRequest(message: string, param: string | null = null) {
        return new InferenceError('invalid_request', message, {param});
    }

    static contextLengthExceeded(message: string) {
        return new InferenceError('context_length_exceeded', message);
    }

    static modelNotFound(model: string) {
        return new InferenceError('model_not_found', `model ${model} is not loaded`, {param: 'model'});
    }

    static overBudget(message: string) {
        return new InferenceError('over_budget', message, {param: 'model'});
    }

    static queueFull(message: string, retryAfterSeconds: number) {
        return new InferenceError('queue_full', message, {retryAfterSeconds});
    }

    static refused(code: RefusalCode, message: string) {
        return new InferenceError(code, message);
    }

    static noPeerAvailable(message: string) {
        return new InferenceError('no_peer_available', message, {param: 'model'});
    }

    static engineRestarting(message: string) {
        return new InferenceError('engine_restarting', message);
    }

    static engineUnavailable(message: string) {
        return new InferenceError('engine_unavailable', message);
    }

    static engineError(message: string) {
        return new InferenceError('engine_error', message);
    }

    static peerStalled(message: string) {
        return new InferenceError('peer_stalled', message);
    }

    static peerDisconnected(message: string) {
        return new InferenceError('peer_disconnected', message);
    }

    static peerViolation(message: string) {
        return new InferenceError('peer_violation', message);
    }

    static peersFailed(message: string) {
        return new InferenceError('peers_failed', message);
    }

    static cancelled(message = 'request cancelled') {
        return new InferenceError('cancelled', message);
    }
}

export interface InferenceErrorJson {
    code: InferenceErrorCode,
    message: string,
    param: string | null
}
