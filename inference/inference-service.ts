import type {EmbeddingResult, GenerationRequest, GenerationResult} from './inference-types.js';

/** What the proxy needs from whatever serves models: the local engine today, peers later. */

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
    loadProgress?: Record<string, number>
}

export interface RouteInfo {
    /** Peers that served (the last one finished it). */
    peers: string[],
    failovers: number
}

export interface GenerateOptions {
    onText?: (text: string, tokens: number[]) => void,
    signal?: AbortSignal,
    /** Per-request budget per million tokens for peers (header `x-strongdoge-max-price`). */
    maxPrice?: number,
    /** Told where a request was served when peers served it. */
    onRoute?: (route: RouteInfo) => void
}

export interface InferenceService {
    listModels(): ServedModel[],
    readiness(): Readiness,
    generate(request: GenerationRequest, options: GenerateOptions): Promise<GenerationResult>,
    embed(model: string, inputs: string[], options: Omit<GenerateOptions, 'onText'>): Promise<EmbeddingResult>
}
