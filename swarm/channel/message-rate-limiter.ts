/** A token bucket: a peer may burst, but not sustain more than `perSecond` (messages, or bytes). */
export class MessageRateLimiter {
    private tokens: number;
    private updatedAt: number;

    constructor(private readonly perSecond: number, private readonly burst: number, now = Date.now()) {
        this.tokens = burst;
        this.updatedAt = now;
    }

    /** False when taking `cost` (one message, or a frame's bytes) exceeds the rate: a flood. */
    take(cost = 1, now = Date.now()) {
        this.tokens = Math.min(this.burst, this.tokens + ((now - this.updatedAt) / 1000) * this.perSecond);
        this.updatedAt = now;
        if (this.tokens < cost)
            return false;
        this.tokens -= cost;
        return true;
    }
}
