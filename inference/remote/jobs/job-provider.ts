import {EventEmitter} from 'node:events';
import {LRUCache} from 'lru-cache';
import {countersignReceipt, verifyReceipt, ReceiptError, type Receipt, type ReceiptBody} from '../../../ledger/receipt.js';
import {domainProblem, type SigningDomain} from '../../../ledger/signing-domain.js';
import type {NodeIdentity} from '../../../swarm/node-identity.js';
import {InferenceError, type InferenceErrorCode, type RefusalCode} from '../../../core/inference-error.js';
import type {EmbeddingResult, GenerationRequest, GenerationResult, TextListener} from '../../../core/inference-types.js';
import {jobRefusal, submissionModel, type JobProviderLimits, type JobSubmission} from './job-admission.js';
import type {JobMessage} from './job-messages.js';
import type {JobsProtocol} from './jobs-protocol.js';
import {recentJobIds} from './recent-job-ids.js';
import type {ProviderPayments, WireVoucher} from './job-payments.js';
import {embeddingTokenBound, generationTokenBound} from './receipt-claims.js';

/** What serves peers' jobs: this node's engine. */
export interface JobExecutor {
    canServe(model: string): boolean,
    /** The size of the model's file, as receipts state it. */
    modelBytes(model: string): number,
    /** The SHA-256 of the model's file as this node announces it, or null. */
    modelSha256(model: string): string | null,
    generate(request: GenerationRequest, options: {onText: TextListener, onProgress: (tokens: number) => void, signal: AbortSignal}): Promise<GenerationResult>,
    embed(model: string, inputs: string[], options: {signal: AbortSignal, maxTokens: number}): Promise<EmbeddingResult>
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
    outcome: 'completed' | 'failed' | 'cancelled',
    /** Why it failed, when it did. */
    error?: InferenceErrorCode | 'requester_backlogged'
}

export interface JobProviderOptions {
    jobs: JobsProtocol,
    identity: NodeIdentity,
    executor: JobExecutor,
    limits: JobProviderLimits,
    /** The network and chain receipts are signed for. */
    domain: SigningDomain,
    /**
     * Keeps a countersigned receipt (the contribution log): the countersignature is sent only once this resolves,
     * so a peer is never told of a record that a crash could lose; defaults to keeping nothing.
     */
    keepReceipt?: (receipt: Receipt) => Promise<void>,
    /** Whether a job id is in this node's log already; defaults to none. */
    loggedJobId?: (jobId: string) => boolean,
    /** How long a requester has to send a job's receipt before the job counts as owed; defaults to 10 s. */
    receiptGraceMs?: number,
    /** Payment for priced jobs (docs/architecture.md, "Payments"); defaults to none: every job is free. */
    payments?: ProviderPayments
}

export interface JobProviderEvents {
    served: [job: ServedJob],
    refused: [peerId: string, code: InferenceErrorCode],
    receipt: [receipt: Receipt],
    /** A peer asked for a countersignature on a receipt that does not describe the job served. */
    receiptRejected: [peerId: string, jobId: string, reason: string],
    /** A priced job's voucher did not pay what it owes: the peer gets no job until it does. */
    voucherRefused: [peerId: string, jobId: string, reason: string]
}

interface ActiveJob {
    peerId: string,
    controller: AbortController
}

interface CompletedJob {
    peerId: string,
    kind: ReceiptBody['kind'],
    model: string,
    promptTokens: number,
    completionTokens: number,
    completedAt: number
}

/** How many finished jobs wait for their receipt; the oldest is forgotten first. */
const RECEIPT_WINDOW = 1024;
/** Countersignatures kept to send again when a requester, missing ours, sends its receipt again. */
const COUNTERSIGNED_WINDOW = 1024;

