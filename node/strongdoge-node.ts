import {EventEmitter} from 'node:events';
import {statSync} from 'node:fs';
import {freemem} from 'node:os';
import {join, resolve} from 'node:path';
import {modelLayoutOf} from '../engine/model-files.js';
import {ensureRpcBinaries} from '../engine/rpc/rpc-build.js';
import {prepareRpcServerDir, type RpcServerFiles} from '../engine/rpc/rpc-server-dir.js';
import {probeSandbox, type SandboxProbe} from '../engine/rpc/rpc-sandbox.js';
import type {ShardHostRuntime} from '../inference/sharded/shard-host.js';
import {ClusterCoordinator} from '../inference/sharded/cluster-coordinator.js';
import {stageComputeBytes} from '../inference/sharded/shard-planner.js';
import {ShardedInference} from '../inference/sharded/sharded-inference.js';
import {modelSourceOf} from '../engine/model-source.js';
import {tensorDigests, tensorDigestsDir} from '../engine/tensor-digests.js';
import {ShardHost} from '../inference/sharded/shard-host.js';
import {ShardProtocol} from '../inference/sharded/tunnel/shard-protocol.js';
import type {ShardReceipt} from '../ledger/records.js';
import {EngineSupervisor} from '../engine/engine-supervisor.js';
import type {InferenceService} from '../inference/inference-service.js';
import type {GpuBackend, TextListener} from '../core/inference-types.js';
import type {ModelLoadSpec} from '../engine/engine-settings.js';
import {createProxyApp} from '../proxy/proxy-app.js';
import {listenProxy, type ListeningProxy} from '../proxy/proxy-server.js';
import {RequestStats} from '../proxy/request-stats.js';
import type {Receipt} from '../ledger/receipt.js';
import {jobProviderDefaults} from '../inference/remote/jobs/job-admission.js';
import {InferenceRouter} from '../inference/inference-router.js';
import {LocalInference} from '../inference/local/local-inference.js';
import {JobProvider, type JobExecutor} from '../inference/remote/jobs/job-provider.js';
import {JobRequester} from '../inference/remote/jobs/job-requester.js';
import {JobsProtocol} from '../inference/remote/jobs/jobs-protocol.js';
import {RemoteInference} from '../inference/remote/remote-inference.js';
import {isLoopbackHost} from '../swarm/loopback.js';
import {localModelsFromOffers} from '../swarm/gossip/model-gossip.js';
import {ModelGossipProtocol} from '../swarm/gossip/model-gossip-protocol.js';
import {buildNetworkModelTable} from '../swarm/network-models.js';
import type {NodeIdentity} from '../swarm/node-identity.js';
import {SwarmNode} from '../swarm/swarm-node.js';
import type {NodeSettings} from './node-settings.js';
import {LedgerError} from '../ledger/ledger-error.js';
import {computeMeasurement} from './compute-measurement.js';
import type {Logger} from './logger.js';
import {logEngineEvents, logPeerJobs, logPipelineEvents, logSwarmEvents} from './node-events-log.js';
import {NodeLedger} from './node-ledger.js';
import {nodeReadiness} from './node-readiness.js';
import type {ClusterStatus, NetworkModelsStatus, NodeStatus, PeersStatus} from './node-status.js';
import {NodeCapabilities} from './node-capabilities.js';
import {packageInfo} from './package-info.js';
import {clusterStatus, nodeStatus, peersStatus} from './status-documents.js';
import {shortPeerId} from '../core/display.js';
import {NodePayments} from './node-payments.js';
import {storedPaymentContract} from './node-ledger.js';
import type {ProviderPayments, RequesterPayments} from '../inference/remote/jobs/job-payments.js';
import type {ShardPayments} from '../inference/sharded/tunnel/shard-payments.js';

