import {randomBytes} from 'node:crypto';
import {EventEmitter} from 'node:events';
import {EngineSupervisor, type EngineSupervisorOptions} from '../../engine/engine-supervisor.js';
import type {RpcServerFiles} from '../../engine/rpc/rpc-server-dir.js';
import {RpcServerHost} from '../../engine/rpc/rpc-server-host.js';
import type {ShardLoadSettings} from '../../engine/engine-settings.js';
import type {ShardReceipt} from '../../ledger/records.js';
import type {SwarmNode} from '../../swarm/swarm-node.js';
import {layerSplit} from './layer-split.js';
import {planShards, replanAfterFailure, type ModelShape, type ShardCandidate, type ShardPlan} from './shard-planner.js';
import {coordinatorFilter} from './tunnel/rpc-filters.js';
import type {CoordinatorSession, ShardProtocol} from './tunnel/shard-protocol.js';
import {SocketStream} from './tunnel/socket-pipe.js';
import {TunnelEndpoint} from './tunnel/tunnel-endpoint.js';

export type ClusterState = 'waiting' | 'forming' | 'loading' | 'ready' | 'stopped';

/** How long a first formation waits for the model file's hash (a large file takes minutes; later starts read it from a cache). */
const HASH_WAIT_MS = 5 * 60_000;
/** How often weight-transfer progress is logged while a pipeline loads. */
const TRANSFER_REPORT_INTERVAL_MS = 2_000;

export interface ClusterModel {
    id: string,
    path: string,
    /** The file's size: receipts carry it, and points weigh by it. */
    sizeBytes: number,
    /** The file's SHA-256 once hashed (large files take a while), so hosts that hold it are preferred and seed their caches. */
    sha256: () => string | null,
    shape: ModelShape
}

export interface ClusterCoordinatorOptions {
    model: ClusterModel,
    swarm: SwarmNode,
    shards: ShardProtocol,
    /**
     * The RPC backend for the engine child (beside the CPU ggml it loads), and the rpc server for this node's own
     * devices (with its GPU backend), once built.
     */
    rpcFiles: () => Pick<RpcServerFiles, 'libraryPath' | 'serverPath'> | undefined,
    /** This node as a stage: what it offers for its own layers. */
    self: {id: string, freeMemoryBytes: number, tflops: () => number | null},
    /** Most stages in a plan, this node included; defaults to 4. */
    maxStages?: number,
    /** Split even when the model fits this node (`--shard always`); defaults to false. */
    forceSplit?: boolean,
    /** The engine child's settings (threads, sequences, context, queue). */
    engine: Omit<EngineSupervisorOptions, 'models' | 'gpu' | 'prepareLoad' | 'shard' | 'stopOnFirstLoadFailure'>,
    /** How long a failed peer is left out of plans; defaults to 60 s. */
    failureCooldownMs?: number,
    /** How often the watchdog looks at the stages; defaults to 100 ms. */
    watchIntervalMs?: number,
    /** Signs a receipt for the hosts' work (the node's identity key); defaults to issuing none. */
    signReceipt?: (body: ShardReceipt['body']) => ShardReceipt
}

export const clusterCoordinatorDefaults = {
    maxStages: 4,
    forceSplit: false,
    failureCooldownMs: 60_000,
    watchIntervalMs: 100
};

export interface StageFailure {
    peer: string,
    reason: string,
    at: string
}

/** A remote stage of the running plan (its layers, which a remote stage always has), with its session and endpoint. */
interface ActiveStage {
    peerId: string,
    firstLayer: number,
    lastLayer: number,
    transferBytes: number,
    session: CoordinatorSession,
    endpoint: TunnelEndpoint
}

interface Formation {
    /** Bumped for every new formation, so that the old one's closing streams blame nobody. */
    generation: number,
    plan: ShardPlan,
    stages: ActiveStage[],
    /** This node's own device for its layers, first in the pipeline; none when it keeps no layer. */
    first: TunnelEndpoint | undefined,
    /** This node's own device for the output layer, last in the pipeline: the logits never leave this node. */
    output: TunnelEndpoint
}

/** This node's own devices: its layers (first) and the output layer (last), each a local rpc server. */
type LocalDevice = 'first' | 'output';

export interface ClusterEvents {
    state: [state: ClusterState],
    /** A stage failed: the engine is being restarted on a new plan. */
    stageFailed: [failure: StageFailure],
    log: [level: 'info' | 'warn' | 'error', message: string, fields: Record<string, unknown>]
}

