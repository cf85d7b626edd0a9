import {fork} from 'node:child_process';
import {EventEmitter} from 'node:events';
import {fileURLToPath} from 'node:url';
import {InferenceError} from '../core/inference-error.js';
import {AdmissionQueue} from './admission-queue.js';
import {ProcessSupervisor} from './process-supervisor.js';
import type {
    DeviceInfo, EmbeddingResult, GenerationRequest, GenerationResult, LoadedModelInfo, SpeculationSummary, TextListener
} from '../core/inference-types.js';
import {addSpeculation} from '../core/speculation-summary.js';
import type {WorkerSettings} from './engine-settings.js';
import {MAX_EMBEDDING_TOKENS, type SupervisorMessage, type WorkerMessage} from './worker/engine-messages.js';

export type EngineState = 'starting' | 'loading' | 'ready' | 'restarting' | 'failed' | 'stopped';

export interface EngineSupervisorOptions extends WorkerSettings {
    /** Requests allowed to wait for a free sequence before new ones get `queue_full`; defaults to 64. */
    maxQueue?: number,
    /** How often the worker is pinged; defaults to 2 s. */
    pingIntervalMs?: number,
    /** How long the worker may take to answer a ping before it is killed; defaults to 10 s. */
    pingTimeoutMs?: number,
    /**
     * A generation with no new text (and no prompt chunk evaluated) for this long means the engine hangs: it is killed
     * and restarted. Defaults to 2 min.
     */
    tokenStallMs?: number,
    /**
     * Asked before every load (the first and each restart) for what this load uses: a sharded engine's stages
     * change after a failure. While it runs the engine is `loading`; if it rejects, the worker is restarted with
     * backoff and asked again. Defaults to loading the same settings every time.
     */
    prepareLoad?: () => Promise<Pick<WorkerSettings, 'shard'>>,
    /**
     * Whether models that fail to load on the first start stop the engine for good (the configuration is wrong);
     * defaults to true. A sharded engine retries: its load fails when a stage does.
     */
    stopOnFirstLoadFailure?: boolean
}

export const engineSupervisorDefaults = {
    maxQueue: 64,
    pingIntervalMs: 2_000,
    pingTimeoutMs: 10_000,
    tokenStallMs: 120_000,
    stopOnFirstLoadFailure: true,
    flashAttention: 'auto' as const,
    speculative: 'auto' as const,
    draftTokens: {}
};

export interface EngineStatus {
    state: EngineState,
    pid: number | undefined,
    restarts: number,
    device: DeviceInfo | undefined,
    models: LoadedModelInfo[],
    loadProgress: Record<string, number>,
    /** Sharded models: where llama.cpp put each layer (a device name per layer, the output layer last). */
    placement: Record<string, string[]>,
    /** Per model, its requests' speculation since this supervisor started (restarts included). */
    speculation: Record<string, SpeculationSummary>,
    running: number,
    queued: number,
    lastError: string | undefined
}

export interface EngineEvents {
    state: [state: EngineState],
    loadProgress: [model: string, progress: number],
    workerExit: [code: number | null, signal: NodeJS.Signals | null],
    workerLog: [line: string]
}

interface PendingJob {
    kind: 'generate' | 'embed',
    lastActivityAt: number,
    /** Streamed text, with the tokens it came from (what a resumed generation continues after). */
    onText?: TextListener | undefined,
    /** A tool call being written (`GenerateOptions.onProgress`). */
    onProgress?: ((tokens: number) => void) | undefined,
    resolve: (result: never) => void,
    reject: (error: Error) => void,
    /** Frees the job's admission slot: only once the worker has let go of the job (it answered, or it is gone). */
    release: () => void,
    /** The caller went away: the worker was told to cancel, and its answer only frees the slot. */
    cancelled: boolean
}

/** Variables the engine process has no use for and must not hold: the wallet's key and password. */
const WITHHELD_VARIABLES = ['STRONGDOGE_WALLET_KEY', 'STRONGDOGE_WALLET_PASSWORD', 'STRONGDOGE_API_KEY', 'STRONGDOGE_NETWORK_SECRET'];

function engineEnvironment() {
    const env = {...process.env};
    for (const name of WITHHELD_VARIABLES)
        delete env[name];
    return env;
}

