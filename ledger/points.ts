import {workKey} from './record-check.js';
import type {LedgerRecord} from './records.js';

/**
 * Points: a pure function of a log's records, so anyone replaying a log gets the same number (docs/architecture.md,
 * "Points"). Kept as integer thousandths in BigInt: neither the order records are added in nor their size changes a
 * total. The model factor is there because a token of a 70 GB model costs its server far more than one of a 1 GB
 * model; a receipt names a size only where its requester could vouch for it (ledger/receipt.ts).
 */

const BYTES_PER_MODEL_FACTOR = 1_000_000_000n;
const MILLI = 1000n;
/** An embedded (prompt) token costs a fraction of a generated one: prompts are read in batches. */
const EMBEDDING_TOKENS_PER_POINT = 10n;

/** The model factor as a number (the size in GB, at least 1), for display. */
export function modelFactor(modelBytes: number) {
    return Math.max(1, modelBytes / Number(BYTES_PER_MODEL_FACTOR));
}

/** Thousandths of a point for `tokens` × `numerator`/`denominator` of a model of `modelBytes`, rounded down. */
function milliPoints(tokens: number, modelBytes: number, numerator = 1n, denominator = 1n) {
    const bytes = BigInt(modelBytes) > BYTES_PER_MODEL_FACTOR ? BigInt(modelBytes) : BYTES_PER_MODEL_FACTOR;
    return BigInt(tokens) * bytes * MILLI * numerator / (BYTES_PER_MODEL_FACTOR * denominator);
}

/** Thousandths as points with three decimals (exact below 2^53 thousandths; `milliPoints` strings always are). */
function asPoints(milli: bigint) {
    return Number(milli) / Number(MILLI);
}

export interface PointsTally {
    /** In points, three decimals. */
    points: number,
    /** The same, exact: thousandths of a point as a decimal integer. */
    milliPoints: string,
    /**
     * Points for work done for a node the counter was told to stand behind (`witnesses`: the verifying node, and
     * the peers it trusts); the rest of `points` are bare claims: two keys signed, which costs nothing to fake.
     */
    witnessedPoints: number,
    servedJobs: number,
    servedTokens: number,
    embeddedJobs: number,
    embeddedTokens: number,
    /** Countersigned shard receipts of layers this node hosted. */
    shardSessions: number,
    shardTokens: number,
    consumedJobs: number,
    consumedTokens: number,
    /** Shard receipts of this node's pipelines: hosts' work it consumed. */
    shardConsumed: number,
    shardConsumedTokens: number,
    anchors: number,
    /** Records that earned nothing, and why. */
    ignored: {selfDealt: number, duplicate: number, notOwner: number}
}

export interface PointsCounterOptions {
    /** Node ids whose receipts the counter stands behind: work done for one of them is witnessed; defaults to none. */
    witnesses?: ReadonlySet<string>
}

/** Adds records one by one, as a log is replayed or grows. */
export class PointsCounter {
    private milli = 0n;
    private witnessedMilli = 0n;
    private readonly seen = new Set<string>();
    private readonly witnesses: ReadonlySet<string>;
    private readonly counts: Omit<PointsTally, 'points' | 'milliPoints' | 'witnessedPoints'> = {
        servedJobs: 0, servedTokens: 0, embeddedJobs: 0, embeddedTokens: 0, shardSessions: 0, shardTokens: 0, consumedJobs: 0, consumedTokens: 0,
        shardConsumed: 0, shardConsumedTokens: 0, anchors: 0, ignored: {selfDealt: 0, duplicate: 0, notOwner: 0}
    };

    /** `owner`: the node id whose contributions the log records. */
    constructor(private readonly owner: string, options: PointsCounterOptions = {}) {
        this.witnesses = options.witnesses ?? new Set();
    }

    /** Counts one record; returns the points it earned. */
    add(record: LedgerRecord): number {
        switch (record.type) {
            case 'served': {
                const {body} = record.receipt;
                const embedding = body.kind === 'embed';
                const earned = this.earn(workKey(record)!, body.provider, body.requester, embedding
                    ? milliPoints(body.promptTokens, body.modelBytes, 1n, EMBEDDING_TOKENS_PER_POINT)
                    : milliPoints(body.completionTokens, body.modelBytes));
                if (earned !== undefined) {
                    if (embedding) {
                        this.counts.embeddedJobs++;
                        this.counts.embeddedTokens += body.promptTokens;
                    } else {
                        this.counts.servedJobs++;
                        this.counts.servedTokens += body.completionTokens;
                    }
                }
                return earned ?? 0;
            }
            case 'shard': {
                const {body, hostSignature} = record.receipt;
                if (hostSignature === null) // the log refuses it; a receipt the host did not countersign earns nothing
                    return 0;
                const span = BigInt(body.lastLayer - body.firstLayer + 1);
                const earned = this.earn(workKey(record)!, body.host, body.coordinator, milliPoints(body.tokens, body.modelBytes, span, BigInt(body.layerCount)));
                if (earned !== undefined) {
                    this.counts.shardSessions++;
                    this.counts.shardTokens += body.tokens;
                }
                return earned ?? 0;
            }
            case 'consumed':
                this.counts.consumedJobs++;
                this.counts.consumedTokens += record.receipt.body.completionTokens;
                return 0;
            case 'shard-consumed':
                this.counts.shardConsumed++;
                this.counts.shardConsumedTokens += record.receipt.body.tokens;
                return 0;
            case 'anchor':
                this.counts.anchors++;
                return 0;
            case 'header':
            case 'voucher':
            case 'payment':
            case 'redeem':
                // Payments are DOGE, not points (docs/architecture.md, "Payments").
                return 0;
        }
    }

    get tally(): PointsTally {
        return {
            points: asPoints(this.milli), milliPoints: this.milli.toString(), witnessedPoints: asPoints(this.witnessedMilli),
            ...this.counts, ignored: {...this.counts.ignored}
        };
    }

    /** The points a piece of work earns its server, or undefined when it earns nothing. */
    private earn(key: string, server: string, client: string, milli: bigint): number | undefined {
        if (server === client) {
            this.counts.ignored.selfDealt++;
            return undefined;
        }
        if (server !== this.owner) {
            this.counts.ignored.notOwner++;
            return undefined;
        }
        if (this.seen.has(key)) {
            this.counts.ignored.duplicate++;
            return undefined;
        }
        this.seen.add(key);
        this.milli += milli;
        if (this.witnesses.has(client))
            this.witnessedMilli += milli;
        return asPoints(milli);
    }
}

/** The tally of a whole sequence of records. */
export function tallyPoints(owner: string, records: Iterable<LedgerRecord>, options: PointsCounterOptions = {}): PointsTally {
    const counter = new PointsCounter(owner, options);
    for (const record of records)
        counter.add(record);
    return counter.tally;
}
