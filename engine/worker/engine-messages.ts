import type {InferenceErrorJson} from '../../inference/inference-error.js';
import type {
    ChunkExtras, DeviceInfo, EmbeddingResult, FlashAttentionSetting, GenerationRequest, GenerationResult, LoadedModelInfo
} from '../../inference/inference-types.js';

/** IPC between the supervisor (main process) and the engine worker (child process). */

export interface ModelLoadSpec {
    id: string,
    path: string
}

export interface WorkerSettings {
    models: ModelLoadSpec[],
    threads: number,
    /** Sequences per context: how many requests decode together in one batch. */
    parallelSequences: number,
    /** Context tokens of each sequence: what one request may hold, prompt and answer. */
    contextSize: number,
    /** 'auto' offloads to a GPU when node-llama-cpp finds one. */
    gpu: 'auto' | false,
    /**
     * llama.cpp's flash attention: 'auto' lets llama.cpp decide (on where the device supports it, CPUs included).
     * Off is faster on CPUs as the context fills, but a repeated request that reuses its cached prompt can part
     * from its first answer after a near-tie (docs/architecture.md, "Engine"). Defaults to 'auto'.
     */
    flashAttention?: FlashAttentionSetting,
    /** Layers on remote devices: this engine coordinates a pipeline of stages (docs/architecture.md, "Sharding"). */
    shard?: ShardLoadSettings
}

export interface ShardLoadSettings {
    /** `libggml-rpc.so`, built from the llama.cpp source node-llama-cpp ships (engine/rpc/). */
    rpcLibraryPath: string,
    /** One `host:port` per RPC device, in order: this node's own first device, the tunnels' loopback ends, its output device. */
    endpoints: string[],
    /** Layers on the RPC devices, the output layer included: llama.cpp offloads the last ones. */
    gpuLayers: number
}

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
    | {type: 'generated', jobId: number, result: GenerationResult}
    | {type: 'embedded', jobId: number, result: EmbeddingResult}
    | {type: 'jobFailed', jobId: number, error: InferenceErrorJson}
    | {type: 'pong', nonce: number};
