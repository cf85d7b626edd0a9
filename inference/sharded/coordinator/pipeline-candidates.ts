import type {PeerState} from '../../../swarm/peer-state.js';
import {planShards, replanAfterFailure, type ShardCandidate, type ShardPlan, type ShardPlanResult} from '../shard-planner.js';
import type {ClusterModel} from './pipeline-types.js';

export interface CandidateSources {
    model: ClusterModel,
    /** This node as a stage: what it offers for its own layers. */
    self: {id: string, freeMemoryBytes: number, tflops: () => number | null},
    peers: readonly PeerState[],
    /** Peers left out of plans for now (a recent failure). */
    excluded: (peerId: string) => boolean
}

/** This node, and every peer that offers memory for layers and is not left out (docs/architecture.md, "Sharding"). */
export function shardCandidates({model, self, peers, excluded}: CandidateSources): ShardCandidate[] {
    const allLayers = [[0, model.shape.layerBytes.length - 1] as const];
    const candidates: ShardCandidate[] = [{
        peerId: self.id, self: true, freeMemoryBytes: self.freeMemoryBytes, tflops: self.tflops(), rttMs: 0, successRate: 1, heldLayers: allLayers
    }];
    const sha256 = model.sha256();
    for (const peer of peers) {
        const host = peer.capabilities.shardHost;
        if (host === undefined || host === null || excluded(peer.id))
            continue;
        const holds = sha256 !== null && peer.capabilities.models.some((offer) => offer.sha256 === sha256);
        candidates.push({
            peerId: peer.id, self: false, freeMemoryBytes: host.freeBytes,
            tflops: peer.capabilities.compute.measuredTflops ?? peer.capabilities.compute.lookupTflops,
            rttMs: peer.rtt.smoothedMs ?? null, successRate: peer.successRate,
            heldLayers: holds ? allLayers : []
        });
    }
    return candidates;
}

export interface PipelinePlanOptions {
    maxStages: number,
    /** Split even when the model fits this node. */
    forceSplit: boolean,
    /** The plan that last ran, and the peer whose failure ended it. */
    previous: {plan: ShardPlan, failedPeer: string} | undefined
}

/** A plan over the candidates; after a stage failed, the other stages keep their layers when they can (the planner's repair rules). */
export function planPipeline(model: ClusterModel, candidates: ShardCandidate[], {maxStages, forceSplit, previous}: PipelinePlanOptions): ShardPlanResult {
    // The output layer stays on this node (its own output device), with the input embeddings.
    const shape = {...model.shape, inputBytes: model.shape.inputBytes + model.shape.outputBytes, outputBytes: 0};
    const options = {maxStages, minStages: forceSplit ? 2 : 1};
    if (previous?.plan.stages.some((stage) => stage.peerId === previous.failedPeer && !stage.self)) {
        const repaired = replanAfterFailure(shape, previous.plan, previous.failedPeer, candidates, options);
        if (repaired.ok)
            return repaired;
    }
    return planShards(shape, candidates, options);
}
