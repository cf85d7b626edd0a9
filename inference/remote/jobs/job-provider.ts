import {EventEmitter} from 'node:events';
import type {EmbeddingResult, GenerationRequest, GenerationResult} from '../../inference-types.js';
import {signReceiptBody, verifyReceipt, ReceiptError, type Receipt} from '../../../ledger/receipt.js';
import type {NodeIdentity} from '../../../swarm/node-identity.js';
import {jobRefusal, submissionModel, type JobProviderLimits, type JobSubmission} from './job-admission.js';
import type {JobMessage, RefusalCode} from './job-messages.js';
import type {SwarmNode} from '../../../swarm/swarm-node.js';

/** What serves peers' jobs: this node's engine. */
export interface JobExecutor {
    canServe(model: string): boolean,
    generate(request: GenerationRequest, options: {onText: (text: string, tokens: number[]) => void, signal: AbortSignal}): Promise<GenerationResult>,
    embed(model: string, inputs: string[], options: {signal: AbortSignal}): Promise<EmbeddingResult>
}

/** A job served for a peer: sizes and timings only, never its text. */
export interface ServedJob {
    jobId: string,
    peerId: string,
    kind: 'generate' | 'embed',
    model: string,
    promptTokens: number,
    completionTokens: number,
    durationMs: number,
    outcome: 'completed' | 'failed' | 'cancelled'
}

interface ActiveJob {
    peerId: string,
    controller: AbortController
}

interface CompletedJob {
    peerId: string,
    model: string,
    result: GenerationResult
}

/** How many finished jobs wait for their receipt. */
const RECEIPT_WINDOW = 256;

/** Serves other nodes' jobs within limits, streams their tokens back, and countersigns their receipts. */
export class JobProvider extends EventEmitter<{served: [job: ServedJob], refused: [peerId: string, code: RefusalCode], receipt: [receipt: Receipt]}> {
    private readonly active = new Map<string, ActiveJob>();
    private readonly awaitingReceipt = new Map<string, CompletedJob>();

    constructor(
        private readonly swarm: SwarmNode,
        private readonly identity: NodeIdentity,
        private readonly executor: JobExecutor,
        private readonly limits: JobProviderLimits
    ) {
        super();
        swarm.on('jobMessage', (peerId, message) => this.handle(peerId, message));
        swarm.on('peerLeft', (peerId) => {
            for (const job of this.active.values())
                if (job.peerId === peerId)
                    job.controller.abort();
        });
    }

    get activeJobs() {
        return this.active.size;
    }

    private handle(peerId: string, message: JobMessage) {
        switch (message.type) {
            case 'generate':
            case 'embed':
                this.accept(peerId, message);
                return;
            case 'cancel': {
                const job = this.active.get(message.jobId);
                if (job?.peerId === peerId)
                    job.controller.abort();
                return;
            }
            case 'receipt':
                this.countersign(peerId, message.jobId, message.receipt);
                return;
            default:
                return; // requester-side messages are the requester's business
        }
    }

    private accept(peerId: string, message: JobSubmission) {
        const refusal = jobRefusal(message, this.limits, {activeJobIds: new Set(this.active.keys()), canServe: (model) => this.executor.canServe(model)});
        if (refusal !== undefined) {
            void this.swarm.sendJobMessage(peerId, {type: 'refused', jobId: message.jobId, code: refusal[0], message: refusal[1]});
            this.emit('refused', peerId, refusal[0]);
            return;
        }
        const {jobId} = message;
        const controller = new AbortController();
        this.active.set(jobId, {peerId, controller});
        const startedAt = performance.now();
        const model = submissionModel(message);
        const record = (outcome: ServedJob['outcome'], promptTokens = 0, completionTokens = 0) => this.emit('served', {
            jobId, peerId, kind: message.type, model, promptTokens, completionTokens, durationMs: performance.now() - startedAt, outcome
        });

        const work = message.type === 'generate'
            ? this.executor.generate({
                ...message.request,
                // A job without a limit gets this node's limit.
                sampling: {...message.request.sampling, maxTokens: message.request.sampling.maxTokens ?? this.limits.maxTokensPerJob}
            }, {
                signal: controller.signal,
                onText: (text, tokens) => void this.swarm.sendJobMessage(peerId, {type: 'text', jobId, text, tokens})
            }).then((result) => {
                this.remember(jobId, {peerId, model, result});
                record(controller.signal.aborted ? 'cancelled' : 'completed', result.usage.promptTokens, result.usage.completionTokens);
                return this.swarm.sendJobMessage(peerId, {type: 'generated', jobId, result});
            })
            : this.executor.embed(message.model, message.inputs, {signal: controller.signal}).then((result) => {
                record('completed', result.promptTokens);
                return this.swarm.sendJobMessage(peerId, {type: 'embedded', jobId, result});
            });
        work.catch((error: Error & {code?: string}) => {
            record(controller.signal.aborted ? 'cancelled' : 'failed');
            void this.swarm.sendJobMessage(peerId, {type: 'failed', jobId, code: error.code ?? 'engine_error', message: error.message.slice(0, 1000)});
        }).finally(() => this.active.delete(jobId));
    }

    private remember(jobId: string, job: CompletedJob) {
        this.awaitingReceipt.set(jobId, job);
        if (this.awaitingReceipt.size > RECEIPT_WINDOW)
            this.awaitingReceipt.delete(this.awaitingReceipt.keys().next().value!);
    }

    /** Countersigns a receipt only if it describes, exactly, a job this node served for that peer. */
    private countersign(peerId: string, jobId: string, candidate: Receipt) {
        const job = this.awaitingReceipt.get(jobId);
        if (job === undefined || job.peerId !== peerId)
            return;
        try {
            const receipt = verifyReceipt(candidate, {countersigned: false});
            const {body} = receipt;
            const matches = body.jobId === jobId && body.provider === this.identity.id && body.requester === peerId
                && body.model === job.model && body.promptTokens === job.result.usage.promptTokens
                && body.completionTokens === job.result.usage.completionTokens;
            if (!matches)
                throw new ReceiptError('the receipt does not match the job served');
            this.awaitingReceipt.delete(jobId);
            const signature = signReceiptBody(body, this.identity.secretKey);
            void this.swarm.sendJobMessage(peerId, {type: 'countersigned', jobId, signature});
            this.emit('receipt', {...receipt, providerSignature: signature});
        } catch {
            // An altered or forged receipt is not countersigned; the job stays unreceipted.
        }
    }
}
