import {createHash} from 'node:crypto';
import type {Capabilities} from '../../../swarm/capabilities.js';
import type {WireVoucher} from '../../remote/jobs/job-payments.js';

/**
 * Paying a priced host for a pipeline stage (docs/peer-protocol.md, "Shard channel"; docs/architecture.md,
 * "Payments"): the coordinator pays each receipt of a session its share of the layers at the host's announced price,
 * with the voucher in the receipt's frame. The node's payments by key (node/node-payments.ts) do the work.
 */

/**
 * Tokens a session's payment window holds per sequence the coordinator decodes: `--max-job-tokens`' default. A
 * host cannot see where one request ends and the next begins (it sees graph passes), and receipts are numbered as
 * requests end, so the worst case is held per session, not per request: each side holds this window's cost on the
 * channel for the session's next receipt, and holds it again after each receipt is paid.
 */
export const PAYMENT_WINDOW_TOKENS_PER_SEQUENCE = 4096;

/** The tokens of a session's payment window: one window per sequence decoded together. */
export function paymentWindowTokens(sequences: number) {
    return PAYMENT_WINDOW_TOKENS_PER_SEQUENCE * sequences;
}

/**
 * The payment key of a session's receipt `sequence` (both sides derive it): the first 32 hex digits of the SHA-256 of
 * `<session>:<sequence>`, as a job id names a job's payment.
 */
export function shardPaymentKey(session: string, sequence: number) {
    return createHash('sha256').update(`${session}:${sequence}`).digest('hex').slice(0, 32);
}

/** The coordinator's side: what it asks of the node's payments to pay a priced host (node/node-payments.ts). */
export interface ShardPayerPayments {
    /** Holds `worst` wei for `key` on a channel to the peer (opening or topping one up within --auto-deposit): the channel; rejects with why not. */
    reserveWei(peerId: string, capabilities: Capabilities, key: string, worst: bigint): Promise<string>,
    /** `key` was served for `cost` wei: the next voucher, kept before it is returned; undefined when it costs nothing. */
    payWei(peerId: string, key: string, cost: bigint): Promise<WireVoucher | undefined>,
    /** `key` will not be paid: its reservation is dropped. */
    release(key: string): void
}

/** The host's side: its price, and whether a session's payments cover the work (node/node-payments.ts). */
export interface ShardPayeePayments {
    /** This node's price in DOGE per million tokens; 0 is free, and no payment is asked. */
    price(): number,
    /** Why `peerId` may not run `key` whose worst case is `worst` wei on `channel` (vouchers owed, a deposit too small…), or undefined once it is held. */
    admitWei(peerId: string, key: string, channel: string, worst: bigint): Promise<string | undefined>,
    /** `key` ended having served `cost` wei (0 releases its hold): the peer owes it. */
    servedWei(peerId: string, key: string, cost: bigint): void,
    /** The voucher that came with `key`'s receipt: why it does not pay, or undefined once it is kept. */
    voucherFor(peerId: string, key: string, wire: WireVoucher | undefined): Promise<string | undefined>
}

export type ShardPayments = ShardPayerPayments & ShardPayeePayments;
