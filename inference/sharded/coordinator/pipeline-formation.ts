import type {RpcServerFiles} from '../../../engine/rpc/rpc-server-dir.js';
import {RpcServerHost} from '../../../engine/rpc/rpc-server-host.js';
import {layerSplit} from '../layer-split.js';
import type {ShardPlan} from '../shard-planner.js';
import {coordinatorFilter} from '../tunnel/rpc-filters.js';
import type {FetchOutcome, FetchProgress, FetchRequest, ShardProtocol} from '../tunnel/shard-protocol.js';
import type {TensorDigest} from '../../../core/tensor-digest.js';
import {digestsOfLayers} from '../../../engine/tensor-digests.js';
import {SocketStream} from '../tunnel/socket-pipe.js';
import {TunnelEndpoint} from '../tunnel/tunnel-endpoint.js';
import type {ActiveStage, ClusterModel, Formation, LocalDevice, StageWeights} from './pipeline-types.js';

/** Forming a pipeline from a plan: the hosts' sessions, this node's own devices, and where llama.cpp should put each layer. */

/**
 * The engine's RPC devices in order: this node's first device (when it keeps layers), each remote stage, its output
 * device with the output layer alone; llama.cpp's CPU keeps only the embeddings.
 */
export function deviceSplit(plan: ShardPlan) {
    const remote = plan.stages.filter((stage) => !stage.self);
    const ownLayers = plan.stages.filter((stage) => stage.self)
        .reduce((sum, stage) => sum + (stage.lastLayer === undefined ? 0 : stage.lastLayer - stage.firstLayer! + 1), 0);
    const ownFirst = ownLayers > 0 ? 1 : 0;
    const split = layerSplit(0, [...(ownFirst ? [ownLayers] : []), ...remote.map((stage) => stage.lastLayer! - stage.firstLayer! + 1), 0]);
    return {
        remote,
        /** Memory each remote stage's endpoint reports, in `remote`'s order. */
        remoteBytes: remote.map((_stage, index) => split.reportedBytes[ownFirst + index]!),
        /** Memory this node's first device reports; undefined when it keeps no layer. */
        firstBytes: ownFirst ? split.reportedBytes[0]! : undefined,
        outputBytes: split.reportedBytes.at(-1)!,
        gpuLayers: split.gpuLayers
    };
}

export interface OpenStageOptions {
    shards: ShardProtocol,
    model: ClusterModel,
    stage: ShardPlan['stages'][number],
    reportedBytes: bigint,
    /** Sequences the engine decodes together: the host bounds the session's receipts by it (session-request.ts). */
    sequences: number,
    /** The host announces the model file: it seeds its cache from its own copy and downloads nothing. */
    holdsFile: boolean,
    /** The stage's stream closed or its host ended the session. */
    onLost: (reason: string) => void
}

/** Opens a remote stage's shard session and the loopback endpoint the engine's RPC device connects to. */
export async function openStage({shards, model, stage, reportedBytes, sequences, holdsFile, onLost}: OpenStageOptions): Promise<ActiveStage> {
    const session = await shards.openSession(stage.peerId, {
        model: {id: model.id, bytes: model.sizeBytes, sha256: model.sha256()}, layers: [stage.firstLayer!, stage.lastLayer!],
        layerCount: model.shape.layerBytes.length, sequences, bytes: stage.bytes
    });
    const endpoint = await TunnelEndpoint.listen({
        connect: () => session.connect(),
        createFilter: () => coordinatorFilter({reportMemory: {free: reportedBytes, total: reportedBytes}})
    }, (reason) => onLost(`the stage closed its stream: ${reason}`));
    session.on('ended', (reason) => onLost(`the host ended the session: ${reason}`));
    return {peerId: stage.peerId, firstLayer: stage.firstLayer!, lastLayer: stage.lastLayer!, transferBytes: stage.transferBytes, session, endpoint,
        weights: {from: holdsFile ? 'held' : 'coordinator'}};
}

