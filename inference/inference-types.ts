/** What the proxy asks of an engine, independent of HTTP and of node-llama-cpp. */

export type ResponseFormat =
    | {type: 'text'}
    | {type: 'json_object'}
    | {type: 'json_schema', schema: Record<string, unknown>, name?: string};

export interface SamplingOptions {
    /** 0 = greedy and deterministic. */
    temperature: number,
    topP?: number,
    topK?: number,
    minP?: number,
    seed?: number,
    stop: string[],
    maxTokens?: number,
    presencePenalty?: number,
    frequencyPenalty?: number,
    /** Token id → additive logit bias; -100 bans a token. */
    logitBias?: Record<string, number>,
    responseFormat: ResponseFormat
}

export type ChatRole = 'system' | 'user' | 'assistant';

export interface ChatMessage {
    role: ChatRole,
    content: string
}

/** Tokens already generated for this request elsewhere: generation resumes after them. */
export interface Continuation {
    tokens: number[]
}

export type GenerationRequest =
    | {kind: 'chat', model: string, messages: ChatMessage[], sampling: SamplingOptions, continuation?: Continuation}
    | {kind: 'completion', model: string, prompt: string, sampling: SamplingOptions, continuation?: Continuation};

export type FinishReason = 'stop' | 'length';

export interface TokenUsage {
    promptTokens: number,
    /** Tokens this run generated (a continuation's own tokens not included). */
    completionTokens: number
}

export interface GenerationTimings {
    /** From request start to the first generated token: prompt processing. */
    promptMs: number,
    /** From the first to the last generated token. */
    generationMs: number,
    promptTokensPerSecond: number,
    generationTokensPerSecond: number
}

export interface GenerationResult {
    text: string,
    finishReason: FinishReason,
    usage: TokenUsage,
    timings: GenerationTimings
}

export interface EmbeddingResult {
    vectors: number[][],
    promptTokens: number
}

export type GpuBackend = 'cuda' | 'vulkan' | 'metal' | false;

export interface DeviceInfo {
    backend: GpuBackend,
    gpuNames: string[],
    vramTotalBytes: number,
    vramFreeBytes: number,
    cpuThreads: number
}

export interface LoadedModelInfo {
    id: string,
    path: string,
    sizeBytes: number,
    layers: number,
    gpuLayers: number,
    contextSize: number,
    parallelSequences: number,
    trainContextSize: number,
    embeddingLength: number
}
