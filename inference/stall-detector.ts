/**
 * When silence means a peer is gone, for a peer serving a whole request and for a pipeline stage alike
 * (docs/architecture.md, "Swarm" and "Sharding"): many times the median of recent answers, so one slow answer does
 * not stretch it, with a floor so that scheduling noise on a busy machine is never taken for a death. Prompt
 * processing sends whole batches in one answer and gets a floor of its own.
 *
 * Answers that come in a burst count once: a peer decoding speculatively sends a pass's tokens together, one frame
 * each, after a pass that took longer than one token would. Counted one by one, their gaps of about 0 ms would be
 * most of the answers, the median would fall to the floor's reach, and the next pass would look like a stall.
 */

export interface StallDetectorOptions {
    /** The shortest deadline while tokens are generated; defaults to 1.5 s. */
    floorMs?: number,
    /** The shortest deadline while a prompt is processed; defaults to 30 s. */
    prefillFloorMs?: number,
    /** The deadline is this many times the median recent answer; defaults to 20. */
    factor?: number,
    /** Answers remembered; defaults to 64. */
    window?: number
}

export const stallDetectorDefaults = {
    floorMs: 1_500,
    prefillFloorMs: 30_000,
    factor: 20,
    window: 64
};

export class StallDetector {
    private readonly options: Required<StallDetectorOptions>;
    private readonly recent: number[] = [];
    /**
     * Time since the last answer long enough to lift the deadline above the floor, while the answers after it are
     * short enough to be its burst; undefined when none is open.
     */
    private burstMs: number | undefined;

    constructor(options: StallDetectorOptions = {}) {
        this.options = {...stallDetectorDefaults, ...options};
    }

    /**
     * An answer came after `ms`. Answers too short to lift the deadline above the floor by themselves, within that
     * same time after one that can, are the rest of its burst: not counted.
     */
    record(ms: number) {
        const short = this.options.floorMs / this.options.factor;
        if (this.burstMs !== undefined && this.burstMs + ms < short) {
            this.burstMs += ms;
            return;
        }
        this.burstMs = ms >= short ? 0 : undefined;
        this.recent.push(ms);
        if (this.recent.length > this.options.window)
            this.recent.shift();
    }

    /** The median recent answer (a burst counts once), null before the first. */
    get medianMs() {
        const sorted = [...this.recent].sort((a, b) => a - b);
        return sorted.length === 0 ? null : sorted[Math.floor(sorted.length / 2)]!;
    }

    /** How long an answer may take now. */
    deadlineMs(prefilling: boolean) {
        return Math.max(prefilling ? this.options.prefillFloorMs : this.options.floorMs, this.options.factor * (this.medianMs ?? 0));
    }

    /** Whether waiting `waitingMs` for an answer means the other side is gone. */
    stalled(waitingMs: number, prefilling: boolean) {
        return waitingMs > this.deadlineMs(prefilling);
    }
}
