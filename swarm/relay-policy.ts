/**
 * When this node relays for others and when it goes through a relay itself: pure, so every rule can be tested
 * (docs/architecture.md, "Relays").
 */

export type RelayMode = 'auto' | 'on' | 'off';

/** How HyperDHT sees this node's NAT: `open` = reachable from outside; `random` = a new port per destination. */
export type NatType = 'open' | 'consistent' | 'random' | 'unknown';

export interface NatStatus {
    type: NatType,
    /** Whether peers can connect to this node without punching a hole (the DHT found it not firewalled). */
    reachable: boolean,
    /** This node's public address as the DHT saw it; null until sampled. */
    host: string | null,
    port: number | null
}

/**
 * The hole-punch failures after which hyperswarm itself retries through a relay at once; strongdoge also relays
 * after any other failed attempt to a peer (a NAT that re-mapped a port mid-punch fails with other codes).
 */
export const RELAY_FORCING_CODES: ReadonlySet<string> = new Set([
    'HOLEPUNCH_ABORTED', 'HOLEPUNCH_DOUBLE_RANDOMIZED_NATS', 'CANNOT_HOLEPUNCH', 'REMOTE_NOT_HOLEPUNCHABLE'
]);

export function natStatus(dht: {firewalled: boolean, randomized: boolean, host: string | null, port: number}): NatStatus {
    const address = {host: dht.host, port: dht.host === null || dht.port === 0 ? null : dht.port};
    if (!dht.firewalled)
        return {type: 'open', reachable: true, ...address};
    if (dht.host === null)
        return {type: 'unknown', reachable: false, ...address};
    return {type: dht.randomized ? 'random' : 'consistent', reachable: false, ...address};
}

/** `auto` relays once the DHT finds this node reachable; `on` regardless; never while over the bandwidth cap. */
export function offersRelay(mode: RelayMode, reachable: boolean, overCap: boolean) {
    return !overCap && (mode === 'on' || (mode === 'auto' && reachable));
}

export interface RelayCandidate {
    /** The relay node's id (its swarm public key). */
    nodeId: string,
    /** The key its relay listens on. */
    relayKey: string,
    /** Named with `--relay-through`. */
    explicit: boolean,
    rttMs: number | null
}

/**
 * Whether a connection to `peerId` should go through a relay: hyperswarm asks for one after a punch failure it
 * knows (`forced`), this node's NAT is random (a punch needs one side consistent), or an earlier attempt to the
 * same peer failed (retrying the punch loses another 20 s window).
 */
export function wantsRelay({forced, randomized, failedBefore}: {forced: boolean, randomized: boolean, failedBefore: boolean}) {
    return forced || randomized || failedBefore;
}

/**
 * The relay for a connection to `target`: relays named with `--relay-through` first, then the nearest; never the
 * target itself (a relay is reachable, so it is connected to directly).
 */
export function pickRelay(candidates: RelayCandidate[], target: string): RelayCandidate | null {
    const usable = candidates.filter((candidate) => candidate.nodeId !== target);
    usable.sort((a, b) => Number(b.explicit) - Number(a.explicit) || (a.rttMs ?? Infinity) - (b.rttMs ?? Infinity)
        || a.nodeId.localeCompare(b.nodeId));
    return usable[0] ?? null;
}

/** Relayed bytes over a sliding window, against `--relay-max-mbps`. */
export class RelayMeter {
    private readonly samples: {at: number, bytes: number}[] = [];

    constructor(private readonly windowMs: number) {}

    /** `totalBytes` is the running total relayed so far; returns the rate over the window, in megabits per second. */
    sample(totalBytes: number, at: number): number {
        this.samples.push({at, bytes: totalBytes});
        while (this.samples.length > 2 && at - this.samples[1]!.at >= this.windowMs)
            this.samples.shift();
        const first = this.samples[0]!;
        const elapsedMs = at - first.at;
        return elapsedMs <= 0 ? 0 : ((totalBytes - first.bytes) * 8) / (elapsedMs * 1000);
    }
}
