/**
 * What the redeemer keeps across restarts in its state file (docs/architecture.md, "Settlement"): the redeem
 * transactions it signed and has not seen confirmed and recorded yet, each with where it was meant to go.
 */
import {z} from 'zod';
import {JsonStateFile} from '../json-state-file.js';
import {redeemRecordSchema} from '../records.js';

const address = z.string().regex(/^0x[0-9a-fA-F]{40}$/);

/** A redeem signed and (maybe) sent: its bytes, nonce and wallet, and the voucher's channel, payer and cumulative amount (wei). */
const pendingRedeemSchema = redeemRecordSchema.pick({chainId: true, contract: true, channel: true, payer: true, amount: true, txHash: true}).extend({
    rawTx: z.string().regex(/^0x(?:[0-9a-fA-F]{2})+$/),
    nonce: z.number().int().nonnegative(),
    wallet: address
}).strict();

const redeemStateSchema = z.object({
    /** In nonce order: sent in that order, so that none waits on a gap. */
    pending: z.array(pendingRedeemSchema).default([])
});

export type PendingRedeem = z.infer<typeof pendingRedeemSchema>;
export type RedeemState = z.infer<typeof redeemStateSchema>;

/** The redeemer's state file: nothing pending when there is none; a damaged one stops redeeming (`JsonStateFile`). */
export class RedeemStateFile extends JsonStateFile<typeof redeemStateSchema> {
    constructor(path: string) {
        super(path, redeemStateSchema, {empty: () => ({pending: []}), damagedHint: 'if no redeem transaction is pending, remove it'});
    }
}
