/**
 * What the anchorer keeps across restarts in `<data dir>/ledger/anchor-state.json` (docs/architecture.md,
 * "Anchoring"): the signed transaction not yet known to be confirmed, and where the owner's authorizations are published, until when.
 */
import {mkdir, readFile, rename, writeFile} from 'node:fs/promises';
import {dirname} from 'node:path';
import {z} from 'zod';
import {LedgerError} from '../ledger-error.js';
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

export class AnchorStateFile {
    constructor(readonly path: string) {}

    /**
     * What a previous run left; nothing pending when there is no file. A damaged file is a STORAGE error: a
     * transaction may be on its way, and losing track of it could anchor a length twice.
     */
    async load(): Promise<AnchorState> {
        let text: string;
        try {
            text = await readFile(this.path, 'utf8');
        } catch (error) {
            if ((error as NodeJS.ErrnoException).code === 'ENOENT')
                return {pending: null, authorizations: []};
            throw LedgerError.storage(`cannot read ${this.path}: ${(error as Error).message}`);
        }
        let json: unknown;
        try {
            json = JSON.parse(text);
        } catch {
            throw this.damaged('not JSON');
        }
        const parsed = anchorStateSchema.safeParse(json);
        if (!parsed.success) {
            const issue = parsed.error.issues[0]!;
            throw this.damaged(`${issue.path.join('.') || 'top level'}: ${issue.message}`);
        }
        return parsed.data;
    }

    /** Written whole or not at all (a rename), before the transaction it names can reach the chain. */
    async save(state: AnchorState) {
        await mkdir(dirname(this.path), {recursive: true});
        const temporary = `${this.path}.tmp`;
        await writeFile(temporary, JSON.stringify(state) + '\n', {mode: 0o600, flush: true});
        await rename(temporary, this.path);
    }

    private damaged(reason: string) {
        return LedgerError.storage(`${this.path} is damaged (${reason}); if no anchoring transaction is pending, remove it`);
    }
}
