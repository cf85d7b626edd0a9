/**
 * The one backoff: the delay before retrying something that keeps failing, `initialMs` at first, `factor` times
 * longer after each further failure, at most `maxMs`; a success that stood `stableAfterMs` starts it over. Used by
 * the process supervisor's restarts and the anchorer's retries (docs/architecture.md, "Engine" and "Ledger").
 */

export interface BackoffOptions {
    /** The delay after a first failure. */
    initialMs: number,
    /** The longest delay. */
    maxMs: number,
    /** Each delay is this many times the one before; defaults to 2. */
    factor?: number,
    /**
     * How long a success must have stood when the next failure comes for the delays to start over at `initialMs`;
     * defaults to 0: any success does.
     */
    stableAfterMs?: number
}

export class Backoff {
    private readonly options: Required<BackoffOptions>;
    private failures = 0;
    /** When the last success since the last failure came, if one did. */
    private succeededAt: number | undefined;

    constructor(options: BackoffOptions) {
        this.options = {factor: 2, stableAfterMs: 0, ...options};
    }

    /** It works (again): once that has lasted `stableAfterMs`, the next failure waits `initialMs` again. */
    succeeded(now = Date.now()) {
        this.succeededAt = now;
    }

    /** A failure now: the delay before the next try. */
    failed(now = Date.now()) {
        const {initialMs, maxMs, factor, stableAfterMs} = this.options;
        if (this.succeededAt !== undefined && now - this.succeededAt >= stableAfterMs)
            this.failures = 0;
        // A success counts once: failures after it without another one keep backing off.
        this.succeededAt = undefined;
        const delay = Math.min(maxMs, initialMs * factor ** this.failures);
        this.failures++;
        return delay;
    }
}
