/**
 * The engine child process: owns node-llama-cpp and every loaded model. It runs apart from the node's
 * main process because llama.cpp aborts the whole process on some failures (and on any ggml-rpc error).
 */
import {getLlama, LlamaLogLevel, type Llama} from 'node-llama-cpp';
import type {DeviceInfo} from '../../inference/inference-types.js';
import type {SupervisorMessage, WorkerMessage, WorkerSettings} from './engine-messages.js';
import {InferenceError} from '../../inference/inference-error.js';
import {ModelRuntime} from './model-runtime.js';

const runtimes = new Map<string, ModelRuntime>();
const activeJobs = new Map<number, AbortController>();
let llama: Llama | undefined;

function send(message: WorkerMessage) {
    process.send?.(message);
}

async function describeDevice(llama: Llama, threads: number): Promise<DeviceInfo> {
    const vram = llama.gpu === false ? {total: 0, free: 0} : await llama.getVramState();
    return {
        backend: llama.gpu,
        gpuNames: llama.gpu === false ? [] : await llama.getGpuDeviceNames(),
        vramTotalBytes: vram.total,
        vramFreeBytes: vram.free,
        cpuThreads: threads
    };
}

async function load(settings: WorkerSettings) {
    try {
        llama = await getLlama({
            gpu: settings.gpu,
            build: 'never', // a source build takes minutes: never start one behind the user's back
            maxThreads: settings.threads,
            logLevel: LlamaLogLevel.warn,
            logger: (level, message) => process.stderr.write(`[llama.cpp ${level}] ${message.trimEnd()}\n`)
        });
        send({type: 'device', device: await describeDevice(llama, settings.threads)});
        for (const spec of settings.models) {
            const runtime = await ModelRuntime.load(llama, spec, settings, (progress) =>
                send({type: 'loadProgress', model: spec.id, progress}));
            runtimes.set(spec.id, runtime);
        }
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
                result: await runtimeFor(request.model).generate(request, {
                    signal,
                    onText: (text, tokens) => send({type: 'text', jobId, text, tokens})
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
