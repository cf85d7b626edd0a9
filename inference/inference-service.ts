import type {EmbeddingResult, GenerationRequest, GenerationResult, TextListener} from '../core/inference-types.js';

/** What the proxy needs from whatever serves models, and what every inference strategy implements. */

export interface ServedModel {
    id: string,
    /** Unix seconds, as OpenAI reports it. */
    created: number,
    ownedBy: string
}

export interface Readiness {
    ready: boolean,
    state: string,
    /** Per-model load progress while loading, 0..1. */
    loadProgress?: Record<string, number>,
    /** Per model: whether it can serve now, and what it waits for when not. */
    models?: Record<string, ModelReadiness>
}

export interface ModelReadiness {
    ready: boolean,
    /** What the model waits for, in a few words: its engine loading, its pipeline forming. */
    waiting?: string
}

export interface RouteInfo {
    /** Peers that served (the last one finished it); through a pipeline, its stages in order (`self`: this node). */
    peers: string[],
    failovers: number,
    /** Peers' jobs, or a pipeline this node coordinates; defaults to peers. */
    via?: 'peers' | 'pipeline'
}

export interface GenerateOptions {
    onText?: TextListener,
    /**
     * The job advanced with nothing to send yet: a tool call being written, sent whole at its end (`tokens` written
     * of it so far). Stall deadlines count it as activity.
     */
    onProgress?: (tokens: number) => void,
    signal?: AbortSignal,
    /** Per-request budget per million tokens for peers (header `x-strongdoge-max-price`). */
    maxPrice?: number,
    /** Told where a request was served when peers served it. */
    onRoute?: (route: RouteInfo) => void
}

export type EmbedOptions = Omit<GenerateOptions, 'onText'>;

/** One way of serving a request: this node's engine, a peer, (next) a pipeline of peers' layer shards. */
export interface InferenceStrategy {
    /** The models this strategy can serve now. */
    listModels(): ServedModel[],
    generate(request: GenerationRequest, options: GenerateOptions): Promise<GenerationResult>,
    embed(model: string, inputs: string[], options: EmbedOptions): Promise<EmbeddingResult>
}

/** What the proxy talks to: the strategies together, and whether this node is ready. */
export interface InferenceService extends InferenceStrategy {
    readiness(): Readiness
}