/**
 * Coordinates a pipeline of layer shards for one model (docs/architecture.md, "Sharding"): plans the stages over
 * this node and its peers, opens a shard session on each host, joins the engine child's RPC devices to them
 * through loopback tunnel endpoints, and watches them. When a stage dies or stalls, it kills the engine child;
 * the engine restarts, asks for a new plan without that peer and reloads, and the sharded strategy resumes the
 * requests in flight.
 */
export class ClusterCoordinator extends EventEmitter<ClusterEvents> {
    readonly engine: EngineSupervisor;
    failovers = 0;
    readonly failures: StageFailure[] = [];
    private readonly options: Required<Omit<ClusterCoordinatorOptions, 'signReceipt'>> & Pick<ClusterCoordinatorOptions, 'signReceipt'>;
    private readonly excluded = new Map<string, number>();
    private formation: Formation | undefined;
    private generation = 0;
    private state: ClusterState = 'waiting';
    private waitingReason = 'not started yet: llama.cpp\'s RPC server may still be building';
    private stopped = false;
    private placementMatches: boolean | null = null;
    private watchTimer: NodeJS.Timeout | undefined;
    private wakeUp: (() => void) | undefined;
    /** The rpc servers of this node's own devices; kept across formations, started again if one dies. */
    private readonly localServers = new Map<LocalDevice, RpcServerHost>();
    private lastTransferReportAt = 0;
    /** The plan that last ran, and the peer whose failure ended it. */
    private previous: {plan: ShardPlan, failedPeer: string} | undefined;
    /** Requests whose current attempt has streamed no token yet: their stages may take a prompt's time. */
    private prefilling = 0;

    constructor(options: ClusterCoordinatorOptions) {
        super();
        this.options = {...clusterCoordinatorDefaults, ...options};
        this.engine = new EngineSupervisor({
            ...options.engine,
            models: [{id: options.model.id, path: options.model.path}],
            gpu: false,
            prepareLoad: () => this.form(),
            stopOnFirstLoadFailure: false
        });
        this.engine.on('state', (state) => {
            if (state === 'ready')
                this.checkPlacement();
            this.setState(state === 'ready' ? 'ready' : this.formation === undefined ? this.state : 'loading');
        });
        this.options.swarm.on('peerJoined', () => this.wakeUp?.());
        this.options.swarm.on('capabilities', () => this.wakeUp?.());
        this.options.swarm.on('peerLeft', (peerId, reason) => {
            if (this.formation?.stages.some((stage) => stage.peerId === peerId))
                this.failStage(peerId, `the peer disconnected: ${reason.message}`);
        });
    }

    start() {
        this.watchTimer = setInterval(() => this.watch(), this.options.watchIntervalMs);
        this.watchTimer.unref();
        return this.engine.start();
    }

    async stop() {
        this.stopped = true;
        clearInterval(this.watchTimer);
        this.wakeUp?.();
        this.setState('stopped');
        await this.engine.dispose();
        await this.teardown('the coordinator stopped');
        await Promise.all([...this.localServers.values()].map((server) => server.stop()));
    }

    get modelId() {
        return this.options.model.id;
    }

    /** Why the pipeline is not ready, when it is not. */
    get reason() {
        return this.state === 'waiting' ? this.waitingReason : undefined;
    }

    get currentState() {
        return this.state;
    }

    /** A request's attempt begins (true) or streams its first token / ends (false). */
    prefill(started: boolean) {
        this.prefilling += started ? 1 : -1;
    }

    describe() {
        const formation = this.formation;
        const totalLayers = this.options.model.shape.layerBytes.length;
        const stages = formation?.plan.stages.map((planned) => {
            const active = formation.stages.find((stage) => stage.peerId === planned.peerId);
            const peer = planned.self ? undefined : this.options.swarm.peer(planned.peerId);
            const layers = planned.lastLayer === undefined || planned.firstLayer === undefined ? null : [planned.firstLayer, planned.lastLayer] as [number, number];
            return {
                peer: planned.peerId,
                self: planned.self,
                layers,
                bytes: planned.bytes,
                transferBytes: planned.transferBytes,
                loadRatio: layers === null ? 0 : (layers[1] - layers[0] + 1) / totalLayers,
                hopMs: active === undefined ? null : active.endpoint.stall.medianMs,
                successRate: peer?.successRate ?? null,
                bytesSent: active?.endpoint.bytesToStage ?? 0,
                bytesReceived: active?.endpoint.bytesFromStage ?? 0
            };
        }) ?? [];
        return {
            model: this.options.model.id,
            state: this.state,
            reason: this.reason ?? null,
            stages,
            plan: formation === undefined ? null : {reason: formation.plan.reason, estimatedMsPerToken: formation.plan.estimatedMsPerToken},
            placementMatches: this.placementMatches,
            failovers: this.failovers,
            failures: this.failures.slice(-10)
        };
    }

