import {EventEmitter} from 'node:events';

export interface RequestRecord {
    id: string,
    endpoint: string,
    model: string | undefined,
    status: number,
    stream: boolean,
    /** `local`, the peers (short ids) that served it (`peers:…`), or the stages of the pipeline that did (`pipeline:self,…`). */
    route: string,
    promptTokens: number,
    completionTokens: number,
    durationMs: number,
    generationTokensPerSecond: number,
    finishedAt: number
}

/** The status a request gets when its client left before the response was complete (nginx's "client closed request"). */
export const CLIENT_CLOSED_STATUS = 499;

/** How many finished requests are kept for the dashboard and /api/node. */
const RECENT_REQUESTS = 50;

/** Counters and recent requests of the proxy; emits `request` as each one finishes. */
export class RequestStats extends EventEmitter<{request: [record: RequestRecord]}> {
    total = 0;
    active = 0;
    succeeded = 0;
    failed = 0;
    /** Clients that left before their answer was complete: their choice, not a failure. */
    cancelled = 0;
    completionTokens = 0;
    readonly recent: RequestRecord[] = [];

    started() {
        this.total++;
        this.active++;
    }

    finished(record: RequestRecord) {
        this.active--;
        if (record.status === CLIENT_CLOSED_STATUS)
            this.cancelled++;
        else if (record.status < 400)
            this.succeeded++;
        else
            this.failed++;
        this.completionTokens += record.completionTokens;
        this.recent.unshift(record);
        this.recent.length = Math.min(this.recent.length, RECENT_REQUESTS);
        this.emit('request', record);
    }

    snapshot() {
        return {
            total: this.total, active: this.active, succeeded: this.succeeded, failed: this.failed, cancelled: this.cancelled,
            completionTokens: this.completionTokens
        };
    }
}
