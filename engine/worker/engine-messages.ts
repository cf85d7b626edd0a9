import type {InferenceErrorJson} from '../../core/inference-error.js';
import type {ChunkExtras, DeviceInfo, EmbeddingResult, GenerationRequest, GenerationResult, LoadedModelInfo} from '../../core/inference-types.js';
import type {WorkerSettings} from '../engine-settings.js';

/** IPC between the supervisor (main process) and the engine worker (child process). */


/**
 * Tokens one embedding request may hold in all: one request must not hold the embedding context (which serves
 * requests one at a time) for minutes.
 */
export const MAX_EMBEDDING_TOKENS = 16_384;

export type SupervisorMessage =
    | {type: 'load', settings: WorkerSettings}
    | {type: 'generate', jobId: number, request: GenerationRequest}
    | {type: 'embed', jobId: number, model: string, inputs: string[], maxTokens: number}
    | {type: 'cancel', jobId: number}
    | {type: 'ping', nonce: number};

export type WorkerMessage =
    | {type: 'device', device: DeviceInfo}
    | {type: 'loadProgress', model: string, progress: number}
    | {type: 'loaded', models: LoadedModelInfo[]}
    /** Where llama.cpp put each layer of a sharded model (the output layer last): a device name per layer. */
    | {type: 'placement', model: string, devices: string[]}
    | {type: 'loadFailed', message: string}
    | {type: 'text', jobId: number, text: string, tokens: number[], extras?: ChunkExtras}
    /** A chunk of the job's prompt was evaluated: the job is alive though it has no text yet (the stall watchdog). */
    | {type: 'promptProgress', jobId: number, evaluated: number, total: number}
    /** A tool call is being written, to be sent whole: the job is alive though it sends nothing (`tokens` so far). */
    | {type: 'writing', jobId: number, tokens: number}
    | {type: 'generated', jobId: number, model: string, result: GenerationResult}
    | {type: 'embedded', jobId: number, result: EmbeddingResult}
    | {type: 'jobFailed', jobId: number, error: InferenceErrorJson}
    | {type: 'pong', nonce: number};
