import {randomBytes} from 'node:crypto';
import {EventEmitter} from 'node:events';
import {Backoff} from '../../../core/backoff.js';
import {RECEIPT_VERSION, signReceiptBody, verifyReceipt, type Receipt, type ReceiptBody} from '../../../ledger/receipt.js';
import type {SigningDomain} from '../../../ledger/signing-domain.js';
import type {NodeIdentity} from '../../../swarm/node-identity.js';
import {InferenceError} from '../../../core/inference-error.js';
import {StallDetector, type StallDetectorOptions} from '../../stall-detector.js';
import type {EmbeddingResult, GenerationRequest, GenerationResult, TextListener} from '../../../core/inference-types.js';
import {toolCallProblem} from '../../../core/tool-calls/tool-call-syntax.js';
import type {JobMessage} from './job-messages.js';
import type {JobsProtocol} from './jobs-protocol.js';
import {embeddingTokenBound, generationTokenBound, promptTokenBound} from './receipt-claims.js';
import {recentJobIds} from './recent-job-ids.js';
import type {JobPayment, RequesterPayments, WireVoucher} from './job-payments.js';
import type {Capabilities} from '../../../swarm/capabilities.js';

/** How long a receipt may wait for the provider's countersignature: it is sent again until then. */
const COUNTERSIGN_TIMEOUT_MS = 60_000;
/** A receipt not countersigned is sent again after this, then after twice as long…: a lost frame costs a second. */
const RECEIPT_RESEND = {initialMs: 1000, maxMs: 15_000};

/** The model a receipt names, as the requester knows it (docs/architecture.md, "Receipts"). */
export interface ReceiptModel {
    /** The SHA-256 the provider announced for the model's file, or null. */
    sha256: string | null,
    /** The file's size if this node can vouch for it (it holds a file with that hash), else 0: the minimum weight. */
    vouchedBytes: number
}

/** What the requester measured of a job: what its receipt states. */
interface Measured {
    kind: ReceiptBody['kind'],
    model: string,
    receiptModel: ReceiptModel,
    promptTokens: number,
    completionTokens: number,
    promptMs: number,
    generationMs: number
}

export interface RemoteJobDeadlines {
    /** Until the first token: covers the peer's prompt processing. */
    firstTokenMs: number,
    /**
     * Between tokens, at most: a peer silent this long is stalled (frozen, or gone without a goodbye). Once tokens
     * flow, the deadline follows their pace (`stall`), so a dead peer is replaced in about the floor's time.
     */
    tokenMs: number,
    /** How the deadline follows the token pace; defaults to `stallDetectorDefaults`. */
    stall?: StallDetectorOptions
}

/**
 * Most bytes of text a token may stand for: vocabulary pieces are short, so a reply far beyond this is not text
 * a model produced, and is not relayed.
 */
const MAX_BYTES_PER_TOKEN = 256;

/** Frames a provider sends to a requester; the others are the provider's business. */
const REQUESTER_BOUND = new Set<JobMessage['type']>(['text', 'progress', 'generated', 'embedded', 'failed', 'countersigned']);

/** What a job's frame handler may do. */
interface JobControl<T> {
    resolve(value: T): void,
    /** Tokens are flowing: the token deadline starts again. */
    touch(): void,
    /** The peer broke the request's limits: the job fails over, the peer is dropped and banned. */
    violate(reason: string): void
}

interface PendingJob {
    peerId: string,
    onMessage: (message: JobMessage) => void,
    fail: (error: InferenceError) => void
}

export interface JobRequesterOptions {
    jobs: JobsProtocol,
    identity: NodeIdentity,
    /** The network and chain receipts are signed for. */
    domain: SigningDomain,
    /** Paying priced peers (docs/architecture.md, "Payments"); defaults to none: only free peers are used. */
    payments?: RequesterPayments
}

export interface JobRequesterEvents {
    receipt: [receipt: Receipt],
    /** A provider's countersignature did not verify: the job stays unreceipted. */
    receiptRejected: [peerId: string, jobId: string, reason: string]
}

/**
 * Sends jobs to peers and follows them: streamed text, deadlines, cancellation, receipts. Every failure is an
 * InferenceError whose code says whose fault it was: the peer's own codes as it sent them, `peer_stalled` and
 * `peer_disconnected` for a peer that went quiet or away.
 */
export class JobRequester extends EventEmitter<JobRequesterEvents> {
    private readonly pending = new Map<string, PendingJob>();
    private readonly receipts = new Map<string, {body: ReceiptBody, requesterSignature: string, timer: NodeJS.Timeout, resend: NodeJS.Timeout | undefined}>();
    private readonly ended = recentJobIds();
    /** Jobs sent with payment terms, until they are paid or released. */
    private readonly priced = new Set<string>();
    private readonly jobs: JobsProtocol;
    private readonly identity: NodeIdentity;
    private readonly domain: SigningDomain;
    private readonly payments: RequesterPayments | undefined;