/** How long a download may go without progress before the formation goes on without it (its tensors then come from this node). */
const FETCH_STALL_MS = 60_000;
/** Tensors per fetch frame: a few hundred bytes each, well under the frame's 1 MiB (a host refuses a larger frame as a violation). */
const TENSORS_PER_FETCH = 2048;

/** A fetch's report summed over its frames. */
function sumOutcomes(outcomes: readonly FetchOutcome[]): FetchOutcome {
    const reasons = outcomes.flatMap((outcome) => outcome.reason === undefined ? [] : [outcome.reason]);
    const downloadedBytes = outcomes.reduce((sum, outcome) => sum + outcome.downloadedBytes, 0);
    const rates = outcomes.flatMap((outcome) => outcome.bytesPerSecond === null ? [] : [outcome.bytesPerSecond]);
    return {stored: outcomes.reduce((sum, outcome) => sum + outcome.stored, 0), failed: outcomes.reduce((sum, outcome) => sum + outcome.failed, 0),
        downloadedBytes, bytesPerSecond: rates.length === 0 ? null : Math.min(...rates), ...(reasons.length > 0 && {reason: reasons.join('; ').slice(0, 512)})};
}

export interface FetchWatch {
    /** Gives up when the bytes done have not grown for this long; defaults to `FETCH_STALL_MS`. */
    stallMs?: number,
    /**
     * Gives up, once a stall's time has passed, when the download goes slower than this (bytes/s): this node's uplink,
     * which would then send the weights sooner. Defaults to no such rule.
     */
    slowerThanBytesPerSecond?: number
}

/**
 * Asks a host to download `tensors` (in frames of at most `TENSORS_PER_FETCH`) and waits for its report, or resolves
 * `'stalled'` when it stops making progress, or goes slower than `slowerThanBytesPerSecond`. Only growing `doneBytes`
 * count as progress: a host that repeats itself cannot hold a formation.
 */
export async function fetchWatched(send: (tensors: TensorDigest[], onProgress: (progress: FetchProgress) => void) => Promise<FetchOutcome>,
    tensors: readonly TensorDigest[], onProgress: (doneBytes: number) => void, {stallMs = FETCH_STALL_MS, slowerThanBytesPerSecond}: FetchWatch = {}) {
    const startedAt = Date.now();
    let done = 0;
    let before = 0; // bytes of the frames already reported
    let grewAt = Date.now();
    let stalled: (() => void) | undefined;
    const check = setInterval(() => {
        const elapsed = Date.now() - startedAt;
        const slow = slowerThanBytesPerSecond !== undefined && elapsed >= stallMs && done / (elapsed / 1000) < slowerThanBytesPerSecond;
        if (Date.now() - grewAt >= stallMs || slow)
            stalled?.();
    }, Math.min(1_000, stallMs / 4));
    try {
        return await Promise.race([
            (async () => {
                const outcomes: FetchOutcome[] = [];
                for (let index = 0; index < tensors.length; index += TENSORS_PER_FETCH) {
                    const frame = tensors.slice(index, index + TENSORS_PER_FETCH);
                    outcomes.push(await send(frame, ({doneBytes}) => {
                        if (before + doneBytes > done) {
                            done = before + doneBytes;
                            grewAt = Date.now();
                            onProgress(done);
                        }
                    }));
                    before += frame.reduce((sum, tensor) => sum + tensor.bytes, 0);
                }
                return sumOutcomes(outcomes);
            })(),
            new Promise<'stalled'>((resolve) => {
                stalled = () => resolve('stalled');
            })
        ]);
    } finally {
        clearInterval(check);
    }
}

/**
 * Has a stage's host download the big tensors of its layers from the model's source (docs/architecture.md, "Hosts
 * that fetch their layers"), and waits for its report: the tensors it did not store are sent by this node at load, as
 * before. Resolves when the download is over, made no progress for a minute, or went slower than this node's uplink
 * would; rejects when the session ends.
 */
