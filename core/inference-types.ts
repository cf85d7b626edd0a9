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
    /** Log probabilities of the tokens, with this many likeliest alternatives (0..20); none when undefined. */
    logprobs?: number,
    responseFormat: ResponseFormat
}

export type ChatRole = 'system' | 'user' | 'assistant' | 'tool';

/** A function the model may call (docs/architecture.md, "Tool calling"). */
export interface ToolDefinition {
    name: string,
    description?: string,
    /** JSON Schema of the arguments (an object); none: the function takes no arguments. */
    parameters?: Record<string, unknown>
}

/** `auto`: the model decides; `required`: at least one call; a name: one call of that function; `none`: no calls. */
export type ToolChoice = 'auto' | 'none' | 'required' | {name: string};

export interface ToolCalling {
    tools: ToolDefinition[],
    choice: ToolChoice,
    /** More than one call in a turn. */
    parallel: boolean
}

/** A call the model made: `arguments` is JSON text, an instance of the function's parameter schema. */
export interface ToolCall {
    name: string,
    arguments: string
}

export interface ChatMessage {
    role: ChatRole,
    content: string,
    /** An assistant turn's calls, with the ids the client knows them by. */
    toolCalls?: (ToolCall & {id: string})[],
    /** A tool message: the call it answers. */
    toolCallId?: string
}

/** One token's log probability, with the likeliest alternatives (OpenAI's `logprobs`). */
export interface TokenLogprob {
    /** The token's text; `bytes` are its UTF-8 bytes (a byte token's own byte, where the text cannot hold it). */
    token: string,
    bytes: number[],
    logprob: number,
    top: {token: string, bytes: number[], logprob: number}[]
}

/** What else a streamed chunk carries. */
export interface ChunkExtras {
    /** A whole tool call: the chunk's tokens wrote it, its text is ''. */
    toolCall?: ToolCall,
    /** One per token of the chunk, when the request asked for logprobs. */
    logprobs?: TokenLogprob[]
}

/**
 * A reply as it streams: text with the tokens that spell it, or a whole tool call (text '') with the tokens that
 * wrote it. A resumed answer continues after exactly the tokens streamed.
 */
export type TextListener = (text: string, tokens: number[], extras?: ChunkExtras) => void;

/** Tokens already generated for this request elsewhere: generation resumes after them. */
export interface Continuation {
    tokens: number[]
}

/**
 * `countOnly`: the prompt is rendered and tokenized, nothing is decoded: the result is empty, with the prompt's
 * tokens in `usage` whether or not they fit the context (Anthropic's count_tokens). No receipt is made for it.
 */
export type GenerationRequest =
    | {kind: 'chat', model: string, messages: ChatMessage[], sampling: SamplingOptions, tools?: ToolCalling, continuation?: Continuation, countOnly?: true}
    | {kind: 'completion', model: string, prompt: string, sampling: SamplingOptions, continuation?: Continuation, countOnly?: true};

export type FinishReason = 'stop' | 'length' | 'tool_calls';

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
    /** Calls the model made, after `text`. */
    toolCalls?: ToolCall[],
    /** One per token of `text`, when the request asked for logprobs. */
    logprobs?: TokenLogprob[],
    finishReason: FinishReason,
    /** Which of the client's `stop` sequences ended the reply (Anthropic's `stop_sequence`); this node's engine only. */
    stopSequence?: string,
    usage: TokenUsage,
    timings: GenerationTimings,
    /** How the engine speculated for this request; absent where it did not (docs/architecture.md, "Speculative decoding"). */
    speculation?: SpeculationCounts
}

/**
 * Speculative decoding: `draft` drafts with a small model of the same vocabulary, `lookup` with n-grams of the prompt
 * and the text so far, `auto` a draft model where one is configured, else lookup.
 */
export type SpeculativeSetting = 'auto' | 'draft' | 'lookup' | 'off';

/** Most tokens drafted for one pass (`--draft-max`): a pass verifies at most this many beside its own token. */
export const MAX_DRAFT_TOKENS = 16;

/** What drafted a request's tokens. */
export type Drafter = 'draft' | 'lookup';

/** One request's speculation: the target model's passes, the tokens drafted for them and those the target kept. */
export interface SpeculationCounts {
    drafter: Drafter,
    /** Passes of the target model while generating (each one network round trip per remote stage). */
    passes: number,
    /** Tokens generated in them: accepted drafts plus the one each pass samples itself. */
    tokens: number,
    drafted: number,
    accepted: number
}

/** A model's speculation since the engine started, as `/api/node`, `/api/cluster` and the dashboard show it. */
export interface SpeculationSummary extends SpeculationCounts {
    /** accepted / drafted; null before anything was drafted. */
    acceptance: number | null,
    /** tokens / passes; null before the first pass. */
    tokensPerPass: number | null
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
    cpuThreads: number,
    /** node-llama-cpp's prebuilt binaries, or llama.cpp built for this machine (`strongdoge engine build`). */
    build: 'prebuilt' | 'local',
    /** The directory of the ggml libraries the engine loaded; null where it cannot be read (not Linux). */
    ggmlDir: string | null
}

/** llama.cpp's flash attention: 'auto' lets llama.cpp decide by device. */
export type FlashAttentionSetting = 'auto' | 'on' | 'off';

export interface LoadedModelInfo {
    id: string,
    path: string,
    sizeBytes: number,
    layers: number,
    gpuLayers: number,
    contextSize: number,
    parallelSequences: number,
    trainContextSize: number,
    embeddingLength: number,
    /** Flash attention in this model's context: 'auto' where llama.cpp chose by device (docs/architecture.md, "Engine"). */
    flashAttention: FlashAttentionSetting,
    /** The draft model speculation uses for this model, when one is loaded. */
    draft?: {path: string, sizeBytes: number},
    /** What drafts this model's tokens; 'off' where nothing does. */
    speculative: Drafter | 'off'
}
