/**
 * The engine child process: owns node-llama-cpp and every loaded model. It runs apart from the node's
 * main process because llama.cpp aborts the whole process on some failures (and on any ggml-rpc error).
 */
import {readFile} from 'node:fs/promises';
import {getLlama, LlamaLogLevel, type Llama} from 'node-llama-cpp';
import type {DeviceInfo} from '../../core/inference-types.js';
import type {WorkerSettings} from '../engine-settings.js';
import type {SupervisorMessage, WorkerMessage} from './engine-messages.js';
import {InferenceError} from '../../core/inference-error.js';
import {engineBuildOf} from '../engine-build.js';
import {ModelRuntime} from './model-runtime.js';
import {PlacementReport, registerRpcDevices} from './rpc-devices.js';

const runtimes = new Map<string, ModelRuntime>();
const activeJobs = new Map<number, AbortController>();
let llama: Llama | undefined;

function send(message: WorkerMessage) {
    process.send?.(message);
}

/** Where the ggml libraries this process loaded live (Linux: its memory map), for RPC servers that must share them. */
async function loadedGgmlDir() {
    const maps = await readFile('/proc/self/maps', 'utf8').catch(() => '');
    const path = /\s(\/\S*)\/libggml-base\.so\b/.exec(maps)?.[1];
    return path ?? null;
}

async function describeDevice(llama: Llama, threads: number): Promise<DeviceInfo> {
    const vram = llama.gpu === false ? {total: 0, free: 0} : await llama.getVramState();
    return {
        backend: llama.gpu,
        gpuNames: llama.gpu === false ? [] : await llama.getGpuDeviceNames(),
        vramTotalBytes: vram.total,
        vramFreeBytes: vram.free,
        cpuThreads: threads,
        build: engineBuildOf(llama),
        ggmlDir: await loadedGgmlDir()
    };
}

/** Levels worth the operator's attention; a sharded load asks llama.cpp for debug lines to read the placement. */
const REPORTED_LEVELS = new Set<LlamaLogLevel>([LlamaLogLevel.fatal, LlamaLogLevel.error, LlamaLogLevel.warn]);

async function load(settings: WorkerSettings) {
    try {
        let placement: PlacementReport | undefined;
        const {shard} = settings;
        llama = await getLlama({
            // A sharded engine puts every layer on its RPC devices (this node's own among them) and keeps only the
            // embeddings: a local GPU would join llama.cpp's device list after them, out of the plan's order
            // (docs/architecture.md, "Sharding").
            gpu: shard === undefined ? settings.gpu : false,
            build: 'never', // a source build takes minutes: never start one behind the user's back
            maxThreads: settings.threads,
            logLevel: shard === undefined ? LlamaLogLevel.warn : LlamaLogLevel.debug,
            logger: (level, message) => {
                if (placement?.read(message) !== true && REPORTED_LEVELS.has(level))
                    process.stderr.write(`[llama.cpp ${level}] ${message.trimEnd()}\n`);
            }
        });
        if (shard !== undefined)
            registerRpcDevices(llama, shard.rpcLibraryPath, shard.endpoints);
        send({type: 'device', device: await describeDevice(llama, settings.threads)});
        for (const spec of settings.models) {
            placement = shard === undefined ? undefined : new PlacementReport();
            const runtime = await ModelRuntime.load(llama, spec, settings, (progress) =>
                send({type: 'loadProgress', model: spec.id, progress}), () => placement?.close());
            runtimes.set(spec.id, runtime);
            if (placement !== undefined)
                send({type: 'placement', model: spec.id, devices: placement.devices});
        }
        placement = undefined;
        send({type: 'loaded', models: [...runtimes.values()].map((runtime) => runtime.info)});
    } catch (error) {
        send({type: 'loadFailed', message: (error as Error).message});
    }
}

function runtimeFor(model: string) {
    const runtime = runtimes.get(model);
    if (runtime === undefined)
        throw InferenceError.modelNotFound(model);
    return runtime;
}

async function runJob(jobId: number, work: (signal: AbortSignal) => Promise<WorkerMessage>) {
    const controller = new AbortController();
    activeJobs.set(jobId, controller);
    try {
        send(await work(controller.signal));
    } catch (error) {
        const failure = error instanceof InferenceError ? error : InferenceError.engineError((error as Error).message);
        send({type: 'jobFailed', jobId, error: failure.toJSON()});
    } finally {
        activeJobs.delete(jobId);
    }
}

function handle(message: SupervisorMessage) {
    switch (message.type) {
        case 'load':
            void load(message.settings);
            return;
        case 'generate': {
            const {jobId, request} = message;
            void runJob(jobId, async (signal) => ({
                type: 'generated',
                jobId,
                model: request.model,
                result: await runtimeFor(request.model).generate(request, {
                    signal,
                    onText: (text, tokens, extras) => send({type: 'text', jobId, text, tokens, ...(extras && {extras})}),
                    onPromptProgress: (evaluated, total) => send({type: 'promptProgress', jobId, evaluated, total}),
                    onWriting: (tokens) => send({type: 'writing', jobId, tokens})
                })
            }));
            return;
        }
        case 'embed': {
            const {jobId, model, inputs, maxTokens} = message;
            void runJob(jobId, async (signal) => ({
                type: 'embedded', jobId, result: await runtimeFor(model).embed(inputs, maxTokens, signal)
            }));
            return;
        }
        case 'cancel':
            activeJobs.get(message.jobId)?.abort();
            return;
        case 'ping':
            send({type: 'pong', nonce: message.nonce});
            return;
    }
}

process.on('message', (message: SupervisorMessage) => handle(message));
// The supervisor is gone: nobody can use our output, so free the memory at once.
process.on('disconnect', () => process.exit(0));