/** Time a peer gets for prompt processing before its first token. */
const FIRST_TOKEN_DEADLINE_MS = 60_000;
/** Peers tried for one request before it fails. */
const MAX_PEER_ATTEMPTS = 3;
/** Without `--max-shard-memory`, peers may use this share of the memory free at start for their layers. */
const DEFAULT_SHARD_MEMORY_SHARE = 0.5;
/** Tensor cache of the rpc servers hosting peers' layers, oldest evicted beyond this. */
const TENSOR_CACHE_BYTES = 8 * 2 ** 30;

/**
 * Which models this node runs as a pipeline over peers (`--shard`): `auto` only those whose weights do not fit
 * the memory this node uses (`--memory-limit`, else what is free); never offline.
 */
export function shardedModelIds(settings: Pick<NodeSettings, 'shard' | 'offline'> & {memoryLimit?: number | undefined}, models: {id: string, sizeBytes: number}[], freeBytes: number) {
    if (settings.offline || settings.shard === 'never')
        return new Set<string>();
    const memory = settings.memoryLimit ?? freeBytes;
    return new Set(models.filter((model) => settings.shard === 'always' || model.sizeBytes > memory).map((model) => model.id));
}

export interface StrongdogeNodeOptions {
    settings: NodeSettings,
    /** The wallet keystore's password (`--wallet`), asked for before the node starts; defaults to none. */
    walletPassword?: string,
    /** The models this node's engine loads. */
    models: ModelLoadSpec[],
    identity: NodeIdentity,
    logger: Logger
}

/** One running node: the engine, the swarm and the proxy in front of them (docs/architecture.md). */
export class StrongdogeNode {
    readonly stats = new RequestStats();
    readonly engine: EngineSupervisor;
    readonly capabilities: NodeCapabilities;
    readonly swarm: SwarmNode | undefined;
    readonly requester: JobRequester | undefined;
    readonly provider: JobProvider | undefined;
    /** Pipelines of peers' layer shards this node coordinates. */
    readonly clusters: ClusterCoordinator[] = [];
    /** The strategy serving each pipeline, to this node's clients and to peers. */
    private readonly pipelines: ShardedInference[] = [];
    readonly shardHost: ShardHost | undefined;
    private readonly shards: ShardProtocol | undefined;
    /** The network model table's gossip with peers (docs/architecture.md, "Network model table"). */
    private readonly gossip: ModelGossipProtocol | undefined;
    private readonly shardedModels: (ModelLoadSpec & {sizeBytes: number})[];
    /** The models this node's engine loads whole: the others are pipelines. */
    private readonly engineModels: ModelLoadSpec[];
    /** The rpc server with this node's GPU backend (for hosting), and the RPC backend for the pipeline engine (CPU). */
    private rpcFiles: {host: RpcServerFiles, coordinator: RpcServerFiles, hostGpu: GpuBackend} | undefined;
    /** Why this node can neither host nor coordinate layers, when it cannot. */
    private shardingUnavailable: string | null = 'the RPC server is not built yet';
    /** Whether the servers hosting peers' layers can run in the sandbox here (`--shard-sandbox on`); undefined until checked. */
    private sandbox: SandboxProbe | undefined;
    /** The contribution log and its anchoring: open once `start()` has opened it. */
    ledger: NodeLedger | undefined;
    /** Payments for priced jobs (docs/architecture.md, "Payments"): open once `start()` has opened the ledger. */
    payments: NodePayments | undefined;
    /** What the jobs, the shard channel and the router ask of the payments, made once: they reach `payments` once open. */
    private readonly paymentsWhenOpen = this.paymentsOnceOpen();
    /** Tokens as they stream: to this node's clients (`local`), or generated for peers (`forPeers`). */
    readonly tokens = new EventEmitter<{tokens: [kind: 'local' | 'forPeers', count: number]}>();
    private proxy: ListeningProxy | undefined;
    private servedPeerJobs = 0;
    private readonly startedAt = Date.now();
    /** `start()` finished: the engine loaded once and what this node announces (its measured compute) is known. */
    private started = false;

    private readonly settings: NodeSettings;
    private readonly models: ModelLoadSpec[];
    private readonly identity: NodeIdentity;
    private readonly logger: Logger;
    private readonly walletPassword: string | undefined;

