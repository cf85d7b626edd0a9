import {randomInt} from 'node:crypto';
import type {LLamaContextualRepeatPenalty} from 'node-llama-cpp';
import type {SamplingOptions} from '../../core/inference-types.js';

/** The node-llama-cpp sampling options that follow directly from OpenAI-style sampling settings (stops: TokenRelease). */
export interface LlamaSamplingOptions {
    temperature: number,
    topP?: number,
    topK?: number,
    minP?: number,
    seed: number,
    maxTokens?: number,
    repeatPenalty: false | LLamaContextualRepeatPenalty
}

/** Penalised window, as in llama.cpp's `--repeat-last-n` default. */
export const PENALTY_LAST_TOKENS = 64;

/**
 * OpenAI has no repeat penalty by default, while node-llama-cpp applies 1.1 unless told otherwise;
 * presence/frequency penalties map onto node-llama-cpp's with the multiplicative penalty disabled.
 */
export function toLlamaSamplingOptions(sampling: SamplingOptions): LlamaSamplingOptions {
    const penalised = (sampling.presencePenalty ?? 0) !== 0 || (sampling.frequencyPenalty ?? 0) !== 0;
    return {
        temperature: sampling.temperature,
        ...(sampling.topP !== undefined && {topP: sampling.topP}),
        ...(sampling.topK !== undefined && {topK: sampling.topK}),
        ...(sampling.minP !== undefined && {minP: sampling.minP}),
        // Without a seed node-llama-cpp samples with the same one every time: a client that sets none expects
        // different answers (and n > 1 different choices), as OpenAI gives.
        seed: sampling.seed ?? randomInt(2 ** 32),
        ...(sampling.maxTokens !== undefined && {maxTokens: sampling.maxTokens}),
        repeatPenalty: penalised
            ? {
                penalty: 1,
                lastTokens: PENALTY_LAST_TOKENS,
                presencePenalty: sampling.presencePenalty ?? 0,
                frequencyPenalty: sampling.frequencyPenalty ?? 0
            }
            : false
    };
}