/** Wraps a promise's settle functions so that settling also stops listening for the caller's abort. */
function detachingOnSettle(signal: AbortSignal | undefined, onAbort: () => void) {
    return <A extends unknown[]>(settle: (...args: A) => void) => (...args: A) => {
        signal?.removeEventListener('abort', onAbort);
        settle(...args);
    };
}

/** Where the worker entry is: next to this file, as .js when built or .ts when run through tsx. */
function workerEntry() {
    const self = fileURLToPath(import.meta.url);
    const extension = self.endsWith('.ts') ? '.ts' : '.js';
    return {
        path: fileURLToPath(new URL(`./worker/engine-worker${extension}`, import.meta.url)),
        execArgv: extension === '.ts' ? ['--import', 'tsx'] : []
    };
}

/**
 * Runs node-llama-cpp in a child process and keeps it alive: a crash or a hang fails only the jobs
 * in flight, with a clean error, and a new worker takes over with the same models.
 */
export class EngineSupervisor extends EventEmitter<EngineEvents> {
    private readonly options: Required<Omit<EngineSupervisorOptions, 'shard' | 'prepareLoad'>> & Pick<EngineSupervisorOptions, 'shard' | 'prepareLoad'>;
    private readonly queue: AdmissionQueue;
    private readonly process: ProcessSupervisor<WorkerMessage, SupervisorMessage>;
    private readonly jobs = new Map<number, PendingJob>();
    private nextJobId = 1;
    private pingNonce = 0;
    private lastPongAt = 0;
    private readyWaiters: {resolve: () => void, reject: (error: Error) => void}[] = [];
    /** What the engine said of itself; the process and queue counts are read where they live. */
    private status: Omit<EngineStatus, 'pid' | 'restarts' | 'running' | 'queued'> = {
        state: 'starting', device: undefined, models: [], loadProgress: {}, placement: {}, speculation: {}, lastError: undefined
    };

    constructor(options: EngineSupervisorOptions) {
        super();
        this.options = {...engineSupervisorDefaults, ...options};
        this.queue = new AdmissionQueue({
            slotsPerKey: options.parallelSequences,
            maxWaiting: this.options.maxQueue,
            retryAfterSeconds: 1
        });
        this.process = new ProcessSupervisor<WorkerMessage, SupervisorMessage>({
            name: 'engine',
            spawn: () => {
                const entry = workerEntry();
                return fork(entry.path, [], {execArgv: entry.execArgv, env: engineEnvironment(), stdio: ['ignore', 'pipe', 'pipe', 'ipc'], serialization: 'advanced'});
            },
            healthCheck: () => this.healthCheck(),
            checkIntervalMs: this.options.pingIntervalMs
        });
        this.process.on('spawn', () => this.spawned());
        this.process.on('message', (message) => this.handleMessage(message));
        this.process.on('log', (line) => this.emit('workerLog', line));
        this.process.on('exit', (code, signal) => this.handleExit(code, signal));
    }

    get state() {
        return this.status.state;
    }

    getStatus(): EngineStatus {
        return {...this.status, pid: this.process.pid, restarts: this.process.restarts, running: this.queue.runningCount, queued: this.queue.waitingCount};
    }

    /** Starts the worker and resolves once every model is loaded; rejects if they cannot be. */
    start(): Promise<void> {
        this.process.start();
        return this.whenReady();
    }

    async generate(request: GenerationRequest, {onText, onProgress, signal}: {onText?: TextListener, onProgress?: (tokens: number) => void, signal?: AbortSignal} = {}) {
        return this.run<GenerationResult>(request.model, 'generate', signal, (jobId) => ({type: 'generate', jobId, request}), {onText, onProgress});
    }

    /** Embeds `inputs`, together at most `maxTokens` tokens (defaults to `MAX_EMBEDDING_TOKENS`) or a client error. */
    async embed(model: string, inputs: string[], {signal, maxTokens = MAX_EMBEDDING_TOKENS}: {signal?: AbortSignal, maxTokens?: number} = {}) {
        return this.run<EmbeddingResult>(`${model}#embeddings`, 'embed', signal, (jobId) => ({type: 'embed', jobId, model, inputs, maxTokens}));
    }

    /** Kills the worker (tests, and the operator's escape hatch); it is restarted like after a crash. */
    killWorker(signal: NodeJS.Signals = 'SIGKILL') {
        this.process.kill(signal);
    }

