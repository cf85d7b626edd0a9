import type {StageWeightsView} from './text-format.js';
import type {SpeculationSummary} from '../core/inference-types.js';

/** Everything the dashboard shows: one typed state, fed by the node, rendered by pure panels. */

export interface DeviceView {
    backend: string | false,
    gpuNames: string[],
    vramTotalBytes: number,
    vramFreeBytes: number,
    cpuThreads: number,
    measuredTflops: number | null,
    lookupTflops: number | null,
    generationTokensPerSecond: number | null
}

export interface PeerView {
    id: string,
    rttMs: number | null,
    tflops: number | null,
    backend: string | false,
    vramTotalBytes: number,
    models: string[],
    successRate: number,
    requestsSent: number,
    /** Reached through a relay rather than directly. */
    relayed: boolean,
    /**
     * Why the connection is held, as `/api/peers` says (`network`, `on-demand:<why>`, `provider:<model>`, `shard-host`,
     * `relay`…).
     */
    reasons: string[]
}

export interface PipelineStageView {
    peer: string,
    self: boolean,
    /** First and last layer, 0-based, inclusive; null for a coordinator that keeps none. */
    layers: [number, number] | null,
    bytes: number,
    /** Weights to send to the stage while loading; `bytesSent` grows toward it. */
    transferBytes: number,
    /** The stage's share of the model's layers, 0..1. */
    loadRatio: number,
    hopMs: number | null,
    successRate: number | null,
    bytesSent: number,
    bytesReceived: number,
    /** Where its weights come from, with a download's progress. */
    weights?: StageWeightsView
}

/** A pipeline this node coordinates: the shape of `GET /api/cluster`'s entries, so the node passes them as they are. */
export interface PipelineView {
    model: string,
    state: string,
    /** Why no pipeline can be formed, while waiting. */
    reason: string | null,
    stages: PipelineStageView[],
    plan: {reason: string, estimatedMsPerToken: number} | null,
    placementMatches: boolean | null,
    failovers: number,
    /** Oldest first. */
    failures: {peer: string, reason: string, at: string}[],
    /** Hosts that hold or download a stage's layers ahead (`--spare-stages`); absent from older nodes. */
    spares?: {state: 'fetching' | 'ready' | 'failed'}[],
    /** The coordinator's speculative decoding through the pipeline; null before its first request. */
    speculation: SpeculationSummary | null
}

/** A model this node's engine serves. */
export interface ModelView {
    id: string,
    /** Its speculative decoding so far (`/api/node`'s); null before its first request or with speculation off. */
    speculation: SpeculationSummary | null
}

export interface ClusterView {
    pipelines: PipelineView[],
    /** Layers this node hosts for peers. */
    hosting: {available: boolean, reason: string | null, sessions: number, freeBytes: number}
}

export interface RequestView {
    id: string,
    model: string,
    /** `local`, `peers:<short ids>`, or `pipeline:<stages>` (`self` for this node's). */
    route: string,
    tokens: number,
    tokensPerSecond: number,
    status: number,
    finishedAt: number
}

export interface ProgressView {
    label: string,
    /** 0..1 */
    fraction: number
}

export interface DashboardState {
    node: {
        id: string,
        shortId: string,
        network: string | null,
        privateNetwork: boolean,
        version: string,
        proxyUrl: string | null,
        apiKeyRequired: boolean,
        /** How the DHT sees this node's NAT; null offline or before joining. */
        nat: {type: string, reachable: boolean} | null,
        /** Pairs of peers this node relays for, while it offers to; null when it does not. */
        relayPairs: number | null
    },
    device: DeviceView | null,
    engine: {state: string, restarts: number, running: number, queued: number, models: ModelView[]},
    progress: ProgressView[],
    peers: PeerView[],
    cluster: ClusterView,
    /** Generated tokens per second, one sample per second, oldest first. */
    throughput: {local: number[], forPeers: number[]},
    requests: RequestView[],
    ledger: {
        /** The contribution log's key, and its records. */
        core: string | null,
        records: number,
        points: number | null,
        /** Records and an anchoring transaction not yet done. */
        pendingRecords: number,
        pendingAnchor: {logLength: number, tx: string} | null,
        lastAnchor: {tx: string, block: number, logLength: number, at: string} | null,
        nextAnchorAt: string | null,
        /** Why anchoring is off, when it is. */
        anchoringOff: string | null
    },
    /** DOGE (decimals) earned serving peers, owed for work not yet redeemed, paid, and deposited; null when payments are off. */
    payments: {earned: string, owed: string, paid: string, deposited: string} | null,
    errors: {at: number, message: string}[]
}

/** Whether there is anything to show about sharding: a pipeline this node coordinates, or layers it hosts or offers to. */
export function clusterActive(cluster: ClusterView) {
    return cluster.pipelines.length > 0 || cluster.hosting.available || cluster.hosting.sessions > 0;
}

/** Samples kept for the sparkline: the last five minutes. */
export const THROUGHPUT_SAMPLES = 300;
export const RECENT_REQUESTS_SHOWN = 50;
export const RECENT_ERRORS_KEPT = 20;

export function emptyDashboardState(): DashboardState {
    return {
        node: {id: '', shortId: '', network: null, privateNetwork: false, version: '', proxyUrl: null, apiKeyRequired: false, nat: null, relayPairs: null},
        device: null,
        engine: {state: 'starting', restarts: 0, running: 0, queued: 0, models: []},
        progress: [],
        peers: [],
        cluster: {pipelines: [], hosting: {available: false, reason: null, sessions: 0, freeBytes: 0}},
        throughput: {local: [], forPeers: []},
        requests: [],
        ledger: {core: null, records: 0, points: null, pendingRecords: 0, pendingAnchor: null, lastAnchor: null, nextAnchorAt: null, anchoringOff: null},
        payments: null,
        errors: []
    };
}
