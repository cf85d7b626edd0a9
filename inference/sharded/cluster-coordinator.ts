import {EventEmitter} from 'node:events';
import {setTimeout as sleep} from 'node:timers/promises';
import {LRUCache} from 'lru-cache';
import {EngineSupervisor, type EngineSupervisorOptions} from '../../engine/engine-supervisor.js';
import type {RpcServerFiles} from '../../engine/rpc/rpc-server-dir.js';
import type {ShardLoadSettings} from '../../engine/engine-settings.js';
import type {SwarmNode} from '../../swarm/swarm-node.js';
import {HostFinder} from './coordinator/host-finder.js';
import {holdsModelFile, planPipeline, planSpares, shardCandidates} from './coordinator/pipeline-candidates.js';
import {closeFormation, closeStage, deviceSplit, expectedPlacement, fetchStageLayers, fetchWatched, LocalDevices, openStage} from './coordinator/pipeline-formation.js';
import {shardPlannerDefaults} from './shard-planner.js';
import {HASH_THRESHOLD_BYTES} from '../../engine/rpc/tensor-cache-seed.js';
import {describePipeline, pipelineWait} from './coordinator/pipeline-status.js';
import type {ActiveStage, ClusterModel, ClusterState, FailedPart, Formation, SpareState, StageFailure} from './coordinator/pipeline-types.js';
import {digestsOfLayers} from '../../engine/tensor-digests.js';
import {StageFailures} from './coordinator/stage-failures.js';
import {StageWatchdog} from './coordinator/stage-watchdog.js';
import type {ShardPlan} from './shard-planner.js';
import type {TensorDigest} from '../../core/tensor-digest.js';
import {type FetchOutcome, type ShardProtocol, ShardSessionError} from './tunnel/shard-protocol.js';
import {shortPeerId} from '../../core/display.js';


/** How long a first formation waits for the model file's hash (a large file takes minutes; later starts read it from a cache). */
const HASH_WAIT_MS = 5 * 60_000;
/** How often `modelHashed` looks for the hash. */
const HASH_POLL_MS = 250;
/** How long a formation that has no plan waits for peers to change before it tries again. */
const REPLAN_WAIT_MS = 2_000;
/** Peers left out of plans at once, at most (the oldest exclusion ends first beyond it). */
const MAX_EXCLUDED_PEERS = 1024;

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
    /** The engine child's settings (threads, sequences, context, queue, speculation). */
    engine: Omit<EngineSupervisorOptions, 'models' | 'gpu' | 'prepareLoad' | 'shard' | 'stopOnFirstLoadFailure'>,
    /** How long a failed peer is left out of plans; defaults to 60 s. */
    failureCooldownMs?: number,
    /** How often the watchdog looks at the stages; defaults to 100 ms. */
    watchIntervalMs?: number,
    /**
     * Hosts outside the plan asked to download a stage's layers ahead (`--spare-stages`), so that a failover needs no
     * transfer (docs/architecture.md, "Spares"); defaults to 0.
     */
    spareStages?: number
}

export const clusterCoordinatorDefaults = {
    maxStages: 4,
    forceSplit: false,
    failureCooldownMs: 60_000,
    watchIntervalMs: 100,
    spareStages: 0
};

/** A load that sent fewer bytes to its stages says little of this node's uplink. */
const UPLINK_SAMPLE_BYTES = 16 * 2 ** 20;

export interface ClusterEvents {
    state: [state: ClusterState],
    /** A stage failed: the engine is being restarted on a new plan. */
    stageFailed: [failure: StageFailure],
    log: [level: 'info' | 'warn' | 'error', message: string, fields: Record<string, unknown>]
}

/**
 * Coordinates a pipeline of layer shards for one model: plans, opens the hosts' sessions, joins the engine child's
 * RPC devices to them through tunnel endpoints, watches them and fails over (docs/architecture.md, "Sharding").
 * The parts are in ./coordinator/.
 */
