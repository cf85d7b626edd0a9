import {EngineSupervisor} from '../engine/engine-supervisor.js';
import type {ModelLoadSpec} from '../engine/worker/engine-messages.js';
import {createProxyApp} from '../proxy/proxy-app.js';
import {listenProxy, type ListeningProxy} from '../proxy/proxy-server.js';
import {RequestStats} from '../proxy/request-stats.js';
import type {NodeSettings} from './config/node-config.js';
import {LocalInference} from './local-inference.js';
import type {Logger} from './logger.js';
import {packageInfo} from './package-info.js';

function isLoopback(host: string) {
    return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** Placeholder until the node has a swarm identity. */
const LOCAL_NODE_ID = 'local';

/** One running node: the engine, and the proxy in front of it. */
export class StrongdogeNode {
    readonly stats = new RequestStats();
    readonly engine: EngineSupervisor;
    private proxy: ListeningProxy | undefined;
    private readonly startedAt = Date.now();

    constructor(private readonly settings: NodeSettings, private readonly models: ModelLoadSpec[], private readonly logger: Logger) {
        this.engine = new EngineSupervisor({
            models,
            threads: settings.threads,
            parallelSequences: settings.parallel,
            contextSize: settings.contextSize,
            gpu: settings.gpu === 'off' ? false : 'auto',
            maxQueue: settings.maxQueue
        });
        this.observeEngine();
        this.stats.on('request', (record) => {
            // Sizes and timings only: prompts and outputs are never logged.
            logger.info({request: record}, 'request');
        });
    }

    get baseUrl() {
        return this.proxy?.baseUrl;
    }

    /** Listens first, so /health answers 503 while the models load, then loads them. */
    async start() {
        const inference = new LocalInference(this.engine, this.models.map((model) => model.id));
        const app = createProxyApp({
            inference,
            stats: this.stats,
            describeNode: () => this.describe(),
            ...(this.settings.apiKey && {apiKey: this.settings.apiKey})
        });
        this.proxy = await listenProxy(app, this.settings.host, this.settings.port);
        this.logger.info({url: this.proxy.baseUrl, host: this.settings.host, port: this.proxy.port,
            auth: this.settings.apiKey ? 'api key required' : 'none'}, 'OpenAI-compatible API listening');
        if (!isLoopback(this.settings.host))
            this.logger.warn({host: this.settings.host}, 'the API listens beyond this machine: anyone who can reach it can use your models; consider --api-key');
        if (this.models.length === 0)
            this.logger.warn('no model configured: try `strongdoge models make-demo` and `strongdoge --model demo`');
        await this.engine.start();
        const status = this.engine.getStatus();
        this.logger.info({
            device: status.device,
            models: status.models.map(({id, layers, gpuLayers, contextSize}) => ({id, layers, gpuLayers, contextSize}))
        }, status.device?.backend ? `ready: ${status.device.backend} GPU offload` : 'ready: CPU only');
    }

    describe() {
        const engine = this.engine.getStatus();
        return {
            id: LOCAL_NODE_ID,
            version: packageInfo.version,
            uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
            proxyUrl: this.proxy?.baseUrl,
            device: engine.device ?? null,
            engine: {state: engine.state, pid: engine.pid ?? null, restarts: engine.restarts, lastError: engine.lastError ?? null,
                running: engine.running, queued: engine.queued},
            models: engine.models,
            requests: this.stats.snapshot()
        };
    }

    async stop() {
        await this.proxy?.close();
        await this.engine.dispose();
    }

    private observeEngine() {
        let lastLoggedProgress = -1;
        this.engine.on('loadProgress', (model, progress) => {
            if (progress === 1 || progress - lastLoggedProgress >= 0.25) {
                lastLoggedProgress = progress === 1 ? -1 : progress;
                this.logger.info({model, progress: Number(progress.toFixed(2))}, 'loading model');
            }
        });
        this.engine.on('state', (state) => this.logger.debug({state}, 'engine state'));
        this.engine.on('workerExit', (code, signal) => {
            if (this.engine.state !== 'stopped')
                this.logger.error({code, signal, restarts: this.engine.getStatus().restarts}, 'engine process exited; restarting');
        });
        this.engine.on('workerLog', (line) => this.logger.warn({source: 'engine'}, line));
    }
}