    async dispose() {
        this.setState('stopped');
        this.failReadyWaiters(InferenceError.engineUnavailable('engine stopped'));
        this.failJobs(InferenceError.engineUnavailable('engine stopped'));
        await this.process.stop();
    }

    private async run<T>(
        slotKey: string, kind: PendingJob['kind'], signal: AbortSignal | undefined,
        message: (jobId: number) => SupervisorMessage, {onText, onProgress}: Pick<PendingJob, 'onText' | 'onProgress'> = {}
    ): Promise<T> {
        if (this.state === 'stopped' || this.state === 'failed')
            throw InferenceError.engineUnavailable(`engine is ${this.state}${this.status.lastError ? `: ${this.status.lastError}` : ''}`);
        const release = await this.queue.acquire(slotKey, signal);
        try {
            await this.whenReady(signal);
            if (signal?.aborted)
                throw InferenceError.cancelled();
        } catch (error) {
            release();
            throw error;
        }
        const jobId = this.nextJobId++;
        return new Promise<T>((resolve, reject) => {
            const onAbort = () => {
                const job = this.jobs.get(jobId);
                if (job === undefined)
                    return;
                // The client is gone now; the slot stays taken until the worker has released the sequence.
                job.cancelled = true;
                job.lastActivityAt = Date.now();
                this.send({type: 'cancel', jobId});
                reject(InferenceError.cancelled('request cancelled'));
            };
            signal?.addEventListener('abort', onAbort, {once: true});
            const settle = detachingOnSettle(signal, onAbort);
            this.jobs.set(jobId, {
                kind, onText, onProgress, lastActivityAt: Date.now(), cancelled: false, release,
                resolve: settle(resolve) as (result: never) => void,
                reject: settle(reject)
            });
            try {
                if (!this.process.send(message(jobId)))
                    this.finishJob(jobId)?.reject(InferenceError.engineRestarting('the engine process is restarting; retry'));
            } catch (error) {
                // The job could not be handed over (the IPC refused it): it never started, so it ends here.
                this.finishJob(jobId)?.reject(InferenceError.engineError(`cannot pass the request to the engine: ${(error as Error).message}`));
            }
        });
    }

    /** Forgets a job the worker is done with and frees its slot; the job, unless its caller already left. */
    private finishJob(jobId: number): PendingJob | undefined {
        const job = this.jobs.get(jobId);
        if (job === undefined)
            return undefined;
        this.jobs.delete(jobId);
        job.release();
        return job.cancelled ? undefined : job;
    }

    private whenReady(signal?: AbortSignal): Promise<void> {
        if (this.state === 'ready')
            return Promise.resolve();
        if (this.state === 'stopped' || this.state === 'failed')
            return Promise.reject(InferenceError.engineUnavailable(`engine is ${this.state}`));
        return new Promise((resolve, reject) => {
            const onAbort = () => {
                this.readyWaiters = this.readyWaiters.filter((other) => other !== waiter);
                reject(InferenceError.cancelled('request cancelled while the engine was loading'));
            };
            const settle = detachingOnSettle(signal, onAbort);
            const waiter = {resolve: settle(resolve), reject: settle(reject)};
            this.readyWaiters.push(waiter);
            signal?.addEventListener('abort', onAbort, {once: true});
        });
    }

    /** A new worker: it loads the models, and requests wait until it has. */
    private spawned() {
        this.status.loadProgress = {};
        this.status.placement = {};
        this.lastPongAt = Date.now();
        this.setState('loading');
        const settings: WorkerSettings = {
            models: this.options.models,
            threads: this.options.threads,
            parallelSequences: this.options.parallelSequences,
            contextSize: this.options.contextSize,
            gpu: this.options.gpu,
            flashAttention: this.options.flashAttention,
            speculative: this.options.speculative,
            draftTokens: this.options.draftTokens,
            ...(this.options.shard && {shard: this.options.shard})
        };
        const pid = this.process.pid;
        const prepared = this.options.prepareLoad?.() ?? Promise.resolve({});
        prepared.then((prepare) => {
            if (this.process.pid === pid) // still the same worker
                this.send({type: 'load', settings: {...settings, ...prepare}});
        }, (error: Error) => {
            if (this.process.pid !== pid || this.state === 'stopped')
                return;
            this.status.lastError = error.message;
            this.emit('workerLog', `cannot prepare the load: ${error.message}`);
            this.process.kill(); // asked again after the restart's backoff
        });
    }