export class ClusterCoordinator extends EventEmitter<ClusterEvents> {
    readonly engine: EngineSupervisor;
    private readonly options: Required<ClusterCoordinatorOptions>;
    private readonly failureLog = new StageFailures();
    private failoverCount = 0;
    /** Peers left out of plans after a failure, until their cooldown ends. */
    private readonly excluded = new LRUCache<string, true>({max: MAX_EXCLUDED_PEERS});
    private formation: Formation | undefined;
    private generation = 0;
    private state: ClusterState = 'waiting';
    private waitingReason = 'not started yet: llama.cpp\'s RPC server may still be building';
    private stopped = false;
    private placementMatches: boolean | null = null;
    private readonly watchdog: StageWatchdog;
    private readonly hosts: HostFinder;
    private wakeUp: (() => void) | undefined;
    private readonly localDevices: LocalDevices;
    /** The plan that last ran, and the peer whose failure ended it. */
    private previous: {plan: ShardPlan, failedPeer: string} | undefined;
    /** Requests whose current attempt has streamed no token yet: their stages may take a prompt's time. */
    private prefilling = 0;
    /** While forming: the plan's stages, and those open so far (this node's own among them). */
    private forming: {opened: number, stages: number} | undefined;
    /** While forming: the plan and its open stages (downloading their layers, perhaps), for `/api/cluster`. */
    private formingStages: {plan: ShardPlan, stages: ActiveStage[]} | undefined;
    /** Download rates hosts reported for this model's layers (bytes/s), by peer: the planner's time to form. */
    private readonly fetchRates = new LRUCache<string, number>({max: MAX_EXCLUDED_PEERS});
    /** Spares of the running plan, by peer: what each downloads or holds ahead. */
    private readonly spares = new Map<string, SpareState>();
    /** This node's uplink as its last load measured it (bytes/s); undefined until a load sent enough. */
    private uplinkBytesPerSecond: number | undefined;
    /** When the engine began loading the current formation, for the uplink's measure. */
    private loadStartedAt: number | undefined;

    constructor(options: ClusterCoordinatorOptions) {
        super();
        this.options = {...clusterCoordinatorDefaults, ...options};
        this.engine = new EngineSupervisor({
            ...options.engine,
            // Drafting happens here, where the sampling is: drafted tokens cross the pipeline as one batch.
            models: [{id: options.model.id, path: options.model.path, ...(options.model.draft && {draft: options.model.draft})}],
            gpu: false,
            prepareLoad: () => this.form(),
            stopOnFirstLoadFailure: false
        });
        this.hosts = new HostFinder({swarm: options.swarm});
        this.localDevices = new LocalDevices({
            threads: this.options.engine.threads,
            // The servers outlive formations: whichever is current has lost the device.
            onExit: (device, reason) => this.fail({kind: 'local', device}, reason)
        });
        this.watchdog = new StageWatchdog({
            intervalMs: this.options.watchIntervalMs,
            formation: () => this.current(),
            work: () => ({loading: this.engine.state === 'loading', running: this.engine.getStatus().running, prefilling: this.prefilling}),
            onStalled: (peerId, reason) => this.fail({kind: 'stage', peerId}, reason),
            onTransfer: (stages) => this.emit('log', 'info', 'sending weights to the stages', {model: this.options.model.id, stages})
        });
        this.engine.on('state', (state) => {
            if (state === 'ready') {
                this.checkPlacement();
                this.measureUplink();
                this.prepareSpares().catch((error: Error) =>
                    this.emit('log', 'warn', 'cannot prepare spares', {model: this.options.model.id, error: error.message}));
            }
            this.setState(state === 'ready' ? 'ready' : this.formation === undefined ? this.state : 'loading');
        });
        this.options.swarm.on('peerJoined', () => this.wakeUp?.());
        this.options.swarm.on('capabilities', () => this.wakeUp?.());
        this.options.swarm.on('peerLeft', (peerId, reason) => {
            if (this.current()?.stages.some((stage) => stage.peerId === peerId))
                this.fail({kind: 'stage', peerId}, `the peer disconnected: ${reason.message}`);
        });
    }

    start() {
        this.watchdog.start();
        return this.engine.start();
    }

