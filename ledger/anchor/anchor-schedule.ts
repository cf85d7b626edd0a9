/**
 * When the anchorer tries: every interval, and after a failure sooner, with backoff (docs/architecture.md,
 * "Anchoring": 15 s, doubling, at most the interval).
 */
import {setTimeout as sleep} from 'node:timers/promises';
import {Backoff} from '../../core/backoff.js';

/** The first retry after a failure. */
const RETRY_INITIAL_MS = 15_000;

export interface AnchorScheduleOptions {
    /** One attempt; a rejection is a failure. */
    attempt: () => Promise<unknown>,
    /** Each failure, before the retry is scheduled. */
    onFailure: (error: unknown) => void,
    /** The time between attempts that succeed, and the longest between retries. */
    intervalMs: number
}

export class AnchorSchedule {
    private readonly stopping = new AbortController();
    private started = false;
    /** When the next attempt starts (ms since the epoch); null before `start()`. */
    nextAttemptAt: number | null = null;

    constructor(private readonly options: AnchorScheduleOptions) {}

    /** The first attempt after `delayMs`, then on the interval; once only. */
    start(delayMs: number) {
        if (this.started)
            return;
        this.started = true;
        void this.run(delayMs);
    }

    /** No further attempts; one under way finishes. */
    stop() {
        this.stopping.abort();
    }

    private async run(delayMs: number) {
        const {attempt, onFailure, intervalMs} = this.options;
        const {signal} = this.stopping;
        const backoff = new Backoff({initialMs: RETRY_INITIAL_MS, maxMs: intervalMs});
        while (!signal.aborted) {
            this.nextAttemptAt = Date.now() + delayMs;
            // Unreferenced: a pending attempt never keeps the process alive.
            if (!await sleep(delayMs, true, {signal, ref: false}).catch(() => false))
                return;
            try {
                await attempt();
                backoff.succeeded();
                delayMs = intervalMs;
            } catch (error) {
                onFailure(error);
                delayMs = backoff.failed();
            }
        }
    }
}
