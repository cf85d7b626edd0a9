/**
 * Deterministic PRNG (mulberry32) with a Box–Muller normal: demo weights must be identical
 * on every machine and Node version, which Math.random cannot promise.
 */
export class Prng {
    private state: number;
    private spareNormal: number | undefined;

    constructor(seed: number) {
        this.state = seed >>> 0;
    }

    /** Uniform in [0, 1). */
    next(): number {
        this.state = (this.state + 0x6d2b79f5) >>> 0;
        let t = this.state;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    }

    normal(): number {
        if (this.spareNormal !== undefined) {
            const value = this.spareNormal;
            this.spareNormal = undefined;
            return value;
        }
        const u = 1 - this.next(); // (0, 1]: log stays finite
        const v = this.next();
        const radius = Math.sqrt(-2 * Math.log(u));
        this.spareNormal = radius * Math.sin(2 * Math.PI * v);
        return radius * Math.cos(2 * Math.PI * v);
    }
}