    constructor(options: StrongdogeNodeOptions) {
        this.walletPassword = options.walletPassword;
        ({settings: this.settings, models: this.models, identity: this.identity, logger: this.logger} = options);
        const {settings, models, identity} = options;
        const sized = models.map((model) => ({...model, sizeBytes: statSync(model.path).size}));
        const sharded = shardedModelIds(settings, sized, freemem());
        this.shardedModels = sized.filter((model) => sharded.has(model.id));
        this.engineModels = models.filter((model) => !sharded.has(model.id));
        this.engine = new EngineSupervisor({
            models: this.engineModels,
            threads: settings.threads,
            parallelSequences: settings.parallel,
            contextSize: settings.contextSize,
            gpu: settings.gpu === 'off' ? false : 'auto',
            flashAttention: settings.flashAttention,
            speculative: settings.speculative,
            draftTokens: {min: settings.draftMin, max: settings.draftMax},
            maxQueue: settings.maxQueue
        });
        this.capabilities = new NodeCapabilities({engine: this.engine, models, dataDir: settings.dataDir, price: settings.price, maxJobTokens: settings.maxJobTokens,
            shardHost: () => this.shardHost?.available ? {freeBytes: this.shardHost.freeBytes, ...(this.shardHost.fetchOffer && {fetch: this.shardHost.fetchOffer})} : null,
            pipelines: () => this.clusters.map((cluster) => ({model: cluster.modelId, state: cluster.currentState}))});
        if (!settings.offline) {
            this.swarm = new SwarmNode({
                identity,
                network: {name: settings.network, ...(settings.networkSecret && {secret: settings.networkSecret})},
                software: packageInfo.version,
                ...(settings.bootstrap && {bootstrap: settings.bootstrap}),
                relay: {mode: settings.relay, through: settings.relayThrough,
                    ...(settings.relayMaxMbps !== undefined && {maxMbps: settings.relayMaxMbps})},
                capabilities: () => this.capabilities.current(),
                limits: {maxPeers: settings.maxPeers, idleTimeoutMs: settings.idlePeerTimeout * 1000}
            });
            const jobs = new JobsProtocol();
            this.swarm.use(jobs);
            const shardMemory = settings.maxShardMemory ?? Math.floor(freemem() * DEFAULT_SHARD_MEMORY_SHARE);
            if (settings.servePeers)
                this.shardHost = new ShardHost({
                    runtime: () => this.hostingRuntime(),
                    maxBytes: shardMemory,
                    threads: settings.threads,
                    cacheDir: join(settings.dataDir, 'cache', 'rpc-tensors'),
                    // At least a stage's worth of the room offered, so a spare can keep the layers it downloaded ahead.
                    cacheMaxBytes: Math.max(TENSOR_CACHE_BYTES, 2 * shardMemory),
                    modelFile: (sha256) => this.models.find((model) => this.modelSha256(model.id) === sha256)?.path,
                    // A private network's peers are trusted with URLs on its own network (its model mirror, say).
                    fetch: settings.fetchLayers && {allowPrivateAddresses: settings.networkSecret !== undefined},
                    onOfferChanged: () => this.swarm?.capabilitiesChanged(),
                    onLog: (message, fields) => this.logger.info(fields, message)
                });
            this.shards = new ShardProtocol({
                identity, domain: {network: settings.network, chainId: settings.chainId},
                ...(this.shardHost && {host: this.shardHost}),
                onShardReceipt: (_peerId, receipt) => this.keepShardReceipt(receipt, 'shard'),
                onShardConsumed: (_peerId, receipt) => this.keepShardReceipt(receipt, 'shard-consumed'),
                onReceiptProblem: (peerId, problem) => this.logger.warn({peer: shortPeerId(peerId), reason: problem}, 'a shard receipt was refused'),
                // Stages of priced hosts are paid per receipt (docs/peer-protocol.md, "Shard channel"): the payments open in start(), before the swarm.
                payments: this.paymentsWhenOpen,
                onPaymentProblem: (peerId, problem) => this.logger.warn({peer: shortPeerId(peerId), reason: problem}, 'a shard payment failed')
            });
            this.swarm.use(this.shards);
            // this node's hashed offers, its pipelines' models among them, as they are when each round goes out
            this.gossip = new ModelGossipProtocol({selfId: identity.id, localModels: () => localModelsFromOffers(this.capabilities.current().models)});
            this.swarm.use(this.gossip);
            const domain = {network: settings.network, chainId: settings.chainId};
            const payments = this.paymentsWhenOpen;
            this.requester = new JobRequester({jobs, identity, domain, payments});
            this.provider = new JobProvider({jobs, identity, domain, executor: this.localExecutor(), payments,
                keepReceipt: (receipt) => this.keepReceipt(receipt),
                loggedJobId: (jobId) => this.ledger?.servedJob(jobId) ?? false,
                limits: {
                ...jobProviderDefaults,
                enabled: settings.servePeers,
                maxConcurrentJobs: settings.maxPeerJobs,
                maxTokensPerJob: settings.maxJobTokens
            }});
        }
        this.observe();
    }

