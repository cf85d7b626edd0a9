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
 * The coordinator's signed statement that a peer hosted layers of a pipeline for a request: what a `shard` record
 * carries, sent to each remote stage's host after each request (docs/peer-protocol.md, "Shard channel").
 */
export const shardReceiptSchema = z.object({
    body: z.object({
        version: z.literal(1),
        session: hex32,
        model: z.string().min(1).max(128),
        modelBytes: count,
        layerCount: count.min(1),
        firstLayer: count,
        lastLayer: count,
        tokens: count,
        computeMs: z.number().nonnegative(),
        host: hexKey,
        coordinator: hexKey,
        completedAt: at
    }).strict(),
    coordinatorSignature: hexSignature
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
    anchorRecordSchema
]);

export type LedgerRecord = z.infer<typeof ledgerRecordSchema>;
export type ShardReceipt = z.infer<typeof shardReceiptSchema>;
export type AnchorRecord = Extract<LedgerRecord, {type: 'anchor'}>;
export type HeaderRecord = Extract<LedgerRecord, {type: 'header'}>;
