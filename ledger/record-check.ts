import crypto from 'hypercore-crypto';
import {LedgerError} from './ledger-error.js';
import {verifyReceipt} from './receipt.js';
import {ledgerRecordSchema, type LedgerRecord} from './records.js';
import {verifyShardReceipt} from './shard-receipt.js';
import {domainProblem, futureTimeProblem, type SigningDomain} from './signing-domain.js';

/** What makes a record acceptable in a given node's log: checked before every append, and again by `verify`. */

/** v2: the header names its signing domain (network, chain id). */
const HEADER_NAMESPACE = 'strongdoge/ledger/v2\n';

/** What an owner signs to claim a log: the log's key, for one network and chain. */
export interface LogClaim extends SigningDomain {
    core: string
}

function headerSigningBytes({core, network, chainId}: LogClaim) {
    return Buffer.from(HEADER_NAMESPACE + JSON.stringify([network, chainId, core]), 'utf8');
}

export function signLogHeader(claim: LogClaim, secretKey: Buffer) {
    return crypto.sign(headerSigningBytes(claim), secretKey).toString('hex');
}

/**
 * Where an owner lets a wallet anchor its log, and until when: the signing domain (network, chain id, contract), the
 * log, the wallet, and the expiry in unix seconds (docs/architecture.md, "Anchoring").
 */
export interface AnchorAuthorization extends SigningDomain {
    contract: string,
    core: string,
    sender: string,
    validUntil: number
}

/** v2: the network and an expiry joined the signed fields. */
const AUTHORIZATION_NAMESPACE = 'strongdoge/anchor-authorization/v2\n';
/** A revocation names the authorization it ends, under its own namespace: one cannot pass for the other. */
const REVOCATION_NAMESPACE = 'strongdoge/anchor-revocation/v1\n';

function authorizationBytes(namespace: string, {network, chainId, contract, core, sender, validUntil}: AnchorAuthorization) {
    return Buffer.from(namespace + JSON.stringify([network, chainId, contract.toLowerCase(), core, sender.toLowerCase(), validUntil]), 'utf8');
}

function verifyOwnerSignature(bytes: Buffer, owner: string, signature: string) {
    return /^[0-9a-f]{128}$/.test(signature) && /^[0-9a-f]{64}$/.test(owner)
        && crypto.verify(bytes, Buffer.from(signature, 'hex'), Buffer.from(owner, 'hex'));
}

/** The owner's permission for `sender` to anchor its log: published on chain with `authorize()`. */
export function signAnchorAuthorization(authorization: AnchorAuthorization, ownerSecretKey: Buffer) {
    return crypto.sign(authorizationBytes(AUTHORIZATION_NAMESPACE, authorization), ownerSecretKey).toString('hex');
}

export function verifyAnchorAuthorization(authorization: AnchorAuthorization, owner: string, signature: string) {
    return verifyOwnerSignature(authorizationBytes(AUTHORIZATION_NAMESPACE, authorization), owner, signature);
}

/** The owner's withdrawal of that permission: published on chain with `revoke()`, by any wallet. */
export function signAnchorRevocation(authorization: AnchorAuthorization, ownerSecretKey: Buffer) {
    return crypto.sign(authorizationBytes(REVOCATION_NAMESPACE, authorization), ownerSecretKey).toString('hex');
}

export function verifyAnchorRevocation(authorization: AnchorAuthorization, owner: string, signature: string) {
    return verifyOwnerSignature(authorizationBytes(REVOCATION_NAMESPACE, authorization), owner, signature);
}

/**
 * Parses and checks one record of the log `coreKey` owned by `owner` at `index`: the header comes first and
 * only first, and is the owner's; every receipt verifies and names the owner in the role the record claims.
 * Throws LedgerError INVALID_RECORD saying what is wrong.
 */
export function checkRecord(candidate: unknown, {owner, coreKey, index, domain, attestedByLog = false}: {
    owner: string, coreKey: string, index: number,
    /** The log's signing domain (its header's): a receipt signed for another network or chain is refused. */
    domain?: SigningDomain,
    /**
     * The record was read from the owner's log, whose blocks Hypercore verified against the tree the log's key signs
     * (and the header binds that key to the owner): the owner's own signature in a receipt is vouched for by the log,
     * and only the other party's is checked (docs/architecture.md, "Verification"). Defaults to false: every signature.
     */
    attestedByLog?: boolean
}): LedgerRecord {
    const parsed = ledgerRecordSchema.safeParse(candidate);
    if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        throw LedgerError.invalidRecord(`malformed record at ${issue.path.join('.') || 'top level'}: ${issue.message}`);
    }
    const record = parsed.data;
    if ((record.type === 'header') !== (index === 0))
        throw LedgerError.invalidRecord(index === 0 ? 'the first record is not the log\'s header' : 'a header after the first record');
    const future = futureTimeProblem(record.at);
    if (future !== undefined)
        throw LedgerError.invalidRecord(`the record: ${future}`);
    const foreign = domain === undefined || !('receipt' in record) ? undefined : domainProblem(record.receipt.body, domain);
    if (foreign !== undefined)
        throw LedgerError.invalidRecord(`a receipt of another domain: ${foreign}`);
    try {
        switch (record.type) {
            case 'header':
                if (record.owner !== owner || record.core !== coreKey)
                    throw LedgerError.invalidRecord('the header names another owner or another log');
                if (!verifyOwnerSignature(headerSigningBytes(record), owner, record.signature))
                    throw LedgerError.invalidRecord('the header is not signed by its owner');
                break;
            // The candidate's own receipt object: one this process verified already is not checked again.
            // The owner's role is checked first: only then may its own signature count as attested by its log.
            case 'served':
                if (record.receipt.body.provider !== owner)
                    throw LedgerError.invalidRecord('a served receipt whose provider is not this log\'s owner');
                verifyReceipt((candidate as typeof record).receipt, {parsed: record.receipt, ...(attestedByLog && {attested: owner})});
                break;
            case 'consumed':
                if (record.receipt.body.requester !== owner)
                    throw LedgerError.invalidRecord('a consumed receipt whose requester is not this log\'s owner');
                verifyReceipt((candidate as typeof record).receipt, {parsed: record.receipt, ...(attestedByLog && {attested: owner})});
                break;
            // Both signatures present, always: a shard receipt the host has not countersigned never reaches a log.
            case 'shard':
                if (record.receipt.body.host !== owner)
                    throw LedgerError.invalidRecord('a shard receipt whose host is not this log\'s owner');
                verifyShardReceipt((candidate as typeof record).receipt, {...(attestedByLog && {attested: owner})});
                break;
            case 'shard-consumed':
                if (record.receipt.body.coordinator !== owner)
                    throw LedgerError.invalidRecord('a consumed shard receipt whose coordinator is not this log\'s owner');
                verifyShardReceipt((candidate as typeof record).receipt, {...(attestedByLog && {attested: owner})});
                break;
            case 'anchor':
            case 'voucher':
            case 'payment':
            case 'redeem':
                break;
        }
    } catch (error) {
        throw error instanceof LedgerError ? error : LedgerError.invalidRecord((error as Error).message);
    }
    return record;
}

/**
 * What makes two records the same piece of work: a job (by id and side), a receipt of a session (by number and side),
 * or a redeem (by its transaction: the redeemer records each once, docs/architecture.md "Settlement").
 */
export function workKey(record: LedgerRecord): string | undefined {
    switch (record.type) {
        case 'redeem':
            return `redeem:${record.txHash}`;
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
