import type {ModelSourceRef, TensorDigest} from '../../../core/tensor-digest.js';
import type {ModelShape, ShardPlan} from '../shard-planner.js';
import type {CoordinatorSession} from '../tunnel/shard-protocol.js';
import type {TunnelEndpoint} from '../tunnel/tunnel-endpoint.js';

/** What the coordinator's parts share (docs/architecture.md, "Sharding"). */

export type ClusterState = 'waiting' | 'forming' | 'loading' | 'ready' | 'stopped';

export interface ClusterModel {
    id: string,
    path: string,
    /** The draft model the coordinator drafts with (`--draft-model`), loaded whole on this node. Defaults to none. */
    draft?: {path: string},
    /** The file's size: receipts carry it, and points weigh by it. */
    sizeBytes: number,
    /** The file's SHA-256 once hashed (large files take a while), so hosts that hold it are preferred and seed their caches. */
    sha256: () => string | null,
    shape: ModelShape,
    /**
     * Where the file can be downloaded from (an `hf:` reference or a URL it was loaded from), so hosts fetch their
     * layers there rather than through this node; defaults to none.
     */
    source?: ModelSourceRef,
    /** The SHA-256 of each big tensor of the file, computed once from this node's copy and cached (needed with `source`). */
    tensorDigests?: () => Promise<readonly TensorDigest[]>
}

/** A spare of the running plan: a host outside it that holds or downloads a stage's layers ahead. */
export interface SpareState {
    peerId: string,
    /** The stage's host it would replace. */
    replaces: string,
    layers: [number, number],
    /** `ready`: it holds the layers' big tensors (its own copy of the file, or downloaded); `failed`: it does not, with why. */
    state: 'fetching' | 'ready' | 'failed',
    doneBytes: number,
    totalBytes: number,
    reason: string | null
}

/** How a stage's host came by its weights in the running (or forming) plan, for `/api/cluster`. */
export interface StageWeights {
    /** `held`: it holds the file; `source`: it downloads the big tensors from the model's source; `coordinator`: it receives them from this node. */
    from: 'held' | 'source' | 'coordinator',
    /** While or after a download: its progress and outcome. */
    fetch?: {state: 'fetching' | 'done' | 'failed', doneBytes: number, totalBytes: number, stored: number, failed: number, reason: string | null}
}

export interface StageFailure {
    peer: string,
    reason: string,
    at: string
}

/** A remote stage of the running plan (its layers, which a remote stage always has), with its session and endpoint. */
export interface ActiveStage {
    peerId: string,
    firstLayer: number,
    lastLayer: number,
    transferBytes: number,
    session: CoordinatorSession,
    endpoint: TunnelEndpoint,
    weights: StageWeights
}

/** This node's own devices: its layers (first) and the output layer (last), each a local rpc server. */
export type LocalDevice = 'first' | 'output';

/** The part of a pipeline that failed: a host's stage, or one of this node's own devices. */
export type FailedPart = {kind: 'stage', peerId: string} | {kind: 'local', device: LocalDevice};

export interface Formation {
    /** Numbered, so that the streams of a formation since replaced blame nobody. */
    generation: number,
    plan: ShardPlan,
    stages: ActiveStage[],
    /** This node's own device for its layers, first in the pipeline; none when it keeps no layer. */
    first: TunnelEndpoint | undefined,
    /** This node's own device for the output layer, last in the pipeline: the logits never leave this node. */
    output: TunnelEndpoint,
    /** Undefined while it runs; the failure that ended it, after which its stages' closing streams are expected. */
    failure: StageFailure | undefined
}
