import type {StageFailure} from './pipeline-types.js';

/** Failures kept for the status API (`GET /api/cluster` shows the last ten). */
export const KEPT_FAILURES = 100;

/** A pipeline's stage failures: the last `KEPT_FAILURES`, and how many there were in all. */
export class StageFailures {
    private readonly kept: StageFailure[] = [];
    private total = 0;

    /** Oldest first, at most `KEPT_FAILURES`. */
    get recent(): readonly StageFailure[] {
        return this.kept;
    }

    /** Every failure recorded so far, those no longer kept included: a mark for `since`. */
    get count() {
        return this.total;
    }

    record(peer: string, reason: string): StageFailure {
        const failure = {peer, reason, at: new Date().toISOString()};
        this.total++;
        this.kept.push(failure);
        if (this.kept.length > KEPT_FAILURES)
            this.kept.shift();
        return failure;
    }

    /** The failures recorded since `count` was `mark`, those still kept. */
    since(mark: number): StageFailure[] {
        const newer = this.total - mark;
        return newer <= 0 ? [] : this.kept.slice(-Math.min(newer, this.kept.length));
    }
}