    get baseUrl() {
        return this.proxy?.baseUrl;
    }

    /** Listens first, so /health answers 503 while the models load, then loads them. */
    async start() {
        await this.createClusters();
        const app = createProxyApp({
            inference: this.countingClientTokens(this.inference()),
            stats: this.stats,
            status: {
                node: () => this.describe(),
                peers: () => this.describePeers(),
                networkModels: (): NetworkModelsStatus => ({models: this.networkModels()}),
                cluster: () => this.describeCluster(),
                ledger: () => this.openLedger().describe(),
                anchorLedger: () => this.openLedger().anchorNow(),
                verifyLedger: (core) => this.openLedger().verify(core),
                revokeLedger: (wallet) => this.openLedger().revoke(wallet),
                // The payments (node/node-payments.ts): openPayments() and act() come with it.
                wallet: () => this.openPayments().describe(),
                walletAction: (action, body) => this.openPayments().act(action, body)
            },
            catalog: {
                version: packageInfo.version,
                models: () => this.networkModels().map(({id, sizeBytes, sha256, quantization, layers}) => ({id, sizeBytes, sha256, quantization, layers})),
                loaded: () => this.engine.getStatus().models.map(({id, contextSize}) => ({id, contextSize}))
            },
            ...(this.settings.apiKey && {apiKey: this.settings.apiKey})
        });
        this.proxy = await listenProxy(app, this.settings.host, this.settings.port);
        this.logger.info({url: this.proxy.baseUrl, host: this.settings.host, port: this.proxy.port,
            auth: this.settings.apiKey ? 'api key required' : 'none'}, 'OpenAI-compatible API listening');
        if (!isLoopbackHost(this.settings.host))
            this.logger.warn({host: this.settings.host}, 'the API listens beyond this machine: anyone who can reach it can use your models; consider --api-key');
        if (this.models.length === 0 && this.shardHost === undefined)
            this.logger.warn('no model configured: try `strongdoge models make-demo` and `strongdoge --model demo`');
        else if (this.models.length === 0)
            this.logger.info('no model configured: this node lends memory and compute to peers\' pipelines (layer shards)');

        this.ledger = await NodeLedger.open({settings: this.settings, identity: this.identity,
            ...(this.walletPassword !== undefined && {walletPassword: this.walletPassword}),
            onNotice: (level, message, fields) => this.logger[level](fields ?? {}, message)});
        this.capabilities.setLedgerCore(this.ledger.log.key);
        // Before the swarm starts: no job arrives before the node knows its price is payable.
        this.payments = await NodePayments.open({settings: this.settings, identity: this.identity, log: this.ledger.log, wallet: this.ledger.paymentWallet(),
            walletLock: this.ledger.walletLock(),
            contract: this.settings.paymentContract ?? (await storedPaymentContract(this.settings.dataDir, this.settings.chainId))?.address,
            peerCapabilities: (peerId) => this.swarm?.peer(peerId)?.capabilities,
            onNotice: (level, message, fields) => this.logger[level](fields ?? {}, message)});
        this.capabilities.setPayment(this.payments.binding());
        this.swarm?.use(this.ledger);
        await this.capabilities.prepare((model, error) => this.logger.warn({model, err: error}, 'cannot describe model file for peers'));
        this.startSwarm();
        await this.engine.start();
        void this.prepareSharding();
        const status = this.engine.getStatus();
        await this.loadComputeMeasurement();
        this.logger.info({
            device: status.device,
            models: status.models.map(({id, layers, gpuLayers, contextSize}) => ({id, layers, gpuLayers, contextSize}))
        }, status.device?.backend ? `ready: ${status.device.backend} GPU offload` : 'ready: CPU only');
        this.started = true;
    }

