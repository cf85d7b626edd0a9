import type {EmbeddingResult, GenerationRequest, GenerationResult} from '../engine/inference-types.js';

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

export interface InferenceService {
    listModels(): ServedModel[],
    readiness(): Readiness,
    generate(request: GenerationRequest, options: {onText?: (text: string, tokens: number[]) => void, signal?: AbortSignal}): Promise<GenerationResult>,
    embed(model: string, inputs: string[], options: {signal?: AbortSignal}): Promise<EmbeddingResult>
}
