import type {Capabilities} from '../../swarm/capabilities.js';

/** Choosing which peer serves a request: pure, so every rule can be tested. */

export interface PeerCandidate {
    id: string,
    successRate: number,
    rttMs: number | null,
    /** Tokens per second this node received from the peer's answers; null before the first. */
    deliveredTokensPerSecond?: number | null,
    capabilities: Capabilities
}

export interface SelectionCriteria {
    model: string,
    /** Highest acceptable price per million tokens; undefined = any. */
    maxPrice?: number,
    /** Peers already tried for this request. */
    exclude?: ReadonlySet<string>
}

/** RTT that halves a peer's score: a whole request pays it about once (first token), so it weighs lightly. */
const RTT_HALF_SCORE_MS = 250;

export function priceOf(peer: PeerCandidate) {
    return peer.capabilities.pricePerMillionTokens ?? 0;
}

export function servesModel(peer: PeerCandidate, model: string) {
    return peer.capabilities.models.some((offer) => offer.id === model && offer.loaded);
}

/** Higher is better (docs/architecture.md, "Peer ranking"); a peer that never measured its speed counts as 1 token/s. */
export function peerScore(peer: PeerCandidate) {
    const speed = peer.deliveredTokensPerSecond ?? peer.capabilities.compute.generationTokensPerSecond ?? 1;
    const load = 1 + peer.capabilities.load.active + peer.capabilities.load.queued;
    const distance = 1 + (peer.rttMs ?? RTT_HALF_SCORE_MS) / RTT_HALF_SCORE_MS;
    return (peer.successRate * Math.max(speed, 1e-6)) / (load * distance);
}

/** Peers that can serve the model within budget, best first (cheaper first on equal scores). */
export function rankPeers(peers: PeerCandidate[], {model, maxPrice, exclude}: SelectionCriteria): PeerCandidate[] {
    return peers
        .filter((peer) => servesModel(peer, model) && !exclude?.has(peer.id) && (maxPrice === undefined || priceOf(peer) <= maxPrice))
        .sort((a, b) => peerScore(b) - peerScore(a) || priceOf(a) - priceOf(b));
}

/** Why no peer qualifies, for the error the client sees. */
export function explainNoPeer(peers: PeerCandidate[], {model, maxPrice}: SelectionCriteria): {code: 'no_peer' | 'over_budget', message: string} {
    const holders = peers.filter((peer) => peer.capabilities.models.some((offer) => offer.id === model));
    const serving = holders.filter((peer) => servesModel(peer, model));
    if (serving.length > 0 && maxPrice !== undefined) {
        const cheapest = Math.min(...serving.map(priceOf));
        if (cheapest > maxPrice)
            return {code: 'over_budget', message: `model '${model}' is served by ${serving.length} peer(s), the cheapest at ${cheapest} per million tokens, above the maximum price of ${maxPrice}`};
    }
    if (holders.length > 0 && serving.length === 0)
        return {code: 'no_peer', message: `model '${model}' is held by ${holders.length} peer(s), but none has it loaded`};
    return {code: 'no_peer', message: `no connected peer can serve model '${model}' now`};
}