    /** Requests go to this node's engine or to peers, as chooseStrategy decides. */
    private inference() {
        const {settings} = this;
        const local = new LocalInference({engine: this.engine, modelIds: this.models.map((model) => model.id)});
        const remote = this.swarm && this.requester && new RemoteInference({swarm: this.swarm, requester: this.requester, payments: this.paymentsWhenOpen,
            vouchedModelBytes: (sha256) => this.vouchedModelBytes(sha256),
            // models no connected peer serves are looked for among the providers gossip names (issue 26)
            gossipModels: () => this.gossip?.entries() ?? [], routing: {
            ...(settings.maxPrice !== undefined && {maxPrice: settings.maxPrice}),
            deadlines: {firstTokenMs: Math.max(FIRST_TOKEN_DEADLINE_MS, settings.peerTimeout * 1000), tokenMs: settings.peerTimeout * 1000},
            maxAttempts: MAX_PEER_ATTEMPTS
        }});
        return new InferenceRouter({local, ...(remote && {remote}), prefer: settings.prefer, sharded: this.pipelines});
    }

    /** A pipeline coordinator per sharded model; they form once the RPC backend is built and peers are there. */
    private async createClusters() {
        const {swarm, shards, settings} = this;
        if (swarm === undefined || shards === undefined)
            return;
        for (const spec of this.shardedModels) {
            const layout = await modelLayoutOf(spec.path);
            // Each of the engine's sequences has a context of its own (KV cache and attention span).
            const contextTokens = settings.contextSize * settings.parallel;
            const computeBytes = stageComputeBytes({...layout, sequenceTokens: settings.contextSize, contextTokens, flashAttention: settings.flashAttention !== 'off'});
            // Hosts fetch their layers from where the file came from, when it came from a public source (docs/architecture.md, "Hosts that fetch their layers").
            const source = await modelSourceOf(spec.path);
            const digests = () => {
                const sha256 = this.modelSha256(spec.id);
                return sha256 === null ? Promise.reject(new Error('the model file is not hashed yet'))
                    : tensorDigests(spec.path, sha256, tensorDigestsDir(settings.dataDir));
            };
            const cluster = new ClusterCoordinator({
                model: {id: spec.id, path: spec.path, draft: spec.draft, sizeBytes: spec.sizeBytes, sha256: () => this.modelSha256(spec.id),
                    shape: {...layout, contextTokens, computeBytes}, ...(source !== undefined && {source, tensorDigests: digests})},
                swarm, shards,
                rpcFiles: () => this.rpcFiles && {libraryPath: this.rpcFiles.coordinator.libraryPath, serverPath: this.rpcFiles.host.serverPath},
                self: {id: this.identity.id, freeMemoryBytes: settings.memoryLimit ?? freemem(), tflops: () => this.capabilities.current().compute.measuredTflops},
                maxStages: settings.maxStages,
                spareStages: settings.spareStages,
                forceSplit: settings.shard === 'always',
                engine: {threads: settings.threads, parallelSequences: settings.parallel, contextSize: settings.contextSize, maxQueue: settings.maxQueue,
                    flashAttention: settings.flashAttention, speculative: settings.speculative, draftTokens: {min: settings.draftMin, max: settings.draftMax}}
            });
            logPipelineEvents(cluster, this.logger);
            cluster.on('state', () => this.swarm?.capabilitiesChanged());
            this.clusters.push(cluster);
            this.pipelines.push(new ShardedInference({cluster}));
        }
    }

