import type {WalletBinding} from '../core/wallet-binding-schema.js';
import {EventEmitter} from 'node:events';
import {freemem} from 'node:os';
import {join} from 'node:path';
import type {EngineState, EngineSupervisor} from '../engine/engine-supervisor.js';
import {ModelHashCache} from '../engine/model-hash-cache.js';
import {describeModelFile, modelLayoutOf} from '../engine/model-files.js';
import {modelSourceOf} from '../engine/model-source.js';
import type {ModelLoadSpec} from '../engine/engine-settings.js';
import type {ClusterState} from '../inference/sharded/coordinator/pipeline-types.js';
import type {Capabilities, ModelOffer} from '../swarm/capabilities.js';
import {packageInfo} from './package-info.js';

export interface ComputeMeasurement {
    measuredTflops: number | null,
    lookupTflops: number | null,
    generationTokensPerSecond: number | null,
    memoryBandwidthGBs: number | null
}

/** Free RAM is announced coarsely: exact bytes change constantly and would make every update differ. */
const RAM_GRANULARITY_BYTES = 64 * 1024 * 1024;
const roundDown = (value: number, step: number) => Math.floor(value / step) * step;

const NO_MEASUREMENT: ComputeMeasurement = {measuredTflops: null, lookupTflops: null, generationTokensPerSecond: null, memoryBandwidthGBs: null};

export interface NodeCapabilitiesOptions {
    engine: EngineSupervisor,
    /** The models this node's engine loads. */
    models: ModelLoadSpec[],
    dataDir: string,
    /** Per million tokens, for peers; defaults to free. */
    price?: number,
    /** Most tokens generated for one peer request, announced so requesters can hold this node to it. */
    maxJobTokens: number,
    /** What this node offers to host peers' layer shards; defaults to nothing. */
    shardHost?: () => Capabilities['shardHost'],
    /** The pipelines this node coordinates: the model each serves and its state; defaults to none. */
    pipelines?: () => {model: string, state: ClusterState}[]
}

/** Engine and pipeline states that end in serving without anyone's help: peers may wait for them (README). */
const ENGINE_LOADING = new Set<EngineState>(['starting', 'loading', 'restarting']);
const PIPELINE_LOADING = new Set<ClusterState>(['forming', 'loading']);

/**
 * What this node announces: device and load from the engine, model offers from the files (layer sizes and the source
 * recorded beside the file at once, hashes when the background hashing finishes), compute from `strongdoge bench`.
 * Emits `changed`.
 */
export class NodeCapabilities extends EventEmitter<{changed: []}> {
    private offers: ModelOffer[] = [];
    private compute = NO_MEASUREMENT;
    private ledgerCore: string | null = null;
    private payment: WalletBinding | null = null;

    private readonly engine: EngineSupervisor;
    private readonly models: ModelLoadSpec[];
    private readonly dataDir: string;
    private readonly price: number | undefined;
    private readonly maxJobTokens: number;
    private readonly shardHost: () => Capabilities['shardHost'];
    private readonly pipelines: () => {model: string, state: ClusterState}[];

    constructor(options: NodeCapabilitiesOptions) {
        super();
        ({engine: this.engine, models: this.models, dataDir: this.dataDir, price: this.price, maxJobTokens: this.maxJobTokens} = options);
        this.shardHost = options.shardHost ?? (() => null);
        this.pipelines = options.pipelines ?? (() => []);
    }

    /** Reads the model files' tables now; hashes them in the background. */
    async prepare(onError: (model: string, error: Error) => void) {
        const hashes = new ModelHashCache(join(this.dataDir, 'cache', 'model-hashes.json'));
        for (const spec of this.models) {
            try {
                const summary = await describeModelFile(spec.path);
                const source = await modelSourceOf(spec.path);
                this.offers.push({
                    id: spec.id, sha256: await hashes.cached(spec.path) ?? null, sizeBytes: summary.sizeBytes,
                    quantization: summary.quantization, layers: summary.layers, layerBytes: (await modelLayoutOf(spec.path)).layerBytes, loaded: false,
                    ...(source !== undefined && {source})
                });
            } catch (error) {
                onError(spec.id, error as Error);
            }
        }
        void (async () => {
            for (const offer of this.offers.filter((candidate) => candidate.sha256 === null)) {
                const spec = this.models.find((model) => model.id === offer.id)!;
                try {
                    offer.sha256 = await hashes.hash(spec.path);
                    this.emit('changed');
                } catch (error) {
                    onError(spec.id, error as Error);
                }
            }
        })();
    }

    /** This node's contribution log, announced so peers can replicate and audit it. */
    /** Where this node is paid (its wallet bound to its key), once payments are open; null when they are off. */
    setPayment(binding: WalletBinding | null) {
        this.payment = binding;
    }

    setLedgerCore(core: string) {
        this.ledgerCore = core;
        this.emit('changed');
    }

    setCompute(compute: ComputeMeasurement) {
        this.compute = compute;
        this.emit('changed');
    }

    current(): Capabilities {
        const status = this.engine.getStatus();
        const pipelines = this.pipelines();
        const loaded = new Set([...status.models.map((model) => model.id), ...pipelines.flatMap(({model, state}) => state === 'ready' ? [model] : [])]);
        const loading = new Set(pipelines.flatMap(({model, state}) => PIPELINE_LOADING.has(state) ? [model] : []));
        if (ENGINE_LOADING.has(status.state))
            for (const offer of this.offers)
                if (!pipelines.some(({model}) => model === offer.id))
                    loading.add(offer.id);
        return {
            software: packageInfo.version,
            device: {
                backend: status.device?.backend ?? false,
                gpuNames: status.device?.gpuNames ?? [],
                vramTotalBytes: status.device?.vramTotalBytes ?? 0,
                vramFreeBytes: status.device?.vramFreeBytes ?? 0,
                ramFreeBytes: roundDown(freemem(), RAM_GRANULARITY_BYTES),
                cpuThreads: status.device?.cpuThreads ?? 0
            },
            compute: this.compute,
            models: this.offers.map((offer) => ({...offer, loaded: loaded.has(offer.id), ...(!loaded.has(offer.id) && loading.has(offer.id) && {loading: true})})),
            shardHost: this.shardHost(),
            shards: [],
            load: {active: status.running, queued: status.queued},
            pricePerMillionTokens: this.price ?? null,
            maxJobTokens: this.maxJobTokens,
            ledgerCore: this.ledgerCore,
            payment: this.payment
        };
    }
}
