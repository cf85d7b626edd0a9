import type {FlashAttentionSetting} from '../core/inference-types.js';

/** What the engine loads and how: the supervisor's options, sent on to its worker (engine/worker/). */

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
