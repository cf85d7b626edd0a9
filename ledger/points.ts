import {workKey} from './record-check.js';
import type {LedgerRecord} from './records.js';

/**
 * Points: a pure function of a log's records, so anyone replaying a log gets the same number; what earns what is
 * under docs/architecture.md, "Points". The model factor is there because a token of a 70 GB model costs its server
 * far more than one of a 1 GB model.
 */

const BYTES_PER_MODEL_FACTOR = 1e9;
const MILLI = 1000;

export function modelFactor(modelBytes: number) {
    return Math.max(1, modelBytes / BYTES_PER_MODEL_FACTOR);
}

export interface PointsTally {
    /** In points, three decimals. */
    points: number,
    servedJobs: number,
    servedTokens: number,
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

/** Adds records one by one, as a log is replayed or grows. */
export class PointsCounter {
    private milliPoints = 0;
    private readonly seen = new Set<string>();
    private readonly counts: Omit<PointsTally, 'points'> = {
        servedJobs: 0, servedTokens: 0, shardSessions: 0, shardTokens: 0, consumedJobs: 0, consumedTokens: 0, shardConsumed: 0, shardConsumedTokens: 0, anchors: 0,
        ignored: {selfDealt: 0, duplicate: 0, notOwner: 0}
    };

    /** `owner`: the node id whose contributions the log records. */
    constructor(private readonly owner: string) {}

    /** Counts one record; returns the points it earned. */
    add(record: LedgerRecord): number {
        switch (record.type) {
            case 'served': {
                const {body} = record.receipt;
                const earned = this.earn(workKey(record)!, body.provider, body.requester, body.completionTokens * modelFactor(body.modelBytes));
                if (earned !== undefined) {
                    this.counts.servedJobs++;
                    this.counts.servedTokens += body.completionTokens;
                }
                return earned ?? 0;
            }
            case 'shard': {
                const {body, hostSignature} = record.receipt;
                if (hostSignature === null) // the log refuses it; a receipt the host did not countersign earns nothing
                    return 0;
                const share = (body.lastLayer - body.firstLayer + 1) / body.layerCount;
                const earned = this.earn(workKey(record)!, body.host, body.coordinator, body.tokens * share * modelFactor(body.modelBytes));
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
                return 0;
        }
    }

    get tally(): PointsTally {
        return {points: this.milliPoints / MILLI, ...this.counts, ignored: {...this.counts.ignored}};
    }

    /** The points a piece of work earns its server, or undefined when it earns nothing. */
    private earn(key: string, server: string, client: string, points: number): number | undefined {
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
        const milli = Math.round(points * MILLI);
        this.milliPoints += milli;
        return milli / MILLI;
    }
}

/** The tally of a whole sequence of records. */
export function tallyPoints(owner: string, records: Iterable<LedgerRecord>): PointsTally {
    const counter = new PointsCounter(owner);
    for (const record of records)
        counter.add(record);
    return counter.tally;
}