    /**
     * Builds llama.cpp's RPC server and backend once (about a minute on two cores, then reused), then offers to host
     * layers and starts the pipelines. Without a compiler or cmake the node runs on and says why it cannot shard.
     */
    private async prepareSharding() {
        if (this.shardHost === undefined && this.clusters.length === 0)
            return;
        // Absolute: the rpc servers run from their own directory.
        const rpcDir = resolve(this.settings.rpcDir ?? join(this.settings.dataDir, 'rpc'));
        try {
            const binaries = await ensureRpcBinaries({dir: rpcDir, onProgress: (line) => this.logger.info(line)});
            // Rpc servers (hosted layers, a pipeline's own devices) run on the GPU backend node-llama-cpp uses here; the
            // pipeline engine's RPC backend sits beside the CPU ggml it loads.
            // A build for this machine (`strongdoge engine build`) is what the engines load instead of the prebuilt
            // libraries: the RPC backend and servers must sit beside it, or a second libggml-base would be loaded.
            const device = this.engine.getStatus().device;
            const gpu = device?.backend ?? false;
            const ggmlDirs = device?.build === 'local' && device.ggmlDir !== null ? [device.ggmlDir] : undefined;
            const coordinator = await prepareRpcServerDir(binaries, ggmlDirs && {ggmlDirs});
            this.rpcFiles = {coordinator, host: gpu === false ? coordinator : await prepareRpcServerDir(binaries, {gpu, ...(ggmlDirs && {ggmlDirs})}), hostGpu: gpu};
            if (this.shardHost !== undefined && this.settings.shardSandbox) {
                this.sandbox = await probeSandbox({launcherDir: rpcDir});
                if (!this.sandbox.available)
                    this.logger.warn({reason: this.sandbox.reason}, 'this node hosts no layers for peers: the sandbox for their rpc servers does not work here');
            }
            this.shardingUnavailable = null;
            this.swarm?.capabilitiesChanged();
        } catch (error) {
            this.shardingUnavailable = (error as Error).message;
            this.logger.warn({reason: this.shardingUnavailable}, 'layer sharding is unavailable');
            return;
        }
        for (const cluster of this.clusters)
            cluster.start().catch((error: Error) => this.logger.error({err: error, model: cluster.modelId}, 'the pipeline stopped'));
    }

    /**
     * What serves peers' shard sessions (docs/architecture.md, "Sharding"): the built rpc server, in the sandbox
     * unless `--shard-sandbox off` (private networks only), or why nothing does.
     */
    private hostingRuntime(): ShardHostRuntime | string {
        if (this.rpcFiles === undefined)
            return this.shardingUnavailable ?? 'the RPC server is not built yet';
        if (!this.settings.shardSandbox)
            return {binaries: this.rpcFiles.host, sandbox: 'off'};
        if (this.sandbox === undefined)
            return 'the sandbox for peers\' rpc servers is being checked';
        if (!this.sandbox.available)
            return `the sandbox for peers' rpc servers does not work here: ${this.sandbox.reason}`;
        return {binaries: this.rpcFiles.host, sandbox: {bwrapPath: this.sandbox.bwrapPath, launcherPath: this.sandbox.launcherPath, gpu: this.rpcFiles.hostGpu}};
    }

    describeCluster(): ClusterStatus {
        return clusterStatus(this.clusters, this.shardHost, this.settings.offline);
    }

    /** A text listener that also counts the streamed tokens for the dashboard. */
    private countTokens(kind: 'local' | 'forPeers', onText?: TextListener): TextListener {
        return (text, tokens, extras) => {
            this.tokens.emit('tokens', kind, tokens.length);
            onText?.(text, tokens, extras);
        };
    }

