import type {FlashAttentionSetting, SpeculativeSetting} from '../core/inference-types.js';

/** What the engine loads and how: the supervisor's options, sent on to its worker (engine/worker/). */

export interface ModelLoadSpec {
    id: string,
    path: string,
    /** A smaller model of the same vocabulary that drafts tokens for this one (`--draft-model`), loaded whole on this node. */
    draft?: {path: string}
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
    /**
     * How tokens are drafted for speculative decoding (docs/architecture.md, "Speculative decoding"): `auto` drafts with
     * the model's draft model where it has one, else with lookup. Defaults to 'auto'.
     */
    speculative?: SpeculativeSetting,
    /**
     * Tokens drafted per pass where a request speculates: the adaptive length (docs/architecture.md, "Speculative
     * decoding") kept within these bounds. A minimum above 0 drafts even where it does not pay (tests, benchmarks).
     * Defaults to 0..12.
     */
    draftTokens?: {min?: number, max?: number},
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
