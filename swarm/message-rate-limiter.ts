/** A token bucket: a peer may burst, but not sustain more than `perSecond` messages. */
export class MessageRateLimiter {
    private tokens: number;
    private updatedAt: number;

    constructor(private readonly perSecond: number, private readonly burst: number, now = Date.now()) {
        this.tokens = burst;
        this.updatedAt = now;
    }

    /** False when the message exceeds the rate: a flood. */
    take(now = Date.now()) {
        this.tokens = Math.min(this.burst, this.tokens + ((now - this.updatedAt) / 1000) * this.perSecond);
        this.updatedAt = now;
        if (this.tokens < 1)
            return false;
        this.tokens -= 1;
        return true;
    }
}
