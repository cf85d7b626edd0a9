/** Smoothed round-trip time, as TCP keeps it (RFC 6298): new samples move the average by 1/8. */
const SMOOTHING = 1 / 8;

export class RttEstimator {
    private smoothed: number | undefined;
    private latest: number | undefined;

    addSample(rttMs: number) {
        this.latest = rttMs;
        this.smoothed = this.smoothed === undefined ? rttMs : this.smoothed + SMOOTHING * (rttMs - this.smoothed);
    }

    get smoothedMs() {
        return this.smoothed;
    }

    get latestMs() {
        return this.latest;
    }
}