    /**
     * A request's attempt generated `tokens` through the current pipeline: each remote stage gets a signed receipt for
     * them, which its host keeps in its contribution log (a `shard` record; ledger/points.ts).
     */
    creditStages(tokens: number) {
        const {formation} = this;
        const sign = this.options.signReceipt;
        if (formation === undefined || formation.generation === -1 || tokens === 0 || sign === undefined)
            return;
        const {model, self} = this.options;
        for (const stage of formation.stages)
            stage.session.sendReceipt(sign({
                version: 1,
                session: randomBytes(32).toString('hex'),
                model: model.id,
                modelBytes: model.sizeBytes,
                layerCount: model.shape.layerBytes.length,
                firstLayer: stage.firstLayer,
                lastLayer: stage.lastLayer,
                tokens,
                computeMs: Math.round(stage.endpoint.takeBusyMs()),
                host: stage.peerId,
                coordinator: self.id,
                completedAt: new Date().toISOString()
            }));
    }

    /** The engine child is about to load: plan, open every stage's session and tunnel, and say where they are. */
    private async form(): Promise<{shard: ShardLoadSettings}> {
        await this.teardown('a new plan replaces this one');
        const files = this.options.rpcFiles();
        if (files === undefined)
            throw new Error('the RPC backend is not built');
        await this.modelHashed();
        while (!this.stopped) {
            const plan = this.plan();
            if (!plan.ok) {
                this.waitingReason = plan.reason;
                this.setState('waiting');
                await this.peersChanged(2_000);
                continue;
            }
            this.setState('forming');
            const generation = ++this.generation;
            const remote = plan.plan.stages.filter((stage) => !stage.self);
            const coordinatorLayers = plan.plan.stages.filter((stage) => stage.self)
                .reduce((sum, stage) => sum + (stage.lastLayer === undefined ? 0 : stage.lastLayer - stage.firstLayer! + 1), 0);
            // This node's layers run on its own first device (its GPU backend when it has one), the output layer alone
            // on its own last device; llama.cpp's CPU keeps only the embeddings.
            const first = coordinatorLayers > 0 ? 1 : 0;
            const split = layerSplit(0, [...(first ? [coordinatorLayers] : []), ...remote.map((stage) => stage.lastLayer! - stage.firstLayer! + 1), 0]);
            const opened = await Promise.allSettled(remote.map((stage, index) => this.openStage(stage, split.reportedBytes[first + index]!, generation)));
            const stages = opened.flatMap((result) => result.status === 'fulfilled' ? [result.value] : []);
            const failed = opened.flatMap((result, index) => result.status === 'rejected' ? [{peer: remote[index]!.peerId, error: result.reason as Error}] : []);
            if (failed.length > 0) {
                for (const {peer, error} of failed)
                    this.recordFailure(peer, `cannot open a shard session: ${error.message}`);
                await Promise.all(stages.map((stage) => this.closeStage(stage, 'the plan failed to form')));
                continue;
            }
            const firstDevice = first ? await this.openLocalDevice('first', files, split.reportedBytes[0]!, generation) : undefined;
            const output = await this.openLocalDevice('output', files, split.reportedBytes.at(-1)!, generation);
            this.formation = {generation, plan: plan.plan, stages, first: firstDevice, output};
            this.previous = undefined;
            this.placementMatches = null;
            this.setState('loading');
            this.emit('log', 'info', 'pipeline formed', {model: this.options.model.id, plan: plan.plan.reason});
            const endpoints = [...(firstDevice ? [firstDevice.address] : []), ...stages.map((stage) => stage.endpoint.address), output.address];
            return {shard: {rpcLibraryPath: files.libraryPath, endpoints, gpuLayers: split.gpuLayers}};
        }
        throw new Error('the coordinator stopped');
    }