/** Serves other nodes' jobs within limits, streams their tokens back, and countersigns their receipts. */
export class JobProvider extends EventEmitter<JobProviderEvents> {
    private readonly active = new Map<string, ActiveJob>();
    /** Read with peek(), never get(): a peer's receipts, forged ones included, must not keep a job from ageing out. */
    private readonly awaitingReceipt = new LRUCache<string, CompletedJob>({max: RECEIPT_WINDOW});
    private readonly countersigned = new LRUCache<string, {peerId: string, signature: string}>({max: COUNTERSIGNED_WINDOW});
    /** Jobs refused or finished lately: a cancel for one of them crossed our reply on the wire. */
    private readonly ended = recentJobIds();
    private readonly jobs: JobsProtocol;
    private readonly identity: NodeIdentity;
    private readonly executor: JobExecutor;
    private readonly limits: JobProviderLimits;
    private readonly domain: SigningDomain;
    private readonly keepReceipt: (receipt: Receipt) => Promise<void>;
    private readonly loggedJobId: (jobId: string) => boolean;
    private readonly receiptGraceMs: number;
    private readonly payments: ProviderPayments | undefined;

    constructor(options: JobProviderOptions) {
        super();
        ({jobs: this.jobs, identity: this.identity, executor: this.executor, limits: this.limits, domain: this.domain} = options);
        this.keepReceipt = options.keepReceipt ?? (async () => undefined);
        this.loggedJobId = options.loggedJobId ?? (() => false);
        this.receiptGraceMs = options.receiptGraceMs ?? 10_000;
        this.payments = options.payments;
        this.jobs.on('message', (peerId, message) => this.handle(peerId, message));
        this.jobs.on('peerLeft', (peerId) => {
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
                else if (!this.ended.has(message.jobId))
                    this.jobs.violation(peerId, 'cancel for a job it never submitted');
                return;
            }
            case 'receipt':
                this.countersign(peerId, message.jobId, message.receipt, message.voucher);
                return;
            default:
                return; // requester-side messages are the requester's business
        }
    }

    private fail(peerId: string, jobId: string, error: InferenceError) {
        void this.jobs.send(peerId, {type: 'failed', jobId, error: {...error.toJSON(), message: error.message.slice(0, 1000)}});
    }

    /** A job refused before any work: its id is spent, the peer is told why. */
    private refuse(peerId: string, jobId: string, code: RefusalCode, reason: string) {
        this.ended.set(jobId, true);
        this.fail(peerId, jobId, InferenceError.refused(code, reason));
        this.emit('refused', peerId, code);
    }

    private accept(peerId: string, message: JobSubmission) {
        const refusal = jobRefusal(message, this.limits, {
            activeJobIds: new Set(this.active.keys()), canServe: (model) => this.executor.canServe(model),
            usedJobId: (jobId) => this.ended.has(jobId) || this.awaitingReceipt.has(jobId) || this.loggedJobId(jobId),
            owedReceipts: this.owedReceipts(peerId)
        });
        if (refusal !== undefined) {
            this.refuse(peerId, message.jobId, ...refusal);
            return;
        }
        const {jobId} = message;
        const controller = new AbortController();
        this.active.set(jobId, {peerId, controller});
        this.jobs.holdWhile(peerId, `requester:${submissionModel(message)}`, () => this.active.has(jobId)
            || Date.now() - (this.awaitingReceipt.peek(jobId)?.completedAt ?? 0) < this.receiptGraceMs);
        // Counting a prompt's tokens is free, as it earns no receipt.
        if (this.payments === undefined || this.payments.price() === 0 || (message.type === 'generate' && message.request.countOnly === true)) {
            this.start(peerId, message, controller, false);
            return;
        }
        // A priced job starts once its worst case is covered (docs/architecture.md, "Payments").
        const worst = message.type === 'generate'
            ? generationTokenBound(message.request, this.limits.maxTokensPerJob)
            : embeddingTokenBound(message.inputs);
        this.payments.admit(peerId, jobId, message.payment, worst).then((refusal) => {
            if (refusal === undefined && !controller.signal.aborted)
                return this.start(peerId, message, controller, true);
            this.active.delete(jobId);
            if (refusal !== undefined)
                return this.refuse(peerId, jobId, 'payment_required', refusal);
            // Cancelled while its payment was checked: what was held for it goes.
            this.ended.set(jobId, true);
            this.payments!.served(peerId, jobId, 0);
        }, (error: Error) => {
            this.active.delete(jobId);
            this.refuse(peerId, jobId, 'payment_required', `cannot check the payment: ${error.message}`);
        });
    }