    private handleMessage(message: WorkerMessage) {
        switch (message.type) {
            case 'device':
                this.status.device = message.device;
                return;
            case 'loadProgress':
                this.status.loadProgress[message.model] = message.progress;
                this.emit('loadProgress', message.model, message.progress);
                return;
            case 'placement':
                this.status.placement[message.model] = message.devices;
                return;
            case 'loaded':
                this.status.models = message.models;
                this.status.lastError = undefined;
                this.process.markStarted();
                this.setState('ready');
                for (const waiter of this.readyWaiters.splice(0))
                    waiter.resolve();
                return;
            case 'loadFailed':
                this.status.lastError = message.message;
                if (this.process.restarts === 0 && this.options.stopOnFirstLoadFailure) {
                    // Models that never loaded will not load on retry: the configuration is wrong.
                    this.setState('failed');
                    this.failReadyWaiters(InferenceError.engineUnavailable(`cannot load models: ${message.message}`));
                    void this.process.stop();
                } else {
                    this.emit('workerLog', `cannot load models: ${message.message}; retrying`);
                    this.process.kill(); // retried with backoff
                }
                return;
            case 'pong':
                this.lastPongAt = Date.now();
                return;
            case 'text': {
                const job = this.jobs.get(message.jobId);
                if (job) {
                    job.lastActivityAt = Date.now();
                    if (!job.cancelled)
                        job.onText?.(message.text, message.tokens, message.extras);
                }
                return;
            }
            case 'promptProgress': {
                const job = this.jobs.get(message.jobId);
                if (job)
                    job.lastActivityAt = Date.now(); // a long prompt: no text yet, but not stalled
                return;
            }
            case 'writing': {
                const job = this.jobs.get(message.jobId);
                if (job) {
                    job.lastActivityAt = Date.now(); // a tool call is sent whole: nothing to send yet, but not stalled
                    if (!job.cancelled)
                        job.onProgress?.(message.tokens);
                }
                return;
            }
            case 'generated':
                if (message.result.speculation !== undefined)
                    this.status.speculation[message.model] = addSpeculation(this.status.speculation[message.model], message.result.speculation);
                this.finishJob(message.jobId)?.resolve(message.result as never);
                return;
            case 'embedded':
                this.finishJob(message.jobId)?.resolve(message.result as never);
                return;
            case 'jobFailed':
                this.finishJob(message.jobId)?.reject(InferenceError.from(message.error));
                return;
        }
    }

    private handleExit(code: number | null, signal: NodeJS.Signals | null) {
        this.emit('workerExit', code, signal);
        this.failJobs(InferenceError.engineRestarting(
            `the engine process ${signal ? `was killed (${signal})` : `exited with code ${code}`} during the request; it is restarting, retry`));
        if (this.state !== 'stopped' && this.state !== 'failed')
            this.setState('restarting');
    }

    /** The worker hangs when it stops answering pings, when a generation makes no progress, or when it never lets go of a cancelled job. */
    private healthCheck() {
        const now = Date.now();
        // A generation that makes no progress, or any job the worker was told to cancel and never let go of.
        const stalled = [...this.jobs.values()].some((job) =>
            (job.kind === 'generate' || job.cancelled) && now - job.lastActivityAt > this.options.tokenStallMs);
        if (now - this.lastPongAt > this.options.pingTimeoutMs || stalled) {
            this.status.lastError = stalled ? 'a job stalled' : 'the engine stopped answering';
            return this.status.lastError;
        }
        this.send({type: 'ping', nonce: ++this.pingNonce});
        return undefined;
    }

    private send(message: SupervisorMessage) {
        this.process.send(message);
    }

    private failJobs(error: InferenceError) {
        for (const jobId of [...this.jobs.keys()])
            this.finishJob(jobId)?.reject(error);
    }

    private failReadyWaiters(error: InferenceError) {
        for (const waiter of this.readyWaiters.splice(0))
            waiter.reject(error);
    }

    private setState(state: EngineState) {
        if (this.status.state === state)
            return;
        this.status.state = state;
        this.emit('state', state);
    }
}
