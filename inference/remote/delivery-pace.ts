/** Answers shorter than this say little about a route's pace. */
export const MIN_TOKENS_FOR_PACE = 8;

/**
 * The pace of an answer as it arrives at this node: the tokens after the first over the time since the first, so
 * the peer's prompt processing is left out and the route's part (a relay, a slow link) is in. A peer decoding
 * speculatively sends a pass's tokens in a burst: they count at their time, and the pace stays the answer's.
 */
export class DeliveryPace {
    private firstAt: number | undefined;
    private lastAt = 0;
    private tokens = 0;

    received(tokens: number, at = performance.now()) {
        if (this.firstAt === undefined)
            this.firstAt = at;
        else
            this.tokens += tokens;
        this.lastAt = at;
    }

    /** null for an answer too short to tell. */
    tokensPerSecond(): number | null {
        if (this.firstAt === undefined || this.tokens < MIN_TOKENS_FOR_PACE || this.lastAt <= this.firstAt)
            return null;
        return this.tokens / ((this.lastAt - this.firstAt) / 1000);
    }
}
