import type {Capabilities} from './capabilities.js';

/**
 * How many connections a node holds and which one goes to make room (docs/architecture.md, "Swarm"): pure, so
 * every rule can be tested without a swarm.
 */

/** How a connection came to be, which decides whether it may be closed as idle. */
export type ConnectionOrigin =
    /** Found on the network's topic, or a peer that connected to this node: the node's neighbours. */
    | {kind: 'network'}
    /** `--relay-through`: kept for as long as the node runs. */
    | {kind: 'relay-through'}
    /** Opened with `SwarmNode.connectTo` for a purpose: closed once idle for `--idle-peer-timeout`. */
    | {kind: 'on-demand', why: string};

export function originReason(origin: ConnectionOrigin) {
    return origin.kind === 'on-demand' ? `on-demand:${origin.why}` : origin.kind;
}

export type ConnectErrorCode =
    /** Every connection up to `--max-peers` is in use (or too new to close). */
    | 'peer_limit'
    /** No connection within the time allowed: the peer is gone, or unreachable (hole punch and relays failed). */
    | 'unreachable'
    | 'banned'
    /** The swarm has not started, or has stopped. */
    | 'stopped'
    | 'invalid_peer';

/** Why `SwarmNode.connectTo` could not give a connection; the message says it in words. */
export class ConnectError extends Error {
    constructor(readonly code: ConnectErrorCode, message: string) {
        super(message);
        this.name = 'ConnectError';
    }
}

/** A connection that could be closed to make room: ready, not in use, and older than the grace period. */
export interface EvictionCandidate {
    peerId: string,
    origin: ConnectionOrigin,
    capabilities: Capabilities,
    rttMs: number | null,
    requestsSucceeded: number,
    /** How long nothing ran over it. */
    idleMs: number
}

/** What a neighbour is worth keeping for: models to serve, memory to host layers, a relay, work done. */
export function usefulness({capabilities, requestsSucceeded}: Pick<EvictionCandidate, 'capabilities' | 'requestsSucceeded'>) {
    return (capabilities.models.some((model) => model.loaded) ? 8 : 0)
        + ((capabilities.shardHost?.freeBytes ?? 0) > 0 ? 4 : 0)
        + (capabilities.relay ? 2 : 0)
        + (requestsSucceeded > 0 ? 1 : 0);
}

/**
 * The connection to close first: an idle on-demand one (its purpose is over), else the least useful neighbour,
 * the farthest of equals, the longest idle of those; undefined when there is none.
 */
export function pickEviction(candidates: readonly EvictionCandidate[]): EvictionCandidate | undefined {
    const rank = (candidate: EvictionCandidate) => candidate.origin.kind === 'on-demand' ? -1 : usefulness(candidate);
    return [...candidates].sort((a, b) => rank(a) - rank(b)
        || (b.rttMs ?? Infinity) - (a.rttMs ?? Infinity)
        || b.idleMs - a.idleMs
        || a.peerId.localeCompare(b.peerId))[0];
}

/**
 * How many connections this node opens itself to the network topic's peers: 7/8 of the limit (one less at least,
 * one at least). The rest is room for peers that connect to this node and for on-demand connections, taken
 * without closing anything: with every node dialing up to its whole limit, a node short of neighbours can only
 * find full ones, which close a neighbour for it, which then dials another full one, and so on without end
 * (measured: 15 nodes with limit 3, 144 connections closed to make room in 30 s; none with the room kept).
 */
export function topicDialTarget(limit: number) {
    return Math.max(1, limit - Math.max(1, Math.floor(limit / 8)));
}

/**
 * Hyperswarm 4.17 dials a topic's peers while `factor × connections < maxPeers`, the factor growing with the peers
 * joined by key (2 for one, 3 for two or three, 4 beyond): the value to give it so that it dials up to
 * `connections` while the `--relay-through` relays are joined.
 */
export function hyperswarmMaxPeers(connections: number, explicitPeers: number) {
    const factor = explicitPeers === 0 ? 1 : explicitPeers < 2 ? 2 : explicitPeers < 4 ? 3 : 4;
    return factor * connections;
}
