import type {RefusalCode} from '../../../core/inference-error.js';
import {requestLimitViolation} from '../../../core/request-limits.js';
import type {JobMessage} from './job-messages.js';

/** Whether a peer's job is taken: pure, so every limit is tested without a network. */

export interface JobProviderLimits {
    /** `--serve-peers`: serve other nodes' jobs at all. */
    enabled: boolean,
    maxConcurrentJobs: number,
    maxTokensPerJob: number,
    maxPromptBytes: number,
    /** Inputs one embedding job may carry. */
    maxEmbeddingInputs: number,
    /** Tokens one embedding job may hold in all (checked by the engine, which tokenizes). */
    maxEmbeddingTokens: number
}

export const jobProviderDefaults: JobProviderLimits = {
    enabled: true,
    maxConcurrentJobs: 4,
    maxTokensPerJob: 4096,
    maxPromptBytes: 1024 * 1024,
    maxEmbeddingInputs: 64,
    maxEmbeddingTokens: 4096
};

export type JobSubmission = Extract<JobMessage, {type: 'generate' | 'embed'}>;

export interface ProviderSituation {
    activeJobIds: ReadonlySet<string>,
    canServe: (model: string) => boolean,
    /** Whether the job id named a job before (in the contribution log, or lately): one id, one job, one receipt. */
    usedJobId?: (jobId: string) => boolean,
    /** Jobs served for this peer whose receipts it has not sent, past the grace a receipt takes to arrive. */
    owedReceipts?: number
}

/** A peer that owes this many receipts gets no more jobs until it sends them. */
export const MAX_OWED_RECEIPTS = 4;

export function submissionModel(message: JobSubmission) {
    return message.type === 'generate' ? message.request.model : message.model;
}

function promptBytes(message: JobSubmission) {
    if (message.type === 'embed')
        return message.inputs.reduce((sum, input) => sum + Buffer.byteLength(input), 0);
    const {request} = message;
    return Buffer.byteLength(request.kind === 'chat' ? request.messages.map((item) => item.content).join('') : request.prompt);
}

/** The refusal a job gets, or undefined when it is accepted. */
export function jobRefusal(message: JobSubmission, limits: JobProviderLimits, situation: ProviderSituation): [RefusalCode, string] | undefined {
    const model = submissionModel(message);
    if (!limits.enabled)
        return ['disabled', 'this node does not serve peers'];
    if (situation.activeJobIds.has(message.jobId) || situation.usedJobId?.(message.jobId) === true)
        return ['limit', 'duplicate job id: each job needs a new one'];
    if ((situation.owedReceipts ?? 0) >= MAX_OWED_RECEIPTS)
        return ['limit', `owes the receipts of ${situation.owedReceipts} jobs served: send them first`];
    if (!situation.canServe(model))
        return ['model_unavailable', `model ${model} is not loaded here`];
    if (situation.activeJobIds.size >= limits.maxConcurrentJobs)
        return ['busy', `serving ${situation.activeJobIds.size} peer jobs already`];
    if (message.type === 'embed' && message.inputs.length > limits.maxEmbeddingInputs)
        return ['limit', `${message.inputs.length} embedding inputs exceed this node's ${limits.maxEmbeddingInputs}`];
    const bytes = promptBytes(message);
    if (bytes > limits.maxPromptBytes)
        return ['limit', `prompt of ${bytes} bytes exceeds this node's ${limits.maxPromptBytes}`];
    if (message.type === 'generate') {
        const violation = requestLimitViolation(message.request);
        if (violation !== undefined)
            return ['limit', violation.message];
    }
    const maxTokens = message.type === 'generate' ? message.request.sampling.maxTokens : undefined;
    if (maxTokens !== undefined && maxTokens > limits.maxTokensPerJob)
        return ['limit', `max_tokens ${maxTokens} exceeds this node's ${limits.maxTokensPerJob}`];
    return undefined;
}
