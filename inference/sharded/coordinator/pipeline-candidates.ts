import type {PeerState} from '../../../swarm/peer-state.js';
import {type LayerRange, planShards, replanAfterFailure, type ShardCandidate, type ShardPlan, type ShardPlanResult} from '../shard-planner.js';
import {pickSpares} from '../spare-picker.js';
import type {ClusterModel} from './pipeline-types.js';

export interface CandidateSources {
    model: ClusterModel,
    /** This node as a stage: what it offers for its own layers. */
    self: {id: string, freeMemoryBytes: number, tflops: () => number | null},
    peers: readonly PeerState[],
    /** Peers left out of plans for now (a recent failure). */
    excluded: (peerId: string) => boolean,
    /** Download rates hosts reported for this model's layers (bytes/s), by peer; defaults to none. */
    fetchRates?: (peerId: string) => number | undefined,
    /** Layers spares downloaded ahead (in their tensor store), by peer; defaults to none. */
    spareLayers?: (peerId: string) => LayerRange | undefined
}

/**
 * A host that fetches layers but has measured no download yet counts at 100 Mbit/s: a modest home downlink, and more
 * than the 20 Mbit/s uplink the planner assumes for this node, so a fetching host is preferred to a fed one.
 */
export const DEFAULT_SOURCE_BYTES_PER_SECOND = 12.5e6;

/** Whether a peer announces the model file itself (by its SHA-256): it seeds its cache from its own copy. */
export function holdsModelFile(peer: PeerState | undefined, sha256: string | null) {
    return sha256 !== null && (peer?.capabilities.models.some((offer) => offer.sha256 === sha256) ?? false);
}

/** This node, and every peer that offers memory for layers and is not left out (docs/architecture.md, "Sharding"). */
export function shardCandidates({model, self, peers, excluded, fetchRates, spareLayers}: CandidateSources): ShardCandidate[] {
    const allLayers = [[0, model.shape.layerBytes.length - 1] as const];
    const candidates: ShardCandidate[] = [{
        peerId: self.id, self: true, freeMemoryBytes: self.freeMemoryBytes, tflops: self.tflops(), rttMs: 0, successRate: 1, heldLayers: allLayers
    }];
    const sha256 = model.sha256();
    for (const peer of peers) {
        const host = peer.capabilities.shardHost;
        if (host === undefined || host === null || excluded(peer.id))
            continue;
        const holds = holdsModelFile(peer, sha256);
        // Only a model with a public source can be fetched; a host that announces no fetching receives its layers.
        const fetchRate = model.source === undefined || host.fetch === undefined ? undefined
            : fetchRates?.(peer.id) ?? host.fetch.bytesPerSecond ?? DEFAULT_SOURCE_BYTES_PER_SECOND;
        const spare = spareLayers?.(peer.id);
        candidates.push({
            peerId: peer.id, self: false, freeMemoryBytes: host.freeBytes,
            tflops: peer.capabilities.compute.measuredTflops ?? peer.capabilities.compute.lookupTflops,
            rttMs: peer.rtt.smoothedMs ?? null, successRate: peer.successRate,
            heldLayers: holds ? allLayers : spare !== undefined ? [spare] : [],
            ...(fetchRate !== undefined && {sourceBytesPerSecond: fetchRate})
        });
    }
    return candidates;
}

export interface PipelinePlanOptions {
    maxStages: number,
    /** Split even when the model fits this node. */
    forceSplit: boolean,
    /** The plan that last ran, and the peer whose failure ended it. */
    previous: {plan: ShardPlan, failedPeer: string} | undefined,
    /** This node's uplink as measured by its last load (bytes/s); defaults to the planner's assumption. */
    uplinkBytesPerSecond?: number
}

/** The shape plans are made for: the output layer stays on this node (its own output device), with the input embeddings. */
function plannedShape(model: ClusterModel) {
    return {...model.shape, inputBytes: model.shape.inputBytes + model.shape.outputBytes, outputBytes: 0};
}

/** A plan over the candidates; after a stage failed, the other stages keep their layers when they can (the planner's repair rules). */
export function planPipeline(model: ClusterModel, candidates: ShardCandidate[], {maxStages, forceSplit, previous, uplinkBytesPerSecond}: PipelinePlanOptions): ShardPlanResult {
    const shape = plannedShape(model);
    const options = {maxStages, minStages: forceSplit ? 2 : 1, ...(uplinkBytesPerSecond !== undefined && {uplinkBytesPerSecond})};
    if (previous?.plan.stages.some((stage) => stage.peerId === previous.failedPeer && !stage.self)) {
        const repaired = replanAfterFailure(shape, previous.plan, previous.failedPeer, candidates, options);
        if (repaired.ok)
            return repaired;
    }
    return planShards(shape, candidates, options);
}

/** Up to `count` spares for a running plan (spare-picker.ts): hosts outside it to fetch a stage's layers ahead. */
export function planSpares(model: ClusterModel, plan: ShardPlan, candidates: ShardCandidate[], count: number) {
    return count === 0 ? [] : pickSpares(plannedShape(model), plan, candidates, count);
}
