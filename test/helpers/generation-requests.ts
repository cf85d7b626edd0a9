import type {GenerationRequest, SamplingOptions} from '../../inference/inference-types.js';

/** A greedy text completion for the `demo` model, as the engine receives it. */
export function greedyCompletion(prompt: string, maxTokens: number, extra: Partial<SamplingOptions> = {}): GenerationRequest {
    return {kind: 'completion', model: 'demo', prompt, sampling: {temperature: 0, stop: [], maxTokens, responseFormat: {type: 'text'}, ...extra}};
}

/** A prompt of `phrases` repetitions of one short phrase: about 13 demo-vocabulary tokens each. */
export function repeatedPrompt(phrases: number) {
    return Array.from({length: phrases}, () => 'such doge said wow.').join(' ');
}