    /** The proxy's inference service, counting the tokens streamed to this node's clients. */
    private countingClientTokens(inference: InferenceService): InferenceService {
        return {
            listModels: () => inference.listModels(),
            // Ready once the node has started, not merely its engine, and once every pipeline serves.
            readiness: () => nodeReadiness({
                engine: inference.readiness(),
                engineModels: this.engineModels.map((model) => model.id),
                started: this.started,
                pipelines: this.clusters.map((cluster) => ({model: cluster.modelId, readiness: cluster.readiness()}))
            }),
            embed: (...args) => inference.embed(...args),
            generate: (request, options) => inference.generate(request, {...options, onText: this.countTokens('local', options.onText)})
        };
    }

    /**
     * This node's engine, or a pipeline it coordinates (which resumes a peer's job after a stage failure, as it does
     * a client's), as it serves peers: only models loaded, only while ready.
     */
    private localExecutor(): JobExecutor {
        const pipelineFor = (model: string) => this.pipelines.find((pipeline) => pipeline.serves(model));
        const engineFor = (model: string) => this.clusters.find((cluster) => cluster.modelId === model)?.engine ?? this.engine;
        return {
            canServe: (model) => {
                const engine = engineFor(model);
                return engine.state === 'ready' && engine.getStatus().models.some((loaded) => loaded.id === model);
            },
            modelBytes: (model) => engineFor(model).getStatus().models.find((loaded) => loaded.id === model)?.sizeBytes ?? 0,
            modelSha256: (model) => this.modelSha256(model),
            generate: (request, options) => (pipelineFor(request.model) ?? this.engine).generate(request, {...options, onText: this.countTokens('forPeers', options.onText)}),
            embed: (model, inputs, options) => engineFor(model).embed(model, inputs, options)
        };
    }

    /** A countersigned receipt into the log; resolves once it is on disk (a node without a ledger yet keeps nothing). */
    private async keepReceipt(receipt: Receipt) {
        const role = receipt.body.provider === this.identity.id ? 'served' : 'consumed';
        await this.ledger?.recordReceipt(receipt, role);
        this.logger.info({jobId: receipt.body.jobId, role, model: receipt.body.model, completionTokens: receipt.body.completionTokens},
            'receipt countersigned');
    }

    /** The size of this node's own model file with that SHA-256, or 0: what it vouches for in receipts. */
    private vouchedModelBytes(sha256: string) {
        return this.capabilities.current().models.find((offer) => offer.sha256 === sha256)?.sizeBytes ?? 0;
    }

    /** A model file's SHA-256, once this node has hashed it (in the background after start). */
    private modelSha256(model: string) {
        return this.capabilities.current().models.find((offer) => offer.id === model)?.sha256 ?? null;
    }

    /**
     * A shard receipt both sides signed (the shard channel checked it): layers this node hosted, or a host's layers
     * its pipeline used (docs/peer-protocol.md, "Shard channel").
     */
    private keepShardReceipt(receipt: ShardReceipt, role: 'shard' | 'shard-consumed') {
        this.ledger?.recordShard(receipt, role);
        this.logger.info({role, session: receipt.body.session.slice(0, 8), sequence: receipt.body.sequence, tokens: receipt.body.tokens,
            host: shortPeerId(receipt.body.host), coordinator: shortPeerId(receipt.body.coordinator)}, 'shard receipt countersigned');
    }

    private openPayments() {
        if (this.payments === undefined)
            throw LedgerError.notConfigured('the payments are not open yet');
        return this.payments;
    }