    private plan(): {ok: true, plan: ShardPlan} | {ok: false, reason: string} {
        const now = Date.now();
        for (const [peerId, until] of this.excluded)
            if (until <= now)
                this.excluded.delete(peerId);
        const {self, model} = this.options;
        const candidates: ShardCandidate[] = [{
            peerId: self.id, self: true, freeMemoryBytes: self.freeMemoryBytes, tflops: self.tflops(), rttMs: 0, successRate: 1,
            heldLayers: [[0, model.shape.layerBytes.length - 1]]
        }];
        for (const peer of this.options.swarm.peers()) {
            const host = peer.capabilities.shardHost;
            if (host === undefined || host === null || this.excluded.has(peer.id))
                continue;
            const sha256 = model.sha256();
            const holds = sha256 !== null && peer.capabilities.models.some((offer) => offer.sha256 === sha256);
            candidates.push({
                peerId: peer.id, self: false, freeMemoryBytes: host.freeBytes,
                tflops: peer.capabilities.compute.measuredTflops ?? peer.capabilities.compute.lookupTflops,
                rttMs: peer.rtt.smoothedMs ?? null, successRate: peer.successRate,
                heldLayers: holds ? [[0, model.shape.layerBytes.length - 1]] : []
            });
        }
        // The output layer stays on this node (its own output device), with the input embeddings.
        const shape = {...model.shape, inputBytes: model.shape.inputBytes + model.shape.outputBytes, outputBytes: 0};
        const options = {maxStages: this.options.maxStages, minStages: this.options.forceSplit ? 2 : 1};
        // After a stage failed, the other stages keep their layers when they can (the planner's repair rules).
        const {previous} = this;
        if (previous?.plan.stages.some((stage) => stage.peerId === previous.failedPeer && !stage.self)) {
            const repaired = replanAfterFailure(shape, previous.plan, previous.failedPeer, candidates, options);
            if (repaired.ok)
                return repaired;
        }
        return planShards(shape, candidates, options);
    }

    private async openStage(stage: ShardPlan['stages'][number], reportedBytes: bigint, generation: number): Promise<ActiveStage> {
        const {model} = this.options;
        const session = await this.options.shards.openSession(stage.peerId, {
            model: {id: model.id, sha256: model.sha256()}, layers: [stage.firstLayer!, stage.lastLayer!], bytes: stage.bytes
        });
        const endpoint = await TunnelEndpoint.listen({
            connect: () => session.connect(),
            createFilter: () => coordinatorFilter({reportMemory: {free: reportedBytes, total: reportedBytes}})
        }, (reason) => {
            if (this.formation?.generation === generation)
                this.failStage(stage.peerId, `the stage closed its stream: ${reason}`);
        });
        session.on('ended', (reason) => {
            if (this.formation?.generation === generation)
                this.failStage(stage.peerId, `the host ended the session: ${reason}`);
        });
        return {peerId: stage.peerId, firstLayer: stage.firstLayer!, lastLayer: stage.lastLayer!, transferBytes: stage.transferBytes, session, endpoint};
    }

    /** One of this node's own devices: a local rpc server behind a loopback endpoint that reports its planned share. */
    private async openLocalDevice(device: LocalDevice, files: Pick<RpcServerFiles, 'serverPath'>, reportedBytes: bigint, generation: number) {
        let server = this.localServers.get(device);
        if (server === undefined) {
            server = new RpcServerHost({binaries: files, threads: this.options.engine.threads});
            server.on('exit', (code, signal) => {
                this.localServers.delete(device);
                // The server outlives formations: whichever is current has lost the device.
                if (this.formation !== undefined && this.formation.generation !== -1)
                    this.failLocally(`this node's ${device} device exited (${signal ?? code})`);
            });
            await server.start();
            this.localServers.set(device, server);
        }
        const port = server.port!;
        return TunnelEndpoint.listen({
            connect: () => new SocketStream(port),
            createFilter: () => coordinatorFilter({reportMemory: {free: reportedBytes, total: reportedBytes}})
        }, (reason) => {
            if (this.formation?.generation === generation)
                this.failLocally(`this node's ${device} device closed its connection: ${reason}`);
        });
    }

    private async closeStage(stage: ActiveStage, reason: string) {
        stage.session.end(reason);
        await stage.endpoint.close(reason);
    }

    private async teardown(reason: string) {
        const formation = this.formation;
        this.formation = undefined;
        if (formation !== undefined)
            await Promise.all([...formation.stages.map((stage) => this.closeStage(stage, reason)), formation.first?.close(reason), formation.output.close(reason)]);
    }

    /** A stage is gone: leave its peer out for a while and restart the engine on a new plan. */
    private failStage(peerId: string, reason: string) {
        const formation = this.formation;
        if (formation === undefined || this.stopped)
            return;
        this.formation = {...formation, generation: -1}; // its stages' closing streams are expected now
        this.previous = {plan: formation.plan, failedPeer: peerId};
        this.failovers++;
        const failure = this.recordFailure(peerId, reason);
        this.emit('stageFailed', failure);
        this.engine.killWorker();
    }

