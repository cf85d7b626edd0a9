import crypto from 'hypercore-crypto';
import {z} from 'zod';
import {futureTimeProblem, recordTime, signingDomainFields} from './signing-domain.js';

/**
 * A receipt for one remote job: what was served, by whom, for whom, signed by both. The requester signs what it
 * measured (the tokens it received, a prompt count bounded by what it sent, the model size only if it can vouch
 * for it); the provider countersigns the same bytes if they describe the job it served (docs/architecture.md,
 * "Receipts").
 */
export const RECEIPT_VERSION = 3;

const hexKey = z.string().regex(/^[0-9a-f]{64}$/);
const hexSignature = z.string().regex(/^[0-9a-f]{128}$/);
const count = z.number().int().nonnegative().max(10_000_000);
const millis = z.number().nonnegative().max(7 * 24 * 3600 * 1000);

export const receiptBodySchema = z.object({
    version: z.literal(RECEIPT_VERSION),
    ...signingDomainFields,
    kind: z.enum(['generate', 'embed']),
    jobId: z.string().regex(/^[0-9a-f]{32}$/),
    model: z.string().min(1).max(128),
    /** The model file's SHA-256 as the provider announced it (null: it announced none); it countersigns only its own. */
    modelSha256: z.string().regex(/^[0-9a-f]{64}$/).nullable(),
    /**
     * The file's size as the requester can vouch for it (its own copy with that SHA-256), else 0: the model then
     * counts at the minimum weight. The provider countersigns only 0 or its own file's size.
     */
    modelBytes: z.number().int().nonnegative().max(2 ** 50),
    promptTokens: count,
    /** The tokens the requester received (0 for an embedding). */
    completionTokens: count,
    promptMs: millis,
    generationMs: millis,
    provider: hexKey,
    requester: hexKey,
    completedAt: recordTime
}).strict();

export const receiptSchema = z.object({
    body: receiptBodySchema,
    requesterSignature: hexSignature,
    providerSignature: hexSignature.nullable()
}).strict();

export type ReceiptBody = z.infer<typeof receiptBodySchema>;
export type Receipt = z.infer<typeof receiptSchema>;

const SIGNING_NAMESPACE = 'strongdoge/receipt/v3\n';

/** The exact bytes both parties sign: the fields in a fixed order, so equal bodies sign equally. */
export function receiptSigningBytes(body: ReceiptBody): Buffer {
    const ordered = receiptBodySchema.keyof().options.map((key) => [key, body[key]]);
    return Buffer.from(SIGNING_NAMESPACE + JSON.stringify(ordered), 'utf8');
}

export function signReceiptBody(body: ReceiptBody, secretKey: Buffer): string {
    return crypto.sign(receiptSigningBytes(body), secretKey).toString('hex');
}

export class ReceiptError extends Error {
    constructor(message: string) {
        super(message);
        this.name = 'ReceiptError';
    }
}

function checkSignature(signed: Buffer, signature: string, publicKey: string, who: string) {
    if (!crypto.verify(signed, Buffer.from(signature, 'hex'), Buffer.from(publicKey, 'hex')))
        throw new ReceiptError(`the ${who}'s signature does not match the receipt`);
}

/**
 * Receipts this process verified (or countersigned after verifying), frozen so they cannot change afterwards: the
 * ledger appends them without checking their signatures again, which would otherwise cost it two signature checks
 * a record (docs/architecture.md, "Ledger").
 */
const verified = new WeakSet<Receipt>();

function freezeVerified(receipt: Receipt): Receipt {
    Object.freeze(receipt.body);
    verified.add(Object.freeze(receipt));
    return receipt;
}

/**
 * Checks a receipt's shape, numbers and signatures; `countersigned` also requires the provider's.
 * Throws ReceiptError saying what is wrong.
 */
export function verifyReceipt(candidate: unknown, {countersigned = true, parsed, attested}: {
    countersigned?: boolean,
    /** The candidate as a schema that holds `receiptSchema` parsed it already (a ledger record's): not parsed again. */
    parsed?: Receipt,
    /**
     * A key whose signature on this receipt is vouched for otherwise (a log's owner, whose signed log holds it:
     * docs/architecture.md, "Verification"): it must be there, and is not checked again.
     */
    attested?: string
} = {}): Receipt {
    if (verified.has(candidate as Receipt) && (!countersigned || (candidate as Receipt).providerSignature !== null))
        return candidate as Receipt;
    const receipt = parsed ?? parseReceipt(candidate);
    if (receipt.body.provider === receipt.body.requester)
        throw new ReceiptError('a node cannot serve itself a receipt');
    if (receipt.body.kind === 'embed' && receipt.body.completionTokens !== 0)
        throw new ReceiptError('an embedding generates no tokens');
    const future = futureTimeProblem(receipt.body.completedAt);
    if (future !== undefined)
        throw new ReceiptError(future);
    const signed = receiptSigningBytes(receipt.body);
    if (receipt.body.requester !== attested)
        checkSignature(signed, receipt.requesterSignature, receipt.body.requester, 'requester');
    if (receipt.providerSignature === null) {
        if (countersigned)
            throw new ReceiptError('the provider has not countersigned the receipt');
    } else if (receipt.body.provider !== attested) {
        checkSignature(signed, receipt.providerSignature, receipt.body.provider, 'provider');
    }
    // Only a receipt whose every signature this process checked is remembered as verified.
    return attested === undefined ? freezeVerified(receipt) : receipt;
}

function parseReceipt(candidate: unknown): Receipt {
    const parsed = receiptSchema.safeParse(candidate);
    if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        throw new ReceiptError(`malformed receipt at ${issue.path.join('.') || 'top level'}: ${issue.message}`);
    }
    return parsed.data;
}

/** The provider's countersignature on a receipt it verified: the whole receipt, verified. */
export function countersignReceipt(receipt: Receipt, providerSecretKey: Buffer): Receipt {
    if (!verified.has(receipt))
        throw new ReceiptError('only a verified receipt can be countersigned');
    return freezeVerified({...receipt, providerSignature: signReceiptBody(receipt.body, providerSecretKey)});
}
