/** When to restart a crashed engine: quickly at first, slower while it keeps crashing. */

const INITIAL_DELAY_MS = 250;
const MAX_DELAY_MS = 30_000;
const FACTOR = 2;
/** Up this long counts as recovered: the next crash restarts quickly again. */
const STABLE_AFTER_MS = 60_000;

export class RestartBackoff {
    private attempt = 0;
    private startedAt = 0;

    markStarted(now = Date.now()) {
        this.startedAt = now;
    }

    /** The delay before the next restart, given a crash now. */
    nextDelay(now = Date.now()) {
        if (this.startedAt > 0 && now - this.startedAt >= STABLE_AFTER_MS)
            this.attempt = 0;
        const delay = Math.min(MAX_DELAY_MS, INITIAL_DELAY_MS * FACTOR ** this.attempt);
        this.attempt++;
        return delay;
    }
}
