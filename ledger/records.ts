import {z} from 'zod';
import {receiptSchema} from './receipt.js';
import {recordTime, signingDomainFields} from './signing-domain.js';

/**
 * What a node's contribution log holds, one record per block (docs/architecture.md, "Ledger"). Versioned: a reader
 * meets records of every version it has ever written.
 */
export const LEDGER_RECORD_VERSION = 2;

const hex32 = z.string().regex(/^[0-9a-f]{64}$/);
const hexKey = hex32;
const hexSignature = z.string().regex(/^[0-9a-f]{128}$/);
const count = z.number().int().nonnegative().max(2 ** 50);
const at = z.iso.datetime();

/**
 * A shard receipt (version 2): the coordinator's signed statement that a host's layers served one request of a
 * session it opened with a signed request, numbered within the session, countersigned by the host once it checked
 * the tokens against the passes it ran itself. A `shard` record (the host's) and a `shard-consumed` record (the
 * coordinator's) carry the same countersigned receipt (docs/peer-protocol.md, "Shard channel").
 */
export const shardReceiptBodySchema = z.object({
    version: z.literal(2),
    ...signingDomainFields,
    /** The session's id: random, the same for every receipt of the session. */
    session: hex32,
    /** 1, 2, 3 … one per receipt of the session. */
    sequence: count.min(1),
    model: z.string().min(1).max(128),
    modelBytes: count,
    /** The model file's SHA-256, when the coordinator had hashed it when it opened the session. */
    modelSha256: hex32.nullable(),
    layerCount: count.min(1),
    firstLayer: count,
    lastLayer: count,
    tokens: count,
    /** The coordinator's measure of the time the stage worked for the receipt; informational. */
    computeMs: count,
    host: hexKey,
    coordinator: hexKey,
    completedAt: recordTime
}).strict();

export const shardReceiptSchema = z.object({
    body: shardReceiptBodySchema,
    coordinatorSignature: hexSignature,
    /** Null until the host countersigns: no log takes a receipt without it. */
    hostSignature: hexSignature.nullable()
}).strict();

/**
 * The log's first `logLength` records were anchored on a chain: appended once the transaction is confirmed, and
 * checked by `verify` against the chain's `Anchored` event (docs/architecture.md, "Verification").
 */
export const anchorRecordSchema = z.object({
    version: z.literal(LEDGER_RECORD_VERSION), type: z.literal('anchor'), at: recordTime,
    chainId: z.number().int().positive(),
    contract: z.string().regex(/^0x[0-9a-fA-F]{40}$/),
    txHash: z.string().regex(/^0x[0-9a-f]{64}$/),
    blockNumber: count,
    logLength: count,
    treeHash: hex32
}).strict();

const address = z.string().regex(/^0x[0-9a-fA-F]{40}$/);
const bytes32 = z.string().regex(/^0x[0-9a-f]{64}$/);
/** An amount of wei, in decimals (JSON has no bigint). */
const wei = z.string().regex(/^(0|[1-9][0-9]{0,77})$/);

/**
 * Payments (docs/architecture.md, "Payments"): a voucher a payer sent this node with a job's receipt (`voucher`), a
 * voucher this node signed for a job a payee served it (`payment`), and a voucher this node redeemed on chain
 * (`redeem`). Amounts are cumulative per channel, as vouchers are; `cost` is the job's own.
 */
export const voucherRecordSchema = z.object({
    version: z.literal(LEDGER_RECORD_VERSION), type: z.literal('voucher'), at: recordTime,
    peer: hexKey, jobId: z.string().regex(/^[0-9a-f]{32}$/), chainId: z.number().int().positive(), contract: address,
    channel: bytes32, payer: address, amount: wei, cost: wei, signature: z.string().regex(/^0x[0-9a-f]{130}$/)
}).strict();

export const paymentRecordSchema = z.object({
    version: z.literal(LEDGER_RECORD_VERSION), type: z.literal('payment'), at: recordTime,
    peer: hexKey, jobId: z.string().regex(/^[0-9a-f]{32}$/), chainId: z.number().int().positive(), contract: address,
    channel: bytes32, payee: address, amount: wei, cost: wei
}).strict();

export const redeemRecordSchema = z.object({
    version: z.literal(LEDGER_RECORD_VERSION), type: z.literal('redeem'), at: recordTime,
    chainId: z.number().int().positive(), contract: address, channel: bytes32, payer: address,
    /** The voucher's cumulative amount, and what this redeem paid (the amount less what was redeemed before). */
    amount: wei, paid: wei,
    txHash: z.string().regex(/^0x[0-9a-f]{64}$/), blockNumber: count
}).strict();

export const ledgerRecordSchema = z.discriminatedUnion('type', [
    /**
     * The first block: whose log this is, and for which swarm network and chain (the signing domain). The owner (a
     * node id) signs the log's key and the domain, so a log cannot be passed off as another node's or another
     * network's, and nobody but the owner can start one in its name; the chain knows which log is its canonical one
     * (docs/architecture.md, "Anchoring").
     */
    z.object({version: z.literal(LEDGER_RECORD_VERSION), type: z.literal('header'), at: recordTime, owner: hexKey, core: hex32,
        ...signingDomainFields, signature: hexSignature}).strict(),
    /** This node served a peer's job: the receipt both signed. */
    z.object({version: z.literal(LEDGER_RECORD_VERSION), type: z.literal('served'), at, receipt: receiptSchema}).strict(),
    /** A peer served this node's job: the same receipt, from the other side, so claims can be matched. */
    z.object({version: z.literal(LEDGER_RECORD_VERSION), type: z.literal('consumed'), at, receipt: receiptSchema}).strict(),
    /** This node hosted layers of a sharded model for a coordinator. */
    z.object({version: z.literal(LEDGER_RECORD_VERSION), type: z.literal('shard'), at, receipt: shardReceiptSchema}).strict(),
    /** A host's layers served this node's pipeline: the same countersigned receipt, the coordinator's statement of what it consumed. */
    z.object({version: z.literal(LEDGER_RECORD_VERSION), type: z.literal('shard-consumed'), at, receipt: shardReceiptSchema}).strict(),
    anchorRecordSchema,
    voucherRecordSchema,
    paymentRecordSchema,
    redeemRecordSchema
]);

export type LedgerRecord = z.infer<typeof ledgerRecordSchema>;
export type ShardReceipt = z.infer<typeof shardReceiptSchema>;
export type ShardReceiptBody = z.infer<typeof shardReceiptBodySchema>;
export type AnchorRecord = Extract<LedgerRecord, {type: 'anchor'}>;
export type HeaderRecord = Extract<LedgerRecord, {type: 'header'}>;
export type VoucherRecord = z.infer<typeof voucherRecordSchema>;
export type PaymentRecord = z.infer<typeof paymentRecordSchema>;
export type RedeemRecord = z.infer<typeof redeemRecordSchema>;
