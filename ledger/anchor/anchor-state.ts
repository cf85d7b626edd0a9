/**
 * What the anchorer keeps across restarts in `<data dir>/ledger/anchor-state.json` (docs/architecture.md,
 * "Anchoring"): the signed transaction not yet known to be confirmed, and where the owner's authorizations are published, until when.
 */
import {z} from 'zod';
import {JsonStateFile} from '../json-state-file.js';
import {anchorRecordSchema} from '../records.js';

const address = z.string().regex(/^0x[0-9a-fA-F]{40}$/);

/** A transaction signed and (maybe) sent, not yet known to be confirmed, and where it was meant to go. */
const pendingAnchorSchema = anchorRecordSchema.pick({txHash: true, logLength: true, treeHash: true, chainId: true, contract: true}).extend({
    rawTx: z.string().regex(/^0x(?:[0-9a-fA-F]{2})+$/),
    nonce: z.number().int().nonnegative(),
    wallet: address
});

const anchorStateSchema = z.object({
    pending: pendingAnchorSchema.nullable().default(null),
    /** The owner's authorizations confirmed on chain: where (`chainId:contract:wallet`, lower case) and until when (unix seconds). */
    authorizations: z.array(z.object({
        key: z.string().regex(/^\d+:0x[0-9a-f]{40}:0x[0-9a-f]{40}$/),
        validUntil: z.number().int().positive()
    })).default([])
});

export type PendingAnchor = z.infer<typeof pendingAnchorSchema>;
export type AnchorState = z.infer<typeof anchorStateSchema>;

/** Where the owner's authorization of `wallet` on `contract` is remembered in `AnchorState.authorizations`. */
export function authorizationKey(chainId: number, contract: string, wallet: string) {
    return `${chainId}:${contract.toLowerCase()}:${wallet.toLowerCase()}`;
}

/** The anchorer's state file: nothing pending when there is none; a damaged one stops anchoring (`JsonStateFile`). */
export class AnchorStateFile extends JsonStateFile<typeof anchorStateSchema> {
    constructor(path: string) {
        super(path, anchorStateSchema, {empty: () => ({pending: null, authorizations: []}),
            damagedHint: 'if no anchoring transaction is pending, remove it'});
    }
}