    /**
     * The requester's and provider's payments, made before the node starts: they reach the payments opened by
     * `start()`, which come before the swarm, so no job meets them closed.
     */
    private paymentsOnceOpen(): RequesterPayments & ProviderPayments & ShardPayments {
        const open = () => this.openPayments();
        return {
            price: () => this.payments?.price() ?? 0,
            admit: (...args) => open().admit(...args),
            served: (...args) => this.payments?.served(...args),
            voucher: (...args) => this.payments?.voucher(...args) ?? Promise.resolve(undefined),
            cannotPay: (...args) => this.payments === undefined ? 'the payments are not open yet' : this.payments.cannotPay(...args),
            reserve: (...args) => open().reserve(...args),
            pay: (...args) => open().pay(...args),
            release: (...args) => this.payments?.release(...args),
            owes: (peerId) => this.payments?.owes(peerId),
            reserveWei: (...args) => open().reserveWei(...args),
            payWei: (...args) => open().payWei(...args),
            admitWei: (...args) => open().admitWei(...args),
            servedWei: (...args) => this.payments?.servedWei(...args),
            voucherFor: (...args) => open().voucherFor(...args)
        };
    }

    private openLedger() {
        if (this.ledger === undefined)
            throw LedgerError.notConfigured('the contribution log is not open yet');
        return this.ledger;
    }

    /** Announces what `strongdoge bench` measured on this device, or the datasheet value alone. */
    private async loadComputeMeasurement() {
        const device = this.engine.getStatus().device;
        if (device === undefined)
            return;
        const {compute, measured} = await computeMeasurement(this.settings.dataDir, device);
        this.capabilities.setCompute(compute);
        if (!measured)
            this.logger.info('this device has not been measured: run `strongdoge bench` so peers can weigh it by speed');
    }

    describePeers(): PeersStatus {
        return peersStatus(this.swarm);
    }

    describe(): NodeStatus {
        return nodeStatus({
            identity: this.identity, settings: this.settings, startedAt: this.startedAt, proxyUrl: this.proxy?.baseUrl, engine: this.engine,
            capabilities: this.capabilities, swarm: this.swarm, provider: this.provider, servedPeerJobs: this.servedPeerJobs, ledger: this.ledger,
            stats: this.stats, ...(this.payments && {payments: this.payments})
        });
    }

    networkModels() {
        return buildNetworkModelTable([
            {id: this.identity.id, self: true, capabilities: this.capabilities.current()},
            ...(this.swarm?.peers() ?? []).map((peer) => ({id: peer.id, self: false, capabilities: peer.capabilities}))
        ], this.gossip?.entries());
    }

    async stop() {
        await this.proxy?.close();
        await Promise.all(this.clusters.map((cluster) => cluster.stop()));
        await this.shardHost?.stop();
        this.gossip?.dispose();
        await this.swarm?.stop();
        await this.payments?.stop();
        await this.ledger?.close();
        await this.engine.dispose();
    }

    /** Joining the DHT can take a while (or never finish offline): the node serves meanwhile. */
    private startSwarm() {
        const swarm = this.swarm;
        if (swarm === undefined)
            return;
        this.logger.info({nodeId: this.identity.shortId, network: this.settings.network, private: this.settings.networkSecret !== undefined,
            bootstrap: this.settings.bootstrap ?? 'public'}, 'joining the swarm');
        swarm.start().then(
            () => this.logger.info({network: this.settings.network}, 'announced on the swarm'),
            (error: Error) => this.logger.error({err: error}, 'cannot join the swarm')
        );
    }

    /** What changes this node's announcement, the receipts it keeps, and the log lines of its parts' events. */
    private observe() {
        logEngineEvents(this.engine, this.logger);
        this.engine.on('state', () => this.swarm?.capabilitiesChanged());
        this.stats.on('request', (record) => {
            // Sizes and timings only: prompts and outputs are never logged.
            this.logger.info({request: record}, 'request');
            this.swarm?.capabilitiesChanged();
        });
        this.capabilities.on('changed', () => this.swarm?.capabilitiesChanged());
        logPeerJobs(this.provider, this.requester, this.logger);
        this.provider?.on('served', () => {
            this.servedPeerJobs++;
            this.swarm?.capabilitiesChanged();
        });
        // The provider keeps its receipts before it countersigns (keepReceipt above); the requester's go in as they come.
        this.requester?.on('receipt', (receipt) => void this.keepReceipt(receipt).catch(() => undefined));
        if (this.swarm !== undefined)
            logSwarmEvents(this.swarm, this.logger);
    }
}