    /** This node's own part failed: form the pipeline again, leaving no peer out. */
    private failLocally(reason: string) {
        const formation = this.formation;
        if (formation === undefined || this.stopped)
            return;
        this.formation = {...formation, generation: -1};
        this.failovers++;
        const failure = {peer: this.options.self.id, reason, at: new Date().toISOString()};
        this.failures.push(failure);
        this.emit('log', 'warn', 'pipeline stage failed', {peer: 'self', reason});
        this.emit('stageFailed', failure);
        this.engine.killWorker();
    }

    private recordFailure(peerId: string, reason: string) {
        const failure = {peer: peerId, reason, at: new Date().toISOString()};
        this.failures.push(failure);
        if (this.failures.length > 100)
            this.failures.shift();
        this.excluded.set(peerId, Date.now() + this.options.failureCooldownMs);
        this.options.swarm.peer(peerId)?.recordRequest(false);
        this.emit('log', 'warn', 'pipeline stage failed', {peer: peerId.slice(0, 16), reason});
        return failure;
    }

    /** A stage that keeps the coordinator waiting past its deadline, while work is in flight, is gone. */
    private watch() {
        const formation = this.formation;
        if (formation === undefined || formation.generation === -1)
            return;
        if (this.engine.state === 'loading')
            this.reportTransfer(formation);
        const busy = this.engine.state === 'loading' || this.engine.getStatus().running > 0;
        if (!busy)
            return;
        const prefilling = this.engine.state === 'loading' || this.prefilling > 0;
        const now = performance.now();
        for (const stage of formation.stages) { // this node's own output device is not watched: it does not vanish silently
            const waiting = stage.endpoint.waitingMs(now);
            if (stage.endpoint.stall.stalled(waiting, prefilling)) {
                this.failStage(stage.peerId, `no answer for ${Math.round(waiting)} ms (deadline ${Math.round(stage.endpoint.stall.deadlineMs(prefilling))} ms)`);
                return;
            }
        }
    }

    /** Weights sent to the stages while the model loads: a log line every few seconds (the dashboard shows it live). */
    private reportTransfer(formation: Formation) {
        const now = Date.now();
        if (now - this.lastTransferReportAt < TRANSFER_REPORT_INTERVAL_MS)
            return;
        this.lastTransferReportAt = now;
        const stages = formation.stages.map((stage) => ({
            peer: stage.peerId.slice(0, 16), sentBytes: stage.endpoint.bytesToStage, transferBytes: stage.transferBytes
        }));
        if (stages.some((stage) => stage.sentBytes > 0))
            this.emit('log', 'info', 'sending weights to the stages', {model: this.options.model.id, stages});
    }

    /** llama.cpp's own report of where the layers went, against the plan. */
    private checkPlacement() {
        const formation = this.formation;
        const devices = this.engine.getStatus().placement[this.options.model.id];
        if (formation === undefined || devices === undefined)
            return;
        // RPC devices in order: this node's first device (when it keeps layers), the remote stages, its output device.
        const ownFirst = formation.first === undefined ? 0 : 1;
        const expected: string[] = [];
        for (const stage of formation.plan.stages) {
            if (stage.firstLayer === undefined || stage.lastLayer === undefined)
                continue;
            const device = `RPC${stage.self ? 0 : ownFirst + formation.stages.findIndex((active) => active.peerId === stage.peerId)}`;
            for (let layer = stage.firstLayer; layer <= stage.lastLayer; layer++)
                expected.push(device);
        }
        expected.push(`RPC${ownFirst + formation.stages.length}`); // the output layer, on this node's own output device
        this.placementMatches = expected.length === devices.length && expected.every((device, layer) => devices[layer] === device);
        if (!this.placementMatches)
            this.emit('log', 'error', 'llama.cpp placed the layers differently from the plan', {expected: expected.join(','), actual: devices.join(',')});
    }

    /**
     * Waits (at most `HASH_WAIT_MS`) for the model file's hash, which the node computes in the background at start:
     * with it, hosts that hold the model are preferred and send themselves their weights from their own copy.
     */
    private async modelHashed() {
        const deadline = Date.now() + HASH_WAIT_MS;
        if (this.options.model.sha256() === null)
            this.waitingReason = 'hashing the model file';
        while (this.options.model.sha256() === null && Date.now() < deadline && !this.stopped)
            await new Promise((resolve) => setTimeout(resolve, 250));
    }

    private peersChanged(timeoutMs: number) {
        return new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, timeoutMs);
            this.wakeUp = () => {
                clearTimeout(timer);
                this.wakeUp = undefined;
                resolve();
            };
        });
    }

    private setState(state: ClusterState) {
        if (this.state === state || (this.state === 'stopped'))
            return;
        this.state = state;
        this.emit('state', state);
    }
}