    constructor(options: JobRequesterOptions) {
        super();
        ({jobs: this.jobs, identity: this.identity, domain: this.domain, payments: this.payments} = options);
        this.jobs.on('message', (peerId, message) => {
            if (!REQUESTER_BOUND.has(message.type))
                return;
            const job = this.pending.get(message.jobId);
            if (message.type === 'countersigned')
                this.completeReceipt(peerId, message.jobId, message.signature);
            else if (job?.peerId === peerId)
                job.onMessage(message);
            else if (!this.ended.has(message.jobId))
                this.jobs.violation(peerId, `${message.type} frame for a job that does not exist`);
        });
        this.jobs.on('peerLeft', (peerId, reason) => {
            for (const job of this.pending.values())
                if (job.peerId === peerId)
                    job.fail(InferenceError.peerDisconnected(`peer disconnected: ${reason.message}`));
        });
    }

    /**
     * Streams a peer's generation. What the peer sends is held to the request's own limits (tokens asked for, text
     * per token): a peer that exceeds them is dropped, and nothing beyond them reaches `onText`.
     */
    generate(peerId: string, request: GenerationRequest, options: {
        onText: TextListener, onProgress?: (tokens: number) => void, signal?: AbortSignal, deadlines: RemoteJobDeadlines, model: ReceiptModel,
        /** Tokens the peer may generate when the request sets no `max_tokens`: the cap it announced. */
        tokenCap: number,
        /** What the peer announced: its price, and where it is paid. */
        capabilities?: Capabilities
    }) {
        const budget = (request.sampling.maxTokens ?? options.tokenCap) - (request.continuation?.tokens.length ?? 0);
        const worst = generationTokenBound(request, options.tokenCap);
        let relayed = 0;
        /** Tokens of the call being written that the peer claimed (`progress`): the call, when it comes, has them all. */
        let claimed = 0;
        return this.run<GenerationResult>(peerId, request.model, async (jobId) => ({type: 'generate', jobId, request,
            ...await this.terms(peerId, options.capabilities, jobId, request.countOnly === true ? 0 : worst)}), options.deadlines, options.signal,
            (message, job) => {
                if (message.type === 'text') {
                    const bytes = Buffer.byteLength(message.text);
                    if (bytes > MAX_BYTES_PER_TOKEN * message.tokens.length)
                        return job.violate(`sent ${bytes} bytes of text for ${message.tokens.length} token(s)`);
                    if (relayed + message.tokens.length > budget)
                        return job.violate(`sent more than the ${budget} token(s) asked for`);
                    const callProblem = message.toolCall && toolCallProblem(request.kind === 'chat' ? request.tools?.tools ?? [] : [], message.toolCall);
                    if (callProblem !== undefined)
                        return job.violate(`sent ${callProblem}`);
                    if (message.tokens.length < claimed)
                        return job.violate(`sent ${message.tokens.length} token(s) after claiming ${claimed}`);
                    claimed = 0;
                    relayed += message.tokens.length;
                    job.touch();
                    options.onText(message.text, message.tokens, {...(message.toolCall && {toolCall: message.toolCall}), ...(message.logprobs && {logprobs: message.logprobs})});
                } else if (message.type === 'progress') {
                    // Keeps the job alive only as far as the budget goes: a peer cannot hold a job by claiming progress.
                    if (relayed + message.tokens > budget)
                        return job.violate(`claimed more than the ${budget} token(s) asked for`);
                    // Each claim must add tokens, and the call must bring them: progress frames are bounded by the budget.
                    if (message.tokens <= claimed)
                        return job.violate(`claimed ${message.tokens} token(s) of a call after claiming ${claimed}`);
                    claimed = message.tokens;
                    job.touch();
                    options.onProgress?.(message.tokens);
                } else if (message.type === 'generated') {
                    const {usage, text, stopSequence, finishReason, timings} = message.result;
                    if (usage.completionTokens > budget)
                        return job.violate(`reported ${usage.completionTokens} tokens for the ${budget} asked for`);
                    if (Buffer.byteLength(text) > MAX_BYTES_PER_TOKEN * Math.max(relayed, usage.completionTokens))
                        return job.violate(`sent a result of ${Buffer.byteLength(text)} bytes of text for ${usage.completionTokens} token(s)`);
                    if (stopSequence !== undefined && (finishReason !== 'stop' || !request.sampling.stop.includes(stopSequence)))
                        return job.violate('reported a stop sequence the request did not ask for');
                    // Every token generated was sent, or announced as part of a call that max_tokens cut short: a claim
                    // of more (or fewer) is a lie. The receipt states only what arrived.
                    if (usage.completionTokens !== relayed + claimed)
                        return job.violate(`reported ${usage.completionTokens} tokens after sending ${relayed}${claimed > 0 ? ` and announcing ${claimed}` : ''}`);
                    const promptBound = promptTokenBound(request);
                    if (usage.promptTokens > promptBound)
                        return job.violate(`reported ${usage.promptTokens} prompt tokens for a prompt of at most ${promptBound}`);
                    job.resolve(message.result);
                    // Counting a prompt is no work to credit.
                    if (request.countOnly !== true)
                        this.requestReceipt(peerId, message.jobId, {
                            kind: 'generate', model: request.model, receiptModel: options.model, promptTokens: usage.promptTokens,
                            completionTokens: relayed, promptMs: timings.promptMs, generationMs: timings.generationMs
                        });
                } else {
                    job.violate(`${message.type} frame for a generation`);
                }
            });
    }

