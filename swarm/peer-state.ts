import type {Capabilities} from './capabilities.js';
import {RttEstimator} from './rtt-estimator.js';

/** Weight of the newest answer in the delivered pace. */
const DELIVERY_WEIGHT = 0.3;

/** One connected peer as this node sees it: what it said it can do, and how it has behaved. */
export class PeerState {
    readonly rtt = new RttEstimator();
    readonly connectedAt = Date.now();
    lastSeenAt = Date.now();
    bytesIn = 0;
    bytesOut = 0;
    requestsSent = 0;
    requestsSucceeded = 0;
    /** Tokens per second this node received from the peer's answers, over the route in use (relays included). */
    deliveredTokensPerSecond: number | null = null;

    constructor(
        readonly id: string,
        public software: string,
        public capabilities: Capabilities
    ) {}

    seen(bytes: number) {
        this.lastSeenAt = Date.now();
        this.bytesIn += bytes;
    }

    /** Outcome of a request sent to this peer: weights it for routing (docs/architecture.md, "Peer ranking"). */
    recordRequest(succeeded: boolean) {
        this.requestsSent++;
        if (succeeded)
            this.requestsSucceeded++;
    }

    /** An answer's pace as received here: a moving average, so one slow answer does not condemn the peer. */
    recordDelivery(tokensPerSecond: number) {
        this.deliveredTokensPerSecond = this.deliveredTokensPerSecond === null
            ? tokensPerSecond
            : DELIVERY_WEIGHT * tokensPerSecond + (1 - DELIVERY_WEIGHT) * this.deliveredTokensPerSecond;
    }

    /** Laplace-smoothed, so a new peer starts at 1/2 rather than at an unearned 0 or 1. */
    get successRate() {
        return (this.requestsSucceeded + 1) / (this.requestsSent + 2);
    }

    toJSON() {
        return {
            id: this.id,
            software: this.software,
            rttMs: this.rtt.smoothedMs ?? null,
            lastSeen: new Date(this.lastSeenAt).toISOString(),
            connectedSeconds: Math.round((Date.now() - this.connectedAt) / 1000),
            bytesIn: this.bytesIn,
            bytesOut: this.bytesOut,
            requests: {sent: this.requestsSent, succeeded: this.requestsSucceeded, successRate: this.successRate},
            deliveredTokensPerSecond: this.deliveredTokensPerSecond,
            capabilities: this.capabilities
        };
    }
}
