import crypto from 'hypercore-crypto';
import {LedgerError} from './ledger-error.js';
import {verifyReceipt} from './receipt.js';
import {ledgerRecordSchema, type LedgerRecord} from './records.js';
import {verifyShardReceipt} from './shard-receipt.js';

/** What makes a record acceptable in a given node's log: checked before every append, and again by `verify`. */

const HEADER_NAMESPACE = 'strongdoge/ledger/v1\n';

/** The bytes an owner signs to claim a log: the log's key. */
function headerSigningBytes(coreKey: string) {
    return Buffer.from(HEADER_NAMESPACE + coreKey, 'utf8');
}

export function signLogHeader(coreKey: string, secretKey: Buffer) {
    return crypto.sign(headerSigningBytes(coreKey), secretKey).toString('hex');
}

/** Where an owner lets a wallet anchor its log: the log, the wallet, the chain and the contract. */
export interface AnchorAuthorization {
    core: string,
    sender: string,
    chainId: number,
    contract: string
}

const AUTHORIZATION_NAMESPACE = 'strongdoge/anchor-authorization/v1\n';

function authorizationBytes({core, sender, chainId, contract}: AnchorAuthorization) {
    return Buffer.from(AUTHORIZATION_NAMESPACE + JSON.stringify([core, sender.toLowerCase(), chainId, contract.toLowerCase()]), 'utf8');
}

/** The owner's permission for `sender` to anchor its log: published on chain with `authorize()`. */
export function signAnchorAuthorization(authorization: AnchorAuthorization, ownerSecretKey: Buffer) {
    return crypto.sign(authorizationBytes(authorization), ownerSecretKey).toString('hex');
}

export function verifyAnchorAuthorization(authorization: AnchorAuthorization, owner: string, signature: string) {
    return /^[0-9a-f]{128}$/.test(signature)
        && crypto.verify(authorizationBytes(authorization), Buffer.from(signature, 'hex'), Buffer.from(owner, 'hex'));
}

/**
 * Parses and checks one record of the log `coreKey` owned by `owner` at `index`: the header comes first and
 * only first, and is the owner's; every receipt verifies and names the owner in the role the record claims.
 * Throws LedgerError INVALID_RECORD saying what is wrong.
 */
export function checkRecord(candidate: unknown, {owner, coreKey, index}: {owner: string, coreKey: string, index: number}): LedgerRecord {
    const parsed = ledgerRecordSchema.safeParse(candidate);
    if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        throw LedgerError.invalidRecord(`malformed record at ${issue.path.join('.') || 'top level'}: ${issue.message}`);
    }
    const record = parsed.data;
    if ((record.type === 'header') !== (index === 0))
        throw LedgerError.invalidRecord(index === 0 ? 'the first record is not the log\'s header' : 'a header after the first record');
    try {
        switch (record.type) {
            case 'header':
                if (record.owner !== owner || record.core !== coreKey)
                    throw LedgerError.invalidRecord('the header names another owner or another log');
                if (!crypto.verify(headerSigningBytes(coreKey), Buffer.from(record.signature, 'hex'), Buffer.from(owner, 'hex')))
                    throw LedgerError.invalidRecord('the header is not signed by its owner');
                break;
            // The candidate's own receipt object: one this process verified already is not checked again.
            case 'served':
                if (verifyReceipt((candidate as typeof record).receipt).body.provider !== owner)
                    throw LedgerError.invalidRecord('a served receipt whose provider is not this log\'s owner');
                break;
            case 'consumed':
                if (verifyReceipt((candidate as typeof record).receipt).body.requester !== owner)
                    throw LedgerError.invalidRecord('a consumed receipt whose requester is not this log\'s owner');
                break;
            // Both signatures, always: a shard receipt the host has not countersigned never reaches a log.
            case 'shard':
                if (verifyShardReceipt((candidate as typeof record).receipt).body.host !== owner)
                    throw LedgerError.invalidRecord('a shard receipt whose host is not this log\'s owner');
                break;
            case 'shard-consumed':
                if (verifyShardReceipt((candidate as typeof record).receipt).body.coordinator !== owner)
                    throw LedgerError.invalidRecord('a consumed shard receipt whose coordinator is not this log\'s owner');
                break;
            case 'anchor':
                break;
        }
    } catch (error) {
        throw error instanceof LedgerError ? error : LedgerError.invalidRecord((error as Error).message);
    }
    return record;
}

/** What makes two records the same piece of work: a job (by id and side), or a receipt of a session (by number and side). */
export function workKey(record: LedgerRecord): string | undefined {
    switch (record.type) {
        case 'served':
        case 'consumed':
            return `${record.type}:${record.receipt.body.jobId}`;
        case 'shard':
        case 'shard-consumed':
            return `${record.type}:${record.receipt.body.session}:${record.receipt.body.sequence}`;
        default:
            return undefined;
    }
}