    embed(peerId: string, model: string, inputs: string[], options: {signal?: AbortSignal, deadlines: RemoteJobDeadlines, model: ReceiptModel,
        capabilities?: Capabilities}) {
        return this.run<EmbeddingResult>(peerId, model, async (jobId) => ({type: 'embed', jobId, model, inputs,
            ...await this.terms(peerId, options.capabilities, jobId, embeddingTokenBound(inputs))}), options.deadlines, options.signal,
            (message, job) => {
                if (message.type !== 'embedded')
                    return job.violate(`${message.type} frame for an embedding`);
                if (message.result.vectors.length !== inputs.length)
                    return job.violate(`${message.result.vectors.length} vectors for ${inputs.length} inputs`);
                const bound = embeddingTokenBound(inputs);
                if (message.result.promptTokens > bound)
                    return job.violate(`reported ${message.result.promptTokens} tokens for inputs of at most ${bound}`);
                job.resolve(message.result);
                this.requestReceipt(peerId, message.jobId, {
                    kind: 'embed', model, receiptModel: options.model, promptTokens: message.result.promptTokens, completionTokens: 0,
                    promptMs: 0, generationMs: 0
                });
            });
    }

    /**
     * A priced peer's payment terms for the job, its worst case held on a channel: a `payment_required` refusal when
     * this node cannot pay it (docs/architecture.md, "Payments"). Nothing for a free peer, or a count (`worst` 0).
     */
    private async terms(peerId: string, capabilities: Capabilities | undefined, jobId: string, worst: number) {
        if (this.payments === undefined || capabilities === undefined || worst === 0 || (capabilities.pricePerMillionTokens ?? 0) === 0)
            return {};
        let payment: JobPayment | undefined;
        try {
            payment = await this.payments.reserve(peerId, capabilities, jobId, worst);
        } catch (error) {
            throw InferenceError.refused('payment_required', `cannot pay the peer: ${(error as Error).message}`);
        }
        if (payment === undefined)
            return {};
        this.priced.add(jobId);
        return {payment};
    }

    private run<T>(
        peerId: string, model: string, submit: (jobId: string) => Promise<JobMessage>, deadlines: RemoteJobDeadlines, signal: AbortSignal | undefined,
        onResult: (message: JobMessage, job: JobControl<T>) => void
    ): Promise<T> {
        const jobId = randomBytes(16).toString('hex');
        return new Promise<T>((resolve, reject) => {
            let timer: NodeJS.Timeout | undefined;
            const pace = new StallDetector(deadlines.stall);
            let lastFrameAt: number | undefined;
            const settle = () => {
                clearTimeout(timer);
                this.pending.delete(jobId);
                this.ended.set(jobId, true);
                signal?.removeEventListener('abort', onAbort);
            };
            const fail = (error: InferenceError) => {
                settle();
                // A job that ends without a result is not paid: what it held on a channel is free again.
                if (this.priced.delete(jobId))
                    this.payments?.release(jobId);
                if (error.code === 'peer_stalled' || error.code === 'cancelled')
                    void this.jobs.send(peerId, {type: 'cancel', jobId});
                reject(error);
            };
            const arm = (ms: number) => {
                clearTimeout(timer);
                timer = setTimeout(() => fail(InferenceError.peerStalled(`peer sent nothing for ${ms} ms`)), ms);
            };
            const onAbort = () => fail(InferenceError.cancelled('cancelled by the client'));
            if (signal?.aborted) {
                reject(InferenceError.cancelled('cancelled by the client'));
                return;
            }
            signal?.addEventListener('abort', onAbort, {once: true});
            this.pending.set(jobId, {
                peerId, fail,
                onMessage: (message) => {
                    if (message.type === 'failed') {
                        // A provider that says this node owes it (a voucher lost to a crash on either side): the next
                        // job's terms bring the latest voucher again (docs/architecture.md, "Payments").
                        if (message.error.code === 'payment_required' && /(^|\s)owes \d/.test(message.error.message))
                            this.payments?.owes?.(peerId);
                        fail(InferenceError.from(message.error));
                    }
                    else
                        onResult(message, {
                            resolve: (value) => {
                                settle();
                                resolve(value);
                            },
                            touch: () => {
                                const now = performance.now();
                                if (lastFrameAt !== undefined)
                                    pace.record(now - lastFrameAt);
                                lastFrameAt = now;
                                arm(Math.min(deadlines.tokenMs, pace.deadlineMs(false)));
                            },
                            violate: (reason) => {
                                fail(InferenceError.peerViolation(`peer ${reason}`));
                                this.jobs.violation(peerId, reason);
                            }
                        });
                }
            });
            this.jobs.holdWhile(peerId, `provider:${model}`, () => this.pending.has(jobId) || this.receipts.has(jobId));
            arm(deadlines.firstTokenMs);
            submit(jobId).then((message) => {
                if (!this.pending.has(jobId)) {
                    // Ended (cancelled, timed out) while its terms were prepared: nothing was sent, nothing is held.
                    if (this.priced.delete(jobId))
                        this.payments?.release(jobId);
                    return;
                }
                return this.jobs.send(peerId, message).then((outcome) => {
                    if (outcome !== 'sent')
                        fail(InferenceError.peerDisconnected(outcome === 'backlogged' ? 'the connection to the peer is backlogged' : 'peer is not connected'));
                });
            }, (error: unknown) => fail(error instanceof InferenceError ? error : InferenceError.refused('payment_required', String(error))));
        });
    }

