import type {Capabilities} from './capabilities.js';
import {RttEstimator} from './rtt-estimator.js';

/** Weight of the newest answer in the delivered pace. */
const DELIVERY_WEIGHT = 0.3;

/** A use of a peer's connection: while held, the connection is not closed as idle nor to make room. */
export interface PeerLease {
    readonly reason: string,
    /** Ends the use; a second call does nothing. */
    release(): void
}

/** One use: held while `active()` is true. */
interface Use {
    reason: string,
    active: () => boolean
}

/**
 * One connected peer as this node sees it: what it said it can do, how it has behaved, and what runs over its
 * connection now (jobs, shard sessions, on-demand purposes: docs/architecture.md, "Swarm").
 */
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
    private readonly uses = new Set<Use>();
    /** When the last use ended (or the connection opened): idle time counts from there. */
    private idleSinceAt = Date.now();

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

    /** Holds the connection for `reason` until the lease is released. */
    lease(reason: string): PeerLease {
        let held = true;
        this.uses.add({reason, active: () => held});
        return {reason, release: () => {
            held = false;
            this.prune();
        }};
    }

    /**
     * Holds the connection for `reason` while `active()` is true: asked each time the node looks (every ping
     * round at least), so a use that ends any way, errors included, lets the connection go without a release.
     */
    holdWhile(reason: string, active: () => boolean) {
        this.uses.add({reason, active});
    }

    /** Takes over the uses of the connection this one replaced (Hyperswarm keeps one per peer): a lease held on it holds this one. */
    adoptUses(replaced: PeerState) {
        for (const use of replaced.uses)
            this.uses.add(use);
    }

    /** Whether something runs over the connection now. */
    get inUse() {
        this.prune();
        return this.uses.size > 0;
    }

    /** What runs over the connection now, each reason once, sorted. */
    get heldFor(): string[] {
        this.prune();
        return [...new Set([...this.uses].map((use) => use.reason))].sort();
    }

    /** How long nothing has run over the connection: 0 while in use. */
    idleMs(now = Date.now()) {
        return this.inUse ? 0 : Math.max(0, now - this.idleSinceAt);
    }

    private prune() {
        if (this.uses.size === 0)
            return;
        for (const use of this.uses)
            if (!use.active())
                this.uses.delete(use);
        if (this.uses.size === 0)
            this.idleSinceAt = Date.now();
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