    /** Runs an admitted job; `priced`: what it served is charged (docs/architecture.md, "Payments"). */
    private start(peerId: string, message: JobSubmission, controller: AbortController, priced: boolean) {
        const {jobId} = message;
        const startedAt = performance.now();
        const model = submissionModel(message);
        let backlogged = false;
        /** Tokens sent in text frames: what the requester received, and what its receipt must state. */
        let sentTokens = 0;
        /** The receipt's tokens, once a result went out: what a priced job costs (a cancelled one costs nothing). */
        let charged = 0;
        const record = (outcome: ServedJob['outcome'], promptTokens = 0, completionTokens = 0, error?: ServedJob['error']) => this.emit('served', {
            jobId, peerId, kind: message.type, model, promptTokens, completionTokens, durationMs: performance.now() - startedAt, outcome,
            ...(error !== undefined && {error})
        });
        // A requester that reads too slowly (or not at all) loses its job rather than filling this node's memory.
        const send = (reply: JobMessage) => void this.jobs.send(peerId, reply).then((outcome) => {
            if (outcome === 'backlogged') {
                backlogged = true;
                controller.abort();
            }
        });

        const work = message.type === 'generate'
            ? this.executor.generate({
                ...message.request,
                // A job without a limit gets this node's limit.
                sampling: {...message.request.sampling, maxTokens: message.request.sampling.maxTokens ?? this.limits.maxTokensPerJob}
            }, {
                signal: controller.signal,
                onText: (text, tokens, extras) => {
                    sentTokens += tokens.length;
                    send({type: 'text', jobId, text, tokens, ...extras});
                },
                onProgress: (tokens) => send({type: 'progress', jobId, tokens})
            }).then((result) => {
                if (backlogged)
                    throw InferenceError.cancelled('requester backlogged');
                if (message.request.countOnly !== true)
                    this.awaitingReceipt.set(jobId, {peerId, kind: 'generate', model, promptTokens: result.usage.promptTokens,
                        completionTokens: sentTokens, completedAt: Date.now()});
                if (message.request.countOnly !== true && !controller.signal.aborted)
                    charged = result.usage.promptTokens + sentTokens;
                record(controller.signal.aborted ? 'cancelled' : 'completed', result.usage.promptTokens, result.usage.completionTokens);
                send({type: 'generated', jobId, result});
            })
            : this.executor.embed(message.model, message.inputs, {signal: controller.signal, maxTokens: this.limits.maxEmbeddingTokens}).then((result) => {
                this.awaitingReceipt.set(jobId, {peerId, kind: 'embed', model, promptTokens: result.promptTokens, completionTokens: 0, completedAt: Date.now()});
                charged = result.promptTokens;
                record('completed', result.promptTokens);
                send({type: 'embedded', jobId, result});
            });
        work.catch((error: Error) => {
            if (backlogged) {
                record('failed', 0, 0, 'requester_backlogged');
                return;
            }
            const failure = asPeerFailure(error);
            record(controller.signal.aborted ? 'cancelled' : 'failed', 0, 0, failure.code);
            this.fail(peerId, jobId, failure);
        }).finally(() => {
            this.active.delete(jobId);
            this.ended.set(jobId, true);
            if (priced)
                this.payments!.served(peerId, jobId, charged);
        });
    }

    /** Jobs served for the peer whose receipts are overdue. */
    private owedReceipts(peerId: string) {
        const due = Date.now() - this.receiptGraceMs;
        let owed = 0;
        for (const job of this.awaitingReceipt.values())
            if (job.peerId === peerId && job.completedAt < due)
                owed++;
        return owed;
    }

