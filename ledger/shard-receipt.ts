import crypto from 'hypercore-crypto';
import {LedgerError} from './ledger-error.js';
import {shardReceiptBodySchema, shardReceiptSchema, type ShardReceipt, type ShardReceiptBody} from './records.js';
import {domainProblem, futureTimeProblem, MAX_CLOCK_SKEW_MS, type SigningDomain} from './signing-domain.js';

/**
 * Shard receipts (docs/peer-protocol.md, "Shard channel"): the coordinator signs what a host's layers served for one
 * request of a session; the host checks it against the session and what it measured, and countersigns the same bytes.
 */

const SIGNING_NAMESPACE = 'strongdoge/shard-receipt/v2\n';

/** The exact bytes both sides sign: the fields in a fixed order. */
export function shardReceiptSigningBytes(body: ShardReceiptBody): Buffer {
    const ordered = shardReceiptBodySchema.keyof().options.map((key) => [key, body[key]]);
    return Buffer.from(SIGNING_NAMESPACE + JSON.stringify(ordered), 'utf8');
}

/**
 * Receipts this process verified (or signed), frozen so they cannot change afterwards: the log appends them without
 * checking their signatures again.
 */
const verified = new WeakSet<ShardReceipt>();

function freezeVerified(receipt: ShardReceipt): ShardReceipt {
    Object.freeze(receipt.body);
    verified.add(Object.freeze(receipt));
    return receipt;
}

/** The coordinator's signature: a receipt the host has still to countersign. */
export function signShardReceipt(body: ShardReceiptBody, coordinatorSecretKey: Buffer): ShardReceipt {
    return {body, coordinatorSignature: crypto.sign(shardReceiptSigningBytes(body), coordinatorSecretKey).toString('hex'), hostSignature: null};
}

/** The host's countersignature on a receipt it verified and checked (`shardReceiptProblem`). */
export function countersignShardReceipt(receipt: ShardReceipt, hostSecretKey: Buffer): ShardReceipt {
    if (!verified.has(receipt))
        throw LedgerError.invalidRecord('only a verified shard receipt can be countersigned');
    return freezeVerified({...receipt, hostSignature: crypto.sign(shardReceiptSigningBytes(receipt.body), hostSecretKey).toString('hex')});
}

/** The receipt with the host's countersignature `hostSignature`, verified (the coordinator's side, when it comes back). */
export function withHostSignature(receipt: ShardReceipt, hostSignature: string): ShardReceipt {
    return verifyShardReceipt({...receipt, hostSignature});
}

function signatureMatches(signed: Buffer, signature: string, publicKey: string) {
    return crypto.verify(signed, Buffer.from(signature, 'hex'), Buffer.from(publicKey, 'hex'));
}

/**
 * Checks a receipt's shape, layers, completion time (not in the checker's future) and signatures; `countersigned`
 * (the default, and what every log requires) also requires the host's. Throws LedgerError INVALID_RECORD.
 */
export function verifyShardReceipt(candidate: unknown, {countersigned = true, now = Date.now(), attested}: {
    countersigned?: boolean, now?: number,
    /** A key whose signature is vouched for otherwise (a log's owner: `verifyReceipt`'s `attested`): present, not checked. */
    attested?: string
} = {}): ShardReceipt {
    if (verified.has(candidate as ShardReceipt) && (!countersigned || (candidate as ShardReceipt).hostSignature !== null)
        && futureTimeProblem((candidate as ShardReceipt).body.completedAt, now) === undefined)
        return candidate as ShardReceipt;
    const parsed = shardReceiptSchema.safeParse(candidate);
    if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        throw LedgerError.invalidRecord(`malformed shard receipt at ${issue.path.join('.') || 'top level'}: ${issue.message}`);
    }
    const {body, coordinatorSignature, hostSignature} = parsed.data;
    if (body.firstLayer > body.lastLayer || body.lastLayer >= body.layerCount)
        throw LedgerError.invalidRecord(`layers ${body.firstLayer}-${body.lastLayer} are not within the model's ${body.layerCount}`);
    if (body.host === body.coordinator)
        throw LedgerError.invalidRecord('a node cannot host layers for itself');
    const future = futureTimeProblem(body.completedAt, now);
    if (future !== undefined)
        throw LedgerError.invalidRecord(`a shard receipt ${future}`);
    const signed = shardReceiptSigningBytes(body);
    if (body.coordinator !== attested && !signatureMatches(signed, coordinatorSignature, body.coordinator))
        throw LedgerError.invalidRecord('the coordinator\'s signature does not match the shard receipt');
    if (hostSignature === null) {
        if (countersigned)
            throw LedgerError.invalidRecord('the host has not countersigned the shard receipt');
    } else if (body.host !== attested && !signatureMatches(signed, hostSignature, body.host)) {
        throw LedgerError.invalidRecord('the host\'s signature does not match the shard receipt');
    }
    return attested === undefined ? freezeVerified(parsed.data) : parsed.data;
}

/** What a host expects of the next receipt of a session it hosts: the session's signed request, and its own measure. */
export interface ExpectedShardReceipt {
    domain: SigningDomain,
    session: string,
    /** The peer that opened the session and sent the receipt. */
    coordinator: string,
    /** This node. */
    host: string,
    model: {id: string, bytes: number, sha256: string | null},
    layers: readonly [number, number],
    layerCount: number,
    /** When the session was opened: no receipt of it completed earlier (beyond clock skew). */
    openedAt: string,
    /** The number the next receipt must carry: one more than the last countersigned. */
    sequence: number,
    /** Most tokens the receipt may claim: what the host measured and no earlier receipt claimed. */
    maxTokens: number
}

/**
 * Why a receipt (its coordinator's signature already verified) is not the next one of the session the host expects,
 * or undefined when it is (docs/peer-protocol.md, "Shard channel"). A host countersigns only a receipt that passes.
 */
export function shardReceiptProblem(body: ShardReceiptBody, expected: ExpectedShardReceipt, now = Date.now()): string | undefined {
    const domain = domainProblem(body, expected.domain);
    if (domain !== undefined)
        return domain;
    if (body.coordinator !== expected.coordinator)
        return 'it names another coordinator';
    if (body.host !== expected.host)
        return 'it names another host';
    if (body.session !== expected.session)
        return 'it names another session';
    if (body.model !== expected.model.id || body.modelBytes !== expected.model.bytes || body.modelSha256 !== expected.model.sha256)
        return 'it names another model than the session';
    if (body.firstLayer !== expected.layers[0] || body.lastLayer !== expected.layers[1] || body.layerCount !== expected.layerCount)
        return 'it names other layers than the session hosts';
    if (body.sequence !== expected.sequence)
        return `it is receipt ${body.sequence} of the session; the next is ${expected.sequence}`;
    if (body.tokens > expected.maxTokens)
        return `it claims ${body.tokens} tokens; this host measured at most ${expected.maxTokens} since the session's last receipt`;
    const future = futureTimeProblem(body.completedAt, now);
    if (future !== undefined)
        return future;
    if (Date.parse(body.completedAt) < Date.parse(expected.openedAt) - MAX_CLOCK_SKEW_MS)
        return `it is dated ${body.completedAt}, before the session opened`;
    return undefined;
}
