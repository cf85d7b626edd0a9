import type {SpeculationSummary} from '../../../core/inference-types.js';
import type {PeerState} from '../../../swarm/peer-state.js';
import type {ClusterModel, ClusterState, Formation, SpareState, StageFailure} from './pipeline-types.js';

export interface PipelineStatusSources {
    model: ClusterModel,
    state: ClusterState,
    /** Why the pipeline is not ready, while waiting. */
    reason: string | undefined,
    /** The running formation, or the one forming (its stages open, downloading their layers perhaps). */
    formation: Pick<Formation, 'plan' | 'stages'> | undefined,
    peer: (peerId: string) => PeerState | undefined,
    placementMatches: boolean | null,
    failovers: number,
    failures: readonly StageFailure[],
    /** The running plan's spares (`--spare-stages`). */
    spares: readonly SpareState[],
    /** The coordinator engine's speculation for the model (its `getStatus().speculation`); undefined before its first request. */
    speculation: SpeculationSummary | undefined
}

/**
 * The share of requests sent to a peer that it served, null before the first. Not the peer's smoothed `successRate`,
 * which ranks peers and starts at one half: a stage that served every request shows 100%.
 */
export function servedRatio(peer: Pick<PeerState, 'requestsSent' | 'requestsSucceeded'> | undefined) {
    return peer === undefined || peer.requestsSent === 0 ? null : peer.requestsSucceeded / peer.requestsSent;
}

/** One pipeline as `GET /api/cluster` lists it (node/node-status.ts has its schema). */
export function describePipeline({model, state, reason, formation, peer, placementMatches, failovers, failures, spares, speculation}: PipelineStatusSources) {
    const totalLayers = model.shape.layerBytes.length;
    const stages = formation?.plan.stages.map((planned) => {
        const active = formation.stages.find((stage) => stage.peerId === planned.peerId);
        const layers = planned.lastLayer === undefined || planned.firstLayer === undefined ? null : [planned.firstLayer, planned.lastLayer] as [number, number];
        return {
            peer: planned.peerId,
            self: planned.self,
            layers,
            bytes: planned.bytes,
            transferBytes: planned.transferBytes,
            loadRatio: layers === null ? 0 : (layers[1] - layers[0] + 1) / totalLayers,
            hopMs: active === undefined ? null : active.endpoint.stall.medianMs,
            successRate: planned.self ? null : servedRatio(peer(planned.peerId)),
            bytesSent: active?.endpoint.bytesToStage ?? 0,
            bytesReceived: active?.endpoint.bytesFromStage ?? 0,
            weights: planned.self ? {from: 'held' as const, fetch: null} : {from: active?.weights.from ?? planned.weightsFrom, fetch: active?.weights.fetch ?? null}
        };
    }) ?? [];
    return {
        model: model.id,
        state,
        reason: reason ?? null,
        stages,
        plan: formation === undefined ? null : {reason: formation.plan.reason, estimatedMsPerToken: formation.plan.estimatedMsPerToken},
        placementMatches,
        failovers,
        failures: failures.slice(-10),
        spares: spares.map(({peerId, replaces, layers, state: spareState, doneBytes, totalBytes, reason: why}) =>
            ({peer: peerId, replaces, layers, state: spareState, doneBytes, totalBytes, reason: why})),
        speculation: speculation ?? null
    };
}

export interface PipelineWaitSources {
    state: ClusterState,
    reason: string | undefined,
    /** While forming: the plan's stages, and those open so far. */
    forming: {opened: number, stages: number} | undefined,
    /** The engine's load progress, 0..1, while loading. */
    loadProgress: number | undefined
}

/** What a pipeline that does not serve yet waits for, in a few words (`/health`). */
export function pipelineWait({state, reason, forming, loadProgress}: PipelineWaitSources) {
    switch (state) {
        case 'waiting':
            return `no pipeline yet: ${reason ?? 'waiting for peers'}`;
        case 'forming':
            return forming === undefined ? 'pipeline forming' : `pipeline forming: ${forming.opened} of ${forming.stages} stages`;
        case 'loading':
            return loadProgress === undefined ? 'pipeline loading' : `pipeline loading: ${Math.round(loadProgress * 100)}%`;
        case 'stopped':
            return 'the pipeline stopped';
        default:
            return state;
    }
}