export async function fetchStageLayers(stage: ActiveStage, request: Omit<FetchRequest, 'layers' | 'tensors'>, digests: readonly TensorDigest[],
    onChange: () => void, watch: FetchWatch = {}) {
    const tensors = digestsOfLayers(digests, [stage.firstLayer, stage.lastLayer]);
    if (tensors.length === 0 || stage.weights.from === 'held')
        return undefined;
    const layers: [number, number] = [stage.firstLayer, stage.lastLayer];
    const totalBytes = tensors.reduce((sum, tensor) => sum + tensor.bytes, 0);
    const weights: StageWeights = {from: 'source', fetch: {state: 'fetching', doneBytes: 0, totalBytes, stored: 0, failed: 0, reason: null}};
    stage.weights = weights;
    onChange();
    try {
        const outcome = await fetchWatched((frame, onProgress) => stage.session.fetch({...request, layers, tensors: frame}, onProgress), tensors,
            (doneBytes) => weights.fetch = {...weights.fetch!, doneBytes}, watch);
        weights.fetch = outcome === 'stalled'
            ? {...weights.fetch!, state: 'failed', reason: 'the download made too little progress: this node sends the weights'}
            : {...weights.fetch!, state: outcome.stored > 0 ? 'done' : 'failed', doneBytes: outcome.failed === 0 ? totalBytes : weights.fetch!.doneBytes,
                stored: outcome.stored, failed: outcome.failed, reason: outcome.reason ?? null};
        // Nothing stored, or still downloading when the formation went on: this node sends the weights at load.
        if (outcome === 'stalled' || outcome.stored === 0)
            stage.weights = {from: 'coordinator', fetch: weights.fetch};
        return outcome === 'stalled' ? undefined : outcome;
    } finally {
        onChange();
    }
}

export async function closeStage(stage: ActiveStage, reason: string) {
    stage.session.end(reason);
    await stage.endpoint.close(reason);
}

export async function closeFormation(formation: Formation, reason: string) {
    await Promise.all([...formation.stages.map((stage) => closeStage(stage, reason)), formation.first?.close(reason), formation.output.close(reason)]);
}

export interface LocalDevicesOptions {
    threads: number,
    /** A device's rpc server exited: whichever formation is current has lost it. */
    onExit: (device: LocalDevice, reason: string) => void
}

/** The rpc servers of this node's own devices: kept across formations, started again if one dies. */
export class LocalDevices {
    private readonly servers = new Map<LocalDevice, RpcServerHost>();
    private readonly options: LocalDevicesOptions;

    constructor(options: LocalDevicesOptions) {
        this.options = options;
    }

    /** A loopback endpoint to the device's rpc server that reports its planned share; `onLost` when the connection closes. */
    async open(device: LocalDevice, files: Pick<RpcServerFiles, 'serverPath'>, reportedBytes: bigint, onLost: (reason: string) => void) {
        let server = this.servers.get(device);
        if (server === undefined) {
            server = new RpcServerHost({binaries: files, threads: this.options.threads});
            server.on('exit', (code, signal) => {
                this.servers.delete(device);
                this.options.onExit(device, `this node's ${device} device exited (${signal ?? code})`);
            });
            await server.start();
            this.servers.set(device, server);
        }
        const port = server.port!;
        return TunnelEndpoint.listen({
            connect: () => new SocketStream(port),
            createFilter: () => coordinatorFilter({reportMemory: {free: reportedBytes, total: reportedBytes}})
        }, (reason) => onLost(`this node's ${device} device closed its connection: ${reason}`));
    }

    async stop() {
        await Promise.all([...this.servers.values()].map((server) => server.stop()));
    }
}

/** The RPC device llama.cpp should put each layer on, by the plan, the output layer last (to check its own load report). */
export function expectedPlacement(formation: Formation) {
    const ownFirst = formation.first === undefined ? 0 : 1;
    const expected: string[] = [];
    for (const stage of formation.plan.stages) {
        if (stage.firstLayer === undefined || stage.lastLayer === undefined)
            continue;
        const device = `RPC${stage.self ? 0 : ownFirst + formation.stages.findIndex((active) => active.peerId === stage.peerId)}`;
        for (let layer = stage.firstLayer; layer <= stage.lastLayer; layer++)
            expected.push(device);
    }
    expected.push(`RPC${ownFirst + formation.stages.length}`); // on this node's own output device
    return expected;
}