    async stop() {
        this.stopped = true;
        this.watchdog.stop();
        this.hosts.stop();
        this.wakeUp?.();
        this.setState('stopped');
        // Stages still downloading their layers end now (their fetches with them).
        for (const stage of this.formingStages?.stages ?? [])
            stage.session.end('the coordinator stopped');
        await this.engine.dispose();
        await this.teardown('the coordinator stopped');
        await this.localDevices.stop();
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

    /** Stages that failed and this node's own devices that did, each of which restarted the engine on a new plan. */
    get failovers() {
        return this.failoverCount;
    }

    /** The last failures (at most `KEPT_FAILURES`), oldest first, those of stages that could not open included. */
    get failures(): readonly StageFailure[] {
        return this.failureLog.recent;
    }

    /** Every failure so far: a mark for `failuresSince`. */
    get failureCount() {
        return this.failureLog.count;
    }

    failuresSince(mark: number) {
        return this.failureLog.since(mark);
    }

    /** A request's attempt begins: its stages may take a prompt's time until its first token. */
    prefillStarted() {
        this.prefilling++;
    }

    /** The attempt streamed its first token, or ended. */
    prefillEnded() {
        this.prefilling--;
    }

    /** The running plan's stages in order, `self` for this node's: where a request goes (the request log). */
    stageRoute() {
        return this.formation?.plan.stages.map((stage) => stage.self ? 'self' : stage.peerId) ?? [];
    }

    /** Whether the pipeline serves now, and what it waits for when not (`/health`). */
    readiness(): {ready: boolean, waiting?: string} {
        if (this.state === 'ready')
            return {ready: true};
        return {ready: false, waiting: pipelineWait({state: this.state, reason: this.reason, forming: this.forming,
            loadProgress: this.engine.getStatus().loadProgress[this.options.model.id]})};
    }

    describe() {
        return describePipeline({
            model: this.options.model, state: this.state, reason: this.reason, formation: this.formation ?? this.formingStages,
            peer: (peerId) => this.options.swarm.peer(peerId), placementMatches: this.placementMatches,
            failovers: this.failoverCount, failures: this.failureLog.recent, spares: [...this.spares.values()],
            speculation: this.engine.getStatus().speculation[this.options.model.id]
        });
    }

    /**
     * A request's attempt generated `tokens` through the current pipeline: each remote stage's peer is counted a
     * success, and gets a signed receipt for them (the next of its session), which its host countersigns and keeps in
     * its contribution log, and this node in its own (docs/peer-protocol.md, "Shard channel").
     */
    creditStages(tokens: number) {
        const formation = this.current();
        if (formation === undefined)
            return;
        for (const stage of formation.stages) {
            this.options.swarm.peer(stage.peerId)?.recordRequest(true);
            stage.session.sendReceipt(tokens, stage.endpoint.takeBusyMs());
        }
    }

    /** The formation running now: none between formations, nor once a failure ended it. */
    private current() {
        return this.formation?.failure === undefined ? this.formation : undefined;
    }

    /** The engine child is about to load: plan, open every stage's session and tunnel, and say where they are. */
    private async form(): Promise<{shard: ShardLoadSettings}> {
        await this.teardown('a new plan replaces this one');
        const files = this.options.rpcFiles();
        if (files === undefined)
            throw new Error('the RPC backend is not built');
        await this.modelHashed();
        // Hashing a large file's tensors takes a while: begun now, while the plan waits for peers (one reading, cached).
        if (this.options.model.source !== undefined)
            void this.options.model.tensorDigests?.().catch(() => undefined);
        while (!this.stopped) {
            const {model, swarm, maxStages, forceSplit} = this.options;
            const candidates = this.candidates();
            const plan = planPipeline(model, candidates, {maxStages, forceSplit, previous: this.previous,
                ...(this.uplinkBytesPerSecond !== undefined && {uplinkBytesPerSecond: this.uplinkBytesPerSecond})});
            if (!plan.ok) {
                this.waitingReason = plan.reason + this.hosts.summary();
                this.setState('waiting');
                // Beyond the connected peers: hosts announced on the DHT (docs/architecture.md, "Finding providers and
                // hosts"). Those found last time did not make a plan: let go, they stay only while room allows.
                this.hosts.release();
                if (this.hosts.due) {
                    const connected = await this.hosts.find((peerId) => this.excluded.has(peerId));
                    this.waitingReason = plan.reason + this.hosts.summary();
                    if (connected > 0) {
                        this.emit('log', 'info', 'connected to hosts found on the DHT', {model: model.id, hosts: connected});
                        continue;
                    }
                }
                await this.peersChanged(REPLAN_WAIT_MS);
                continue;
            }
            // The plan's stages hold their hosts' connections from here on.
            this.hosts.release();
            this.setState('forming');
            const generation = ++this.generation;
            const lost = (part: FailedPart) => (reason: string) => {
                if (this.current()?.generation === generation)
                    this.fail(part, reason);
            };
            const split = deviceSplit(plan.plan);
            const forming = {opened: plan.plan.stages.length - split.remote.length, stages: plan.plan.stages.length};
            this.forming = forming;
            const opened = await Promise.allSettled(split.remote.map(async (stage, index) => {
                const active = await openStage({
                    shards: this.options.shards, model, stage, reportedBytes: split.remoteBytes[index]!, sequences: this.options.engine.parallelSequences,
                    holdsFile: holdsModelFile(swarm.peer(stage.peerId), model.sha256()), onLost: lost({kind: 'stage', peerId: stage.peerId})
                });
                forming.opened++;
                return active;
            }));
            this.forming = undefined;
            const stages = opened.flatMap((result) => result.status === 'fulfilled' ? [result.value] : []);
            const failed = opened.flatMap((result, index) => result.status === 'rejected' ? [{peerId: split.remote[index]!.peerId, error: result.reason as Error}] : []);
            if (failed.length === 0) {
                this.formingStages = {plan: plan.plan, stages};
                failed.push(...await this.fetchLayers(stages));
                this.formingStages = undefined;
                if (this.stopped) {
                    await Promise.all(stages.map((stage) => closeStage(stage, 'the coordinator stopped')));
                    break;
                }
            }
            if (failed.length > 0) {
                for (const {peerId, error} of failed) // a priced host this node cannot pay is left out, but not blamed
                    this.recordFailure({kind: 'stage', peerId}, `cannot open a shard session: ${error.message}`,
                        !(error instanceof ShardSessionError && error.code === 'unpaid'));
                await Promise.all(stages.map((stage) => closeStage(stage, 'the plan failed to form')));
                continue;
            }
            const first = split.firstBytes === undefined ? undefined : await this.localDevices.open('first', files, split.firstBytes, lost({kind: 'local', device: 'first'}));
            const output = await this.localDevices.open('output', files, split.outputBytes, lost({kind: 'local', device: 'output'}));
            this.formation = {generation, plan: plan.plan, stages, first, output, failure: undefined};
            this.previous = undefined;
            this.placementMatches = null;
            this.setState('loading');
            this.emit('log', 'info', 'pipeline formed', {model: model.id, plan: plan.plan.reason});
            this.loadStartedAt = Date.now();
            const endpoints = [...(first ? [first.address] : []), ...stages.map((stage) => stage.endpoint.address), output.address];
            return {shard: {rpcLibraryPath: files.libraryPath, endpoints, gpuLayers: split.gpuLayers}};
        }
        throw new Error('the coordinator stopped');
    }

    /** This node and the peers that offer room for layers, with what they hold and how fast they fetch. */
    private candidates() {
        const {model, self, swarm} = this.options;
        return shardCandidates({model, self, peers: swarm.peers(), excluded: (peerId) => this.excluded.has(peerId),
            fetchRates: (peerId) => this.fetchRates.get(peerId),
            spareLayers: (peerId) => {
                const spare = this.spares.get(peerId);
                return spare?.state === 'ready' ? [spare.layers[0], spare.layers[1]] : undefined;
            }});
    }

    /** A host's download rate, from a download long enough to tell (as hosts measure their own). */
    private noteFetchRate(peerId: string, outcome: FetchOutcome | undefined) {
        if (outcome !== undefined && outcome.bytesPerSecond !== null && outcome.downloadedBytes >= HASH_THRESHOLD_BYTES)
            this.fetchRates.set(peerId, outcome.bytesPerSecond);
    }

    /**
     * The weights sent to stages over the load's time: a lower bound of this node's uplink (the load does more than
     * send), used to plan the next formation's time.
     */
    private measureUplink() {
        const formation = this.formation;
        if (formation === undefined || this.loadStartedAt === undefined)
            return;
        const sent = formation.stages.reduce((sum, stage) => sum + stage.endpoint.bytesToStage, 0);
        const seconds = (Date.now() - this.loadStartedAt) / 1000;
        if (sent >= UPLINK_SAMPLE_BYTES && seconds > 0)
            this.uplinkBytesPerSecond = sent / seconds;
    }

    /**
     * Asks `--spare-stages` hosts outside the running plan to download a stage's layers ahead (docs/architecture.md,
     * "Spares"), so that when that stage fails the planner's repair finds a host that holds them (`replanAfterFailure`).
     * Without a public source only hosts that hold the model file can be spares.
     */
    private async prepareSpares() {
        const formation = this.current();
        const {model, spareStages} = this.options;
        const sha256 = model.sha256();
        if (formation === undefined || spareStages === 0 || sha256 === null)
            return;
        const picked = planSpares(model, formation.plan, this.candidates(), spareStages);
        for (const peerId of this.spares.keys())
            if (!picked.some((spare) => spare.peerId === peerId))
                this.spares.delete(peerId);
        let digests: readonly TensorDigest[] = [];
        let digestsProblem: string | undefined;
        if (model.source !== undefined && model.tensorDigests !== undefined)
            digests = await model.tensorDigests().catch((error: Error) => {
                digestsProblem = `cannot hash the model's tensors: ${error.message}`;
                return [];
            });
        await Promise.all(picked.map(async (spare) => {
            const layers: [number, number] = [spare.firstLayer, spare.lastLayer];
            const known = this.spares.get(spare.peerId);
            if (known !== undefined && known.layers[0] === layers[0] && known.layers[1] === layers[1] && known.state !== 'failed')
                return;
            const state: SpareState = {peerId: spare.peerId, replaces: spare.replaces, layers, state: 'fetching', doneBytes: 0, totalBytes: 0, reason: null};
            this.spares.set(spare.peerId, state);
            // A spare's connection is kept while it is one: closed as idle, its readiness would be lost to the next failure.
            this.options.swarm.peer(spare.peerId)?.holdWhile(`shard-spare:${model.id}`, () => this.spares.get(spare.peerId) === state && !this.stopped);
            if (spare.weightsFrom === 'held' && holdsModelFile(this.options.swarm.peer(spare.peerId), sha256)) {
                state.state = 'ready';
                return;
            }
            const tensors = digestsOfLayers(digests, layers);
            if (model.source === undefined || tensors.length === 0) {
                Object.assign(state, {state: 'failed', reason: digestsProblem ?? (model.source === undefined
                    ? 'the model has no public source: a spare would receive its layers from this node'
                    : 'the layers have no tensor big enough to be kept ahead (ggml-rpc sends those of 10 MiB or less at every load)')});
                return;
            }
            state.totalBytes = tensors.reduce((sum, tensor) => sum + tensor.bytes, 0);
            const source = model.source;
            try {
                const outcome = await fetchWatched((frame, onProgress) => this.options.shards.prefetch(spare.peerId, {model: sha256, source, layers, tensors: frame}, onProgress),
                    tensors, (doneBytes) => state.doneBytes = doneBytes);
                if (outcome === 'stalled')
                    Object.assign(state, {state: 'failed', reason: 'the download made no progress for a minute'});
                else {
                    this.noteFetchRate(spare.peerId, outcome);
                    Object.assign(state, outcome.failed === 0 ? {state: 'ready', doneBytes: state.totalBytes} : {state: 'failed', reason: outcome.reason ?? `${outcome.failed} tensor(s) not fetched`});
                }
            } catch (error) {
                Object.assign(state, {state: 'failed', reason: (error as Error).message});
            }
            this.emit('log', state.state === 'ready' ? 'info' : 'warn', state.state === 'ready' ? 'a spare holds a stage\'s layers' : 'a spare could not fetch a stage\'s layers',
                {model: model.id, peer: shortPeerId(spare.peerId), replaces: shortPeerId(spare.replaces), layers, ...(state.reason !== null && {reason: state.reason})});
        }));
    }

    /**
     * Hosts that do not hold the model download the big tensors of their layers from its source, when it has one
     * (docs/architecture.md, "Hosts that fetch their layers"); the formation waits for their reports. Returns the
     * stages whose session ended meanwhile.
     */
    private async fetchLayers(stages: ActiveStage[]): Promise<{peerId: string, error: Error}[]> {
        const {model} = this.options;
        const sha256 = model.sha256();
        if (model.source === undefined || model.tensorDigests === undefined || sha256 === null || stages.every((stage) => stage.weights.from === 'held'))
            return [];
        let digests: readonly TensorDigest[];
        try {
            digests = await model.tensorDigests();
        } catch (error) {
            this.emit('log', 'warn', 'cannot hash the model\'s tensors: hosts receive their layers from this node', {model: model.id, error: (error as Error).message});
            return [];
        }
        const request = {model: sha256, source: model.source};
        // Past a minute, a download slower than this node's share of its uplink is left behind: sending is then sooner.
        const fetching = stages.filter((stage) => stage.weights.from !== 'held').length;
        const uplinkShare = (this.uplinkBytesPerSecond ?? shardPlannerDefaults.uplinkBytesPerSecond) / Math.max(1, fetching);
        const results = await Promise.allSettled(stages.map(async (stage) => {
            const outcome = await fetchStageLayers(stage, request, digests, () => this.emit('state', this.state), {slowerThanBytesPerSecond: uplinkShare});
            this.noteFetchRate(stage.peerId, outcome);
            if (outcome !== undefined)
                this.emit('log', outcome.failed === 0 ? 'info' : 'warn', 'a stage downloaded its layers from the model\'s source',
                    {model: model.id, peer: shortPeerId(stage.peerId), stored: outcome.stored, failed: outcome.failed, downloadedBytes: outcome.downloadedBytes,
                        ...(outcome.reason !== undefined && {reason: outcome.reason})});
        }));
        return results.flatMap((result, index) => result.status === 'rejected' ? [{peerId: stages[index]!.peerId, error: result.reason as Error}] : []);
    }

    private async teardown(reason: string) {
        const formation = this.formation;
        this.formation = undefined;
        if (formation !== undefined)
            await closeFormation(formation, reason);
    }

    /**
     * A part of the running pipeline is gone: the formation ends (its other streams' closing is expected now) and the
     * engine restarts on a new plan, without a failed host's peer for a while.
     */
    private fail(part: FailedPart, reason: string) {
        const formation = this.current();
        if (formation === undefined || this.stopped)
            return;
        if (part.kind === 'stage')
            this.previous = {plan: formation.plan, failedPeer: part.peerId};
        this.failoverCount++;
        formation.failure = this.recordFailure(part, reason);
        this.emit('stageFailed', formation.failure);
        this.engine.killWorker();
    }

    /**
     * Keeps the failure (the last `KEPT_FAILURES`); a host's peer is left out of plans for its cooldown and, when
     * `blame`, counted a failure.
     */
    private recordFailure(part: FailedPart, reason: string, blame = true) {
        const peerId = part.kind === 'stage' ? part.peerId : this.options.self.id;
        const failure = this.failureLog.record(peerId, reason);
        if (part.kind === 'stage') {
            const ttl = Math.ceil(this.options.failureCooldownMs);
            if (ttl > 0)
                this.excluded.set(peerId, true, {ttl});
            if (blame)
                this.options.swarm.peer(peerId)?.recordRequest(false);
        }
        this.emit('log', 'warn', 'pipeline stage failed', {peer: part.kind === 'stage' ? shortPeerId(peerId) : 'self', reason});
        return failure;
    }

    /** llama.cpp's own report of where the layers went, against the plan. */
    private checkPlacement() {
        const formation = this.formation;
        const devices = this.engine.getStatus().placement[this.options.model.id];
        if (formation === undefined || devices === undefined)
            return;
        const expected = expectedPlacement(formation);
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
            await sleep(HASH_POLL_MS);
    }

    /** Waits `timeoutMs`, or less when a peer joins or changes what it offers. */
    private async peersChanged(timeoutMs: number) {
        const woken = new AbortController();
        this.wakeUp = () => woken.abort();
        await sleep(timeoutMs, undefined, {signal: woken.signal}).catch(() => undefined);
        this.wakeUp = undefined;
    }

    private setState(state: ClusterState) {
        if (this.state === state || (this.state === 'stopped'))
            return;
        this.state = state;
        this.emit('state', state);
    }
}
