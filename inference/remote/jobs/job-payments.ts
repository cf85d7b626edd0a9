import {z} from 'zod';
import type {Capabilities} from '../../../swarm/capabilities.js';

/**
 * Paying for peers' jobs (docs/architecture.md, "Payments"): the terms a requester attaches to a job for a priced
 * peer, and what the requester and the provider ask of the node's payments. With price 0 nothing of this runs.
 */

/** A voucher on the wire (ledger/payments/vouchers.ts parses it): hostile until checked. */
export const wireVoucherSchema = z.object({
    channel: z.string().max(80),
    amount: z.string().max(80),
    signature: z.string().max(140)
}).strict();

export type WireVoucher = z.infer<typeof wireVoucherSchema>;

/** A priced job's terms: the channel the requester pays through, and the price (DOGE per million tokens) it pays. */
export const jobPaymentSchema = z.object({
    channel: z.string().regex(/^0x[0-9a-f]{64}$/),
    pricePerMillion: z.number().positive().max(1e12),
    /** The requester's latest voucher on the channel, sent again after a refusal for debt: it pays what its receipts could not. */
    voucher: wireVoucherSchema.optional()
}).strict();

export type JobPayment = z.infer<typeof jobPaymentSchema>;


/** The requester's side: whom it can pay, the terms of each job, and the voucher that goes with each receipt. */
export interface RequesterPayments {
    /**
     * Why this node cannot pay `capabilities`' node for a job of up to `tokens` now (no wallet, no channel with enough
     * deposit and nothing it may deposit on its own…), or undefined when it can (or the peer is free).
     */
    cannotPay(peerId: string, capabilities: Capabilities, tokens: number): string | undefined,
    /**
     * Holds a job's worst case (`tokens` at the peer's price) on a channel to the peer, opening or topping one up when
     * `--auto-deposit` allows: the terms to send, or undefined for a free peer. Rejects (a refusal) when it cannot.
     */
    reserve(peerId: string, capabilities: Capabilities, jobId: string, tokens: number): Promise<JobPayment | undefined>,
    /** The job was served `tokens` (its receipt's): the next voucher, kept before it is returned; undefined when free. */
    pay(peerId: string, jobId: string, tokens: number): Promise<WireVoucher | undefined>,
    /** The job ended without a receipt: its reservation is dropped. */
    release(jobId: string): void,
    /** The peer refused a job as owing: the next job's terms carry this node's latest voucher to it again. */
    owes?(peerId: string): void
}

/** The provider's side: whether a priced job is covered, what it earned, and the vouchers that pay for it. */
export interface ProviderPayments {
    /** This node's price in DOGE per million tokens; 0 is free, and no payment is checked. */
    price(): number,
    /**
     * Why a job of up to `tokens` from `peerId` with `payment` is refused (no terms, too low a price, a channel not
     * the peer's or not to this node, a deposit that does not cover it, vouchers owed), or undefined once its worst
     * case is reserved.
     */
    admit(peerId: string, jobId: string, payment: JobPayment | undefined, tokens: number): Promise<string | undefined>,
    /** The job ended, `tokens` served (0 when it ended without a result): its reservation becomes what the peer owes. */
    served(peerId: string, jobId: string, tokens: number): void,
    /** A voucher sent with a job's receipt: why it is refused, or undefined once it is kept. */
    voucher(peerId: string, jobId: string, voucher: WireVoucher | undefined): Promise<string | undefined>
}