    /**
     * Signs what was measured and asks the provider to countersign, again after a while until it does (a frame
     * lost either way costs a resend, not the receipt), for COUNTERSIGN_TIMEOUT_MS at most.
     */
    private requestReceipt(peerId: string, jobId: string, measured: Measured) {
        if (!this.priced.delete(jobId)) {
            this.sendReceipt(peerId, jobId, measured, undefined);
            return;
        }
        // The voucher is kept before it goes out with the receipt: a crash can never sign less than was sent. Signed on
        // the next turn of the loop, so the client's answer does not wait for it.
        setImmediate(() => void this.payments!.pay(peerId, jobId, measured.promptTokens + measured.completionTokens).then(
            (voucher) => this.sendReceipt(peerId, jobId, measured, voucher),
            (error: Error) => {
                this.emit('receiptRejected', peerId, jobId, `cannot pay for the job: ${error.message}`);
                this.sendReceipt(peerId, jobId, measured, undefined);
            }));
    }

    private sendReceipt(peerId: string, jobId: string, measured: Measured, voucher: WireVoucher | undefined) {
        const body: ReceiptBody = {
            version: RECEIPT_VERSION, ...this.domain, kind: measured.kind, jobId, model: measured.model,
            modelSha256: measured.receiptModel.sha256, modelBytes: measured.receiptModel.vouchedBytes,
            promptTokens: measured.promptTokens, completionTokens: measured.completionTokens,
            promptMs: measured.promptMs, generationMs: measured.generationMs,
            provider: peerId, requester: this.identity.id, completedAt: new Date().toISOString()
        };
        const requesterSignature = signReceiptBody(body, this.identity.secretKey);
        const frame: JobMessage = {type: 'receipt', jobId, receipt: {body, requesterSignature, providerSignature: null}, ...(voucher && {voucher})};
        const backoff = new Backoff(RECEIPT_RESEND);
        const send = () => {
            const entry = this.receipts.get(jobId);
            if (entry === undefined)
                return;
            void this.jobs.send(peerId, frame);
            entry.resend = setTimeout(send, backoff.failed());
            entry.resend.unref();
        };
        const timer = setTimeout(() => this.forgetReceipt(jobId), COUNTERSIGN_TIMEOUT_MS);
        timer.unref();
        this.receipts.set(jobId, {body, requesterSignature, timer, resend: undefined});
        send();
    }

    private forgetReceipt(jobId: string) {
        const pending = this.receipts.get(jobId);
        clearTimeout(pending?.timer);
        clearTimeout(pending?.resend);
        this.receipts.delete(jobId);
    }

    private completeReceipt(peerId: string, jobId: string, providerSignature: string) {
        const pending = this.receipts.get(jobId);
        if (pending === undefined || pending.body.provider !== peerId)
            return;
        this.forgetReceipt(jobId);
        try {
            this.emit('receipt', verifyReceipt({body: pending.body, requesterSignature: pending.requesterSignature, providerSignature}));
        } catch (error) {
            this.emit('receiptRejected', peerId, jobId, (error as Error).message);
        }
    }
}