    /**
     * Countersigns a receipt only if it describes, exactly, a job this node served for that peer, once it is kept;
     * a receipt sent again (our countersignature was lost) gets the same countersignature again.
     */
    private countersign(peerId: string, jobId: string, candidate: Receipt, voucher: WireVoucher | undefined) {
        const done = this.countersigned.get(jobId);
        if (done !== undefined && done.peerId === peerId) {
            void this.jobs.send(peerId, {type: 'countersigned', jobId, signature: done.signature});
            return;
        }
        const job = this.awaitingReceipt.peek(jobId);
        if (job === undefined || job.peerId !== peerId) {
            this.emit('receiptRejected', peerId, jobId, 'no job served for this peer awaits a receipt under that id');
            return;
        }
        let countersigned: Receipt;
        try {
            const receipt = verifyReceipt(candidate, {countersigned: false});
            const problem = this.receiptProblem(receipt.body, jobId, peerId, job);
            if (problem !== undefined)
                throw new ReceiptError(`the receipt does not match the job served: ${problem}`);
            countersigned = countersignReceipt(receipt, this.identity.secretKey);
        } catch (error) {
            // An altered or forged receipt is not countersigned; the job stays unreceipted.
            this.emit('receiptRejected', peerId, jobId, (error as Error).message);
            return;
        }
        this.awaitingReceipt.delete(jobId);
        // The voucher pays for the job; the receipt says it happened, and is countersigned either way.
        this.payments?.voucher(peerId, jobId, voucher).then((problem) => {
            if (problem !== undefined)
                this.emit('voucherRefused', peerId, jobId, problem);
        }, (error: Error) => this.emit('voucherRefused', peerId, jobId, `cannot keep the voucher: ${error.message}`));
        this.keepReceipt(countersigned).then(() => {
            this.countersigned.set(jobId, {peerId, signature: countersigned.providerSignature!});
            void this.jobs.send(peerId, {type: 'countersigned', jobId, signature: countersigned.providerSignature!});
            this.emit('receipt', countersigned);
        }, (error: Error) => {
            // Not kept: not acknowledged either. The requester sends the receipt again, and it is tried again.
            this.awaitingReceipt.set(jobId, job);
            this.emit('receiptRejected', peerId, jobId, `cannot keep the receipt: ${error.message}`);
        });
    }

    /** Why a receipt's body is not the job served, or undefined when it is. */
    private receiptProblem(body: ReceiptBody, jobId: string, peerId: string, job: CompletedJob): string | undefined {
        const domain = domainProblem(body, this.domain);
        if (domain !== undefined)
            return domain;
        if (body.jobId !== jobId || body.provider !== this.identity.id || body.requester !== peerId)
            return 'another job, provider or requester';
        if (body.kind !== job.kind || body.model !== job.model)
            return 'another kind of job or model';
        if (body.modelSha256 !== this.executor.modelSha256(job.model))
            return 'another model file';
        // The requester vouches for the size from its own copy, or names none: never another size.
        if (body.modelBytes !== 0 && body.modelBytes !== this.executor.modelBytes(job.model))
            return 'another model size';
        if (body.promptTokens !== job.promptTokens || body.completionTokens !== job.completionTokens)
            return `${body.promptTokens} + ${body.completionTokens} tokens, not the ${job.promptTokens} + ${job.completionTokens} served`;
        return undefined;
    }
}

/**
 * The error a requester gets for a job that failed here. The engine's own codes pass unchanged, so a request's
 * fault (a prompt too long, a bad schema) reaches the client as it would locally; a model that went away between
 * admission and the engine is a refusal, not the client's fault.
 */
function asPeerFailure(error: Error): InferenceError {
    if (!(error instanceof InferenceError))
        return InferenceError.engineError(error.message);
    return error.code === 'model_not_found' ? InferenceError.refused('model_unavailable', error.message) : error;
}
