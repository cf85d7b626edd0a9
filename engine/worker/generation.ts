import {
    LlamaGrammarEvaluationState,
    type LlamaContextSequence, type LlamaContextSequenceRepeatPenalty, type LlamaGrammar, type SequenceEvaluateOptions, type Token,
    type TokenBias
} from 'node-llama-cpp';
import type {SteppedGeneration} from './decode-loop.js';
import type {LlamaSamplingOptions} from './sampling-options.js';
import type {Release, TokenRelease} from './token-release.js';

export interface GenerationOptions {
    sequence: LlamaContextSequence,
    /** llama.cpp's id of `sequence`. */
    sequenceId: number,
    /** Everything before the first new token: BOS, prompt, continuation. */
    input: Token[],
    /** Tokens of `input` that were generated (a continuation): they count for the repeat penalties. */
    continuation: Token[],
    sampling: LlamaSamplingOptions,
    grammar?: LlamaGrammar,
    tokenBias?: TokenBias,
    /** New tokens at most. */
    budget: number,
    release: TokenRelease,
    signal: AbortSignal,
    onText(text: string, tokens: number[]): void,
    /** After each chunk of the prompt but the last (which ends with the first token): tokens evaluated of `total`. */
    onPromptProgress?(evaluated: number, total: number): void
}

export type GenerationEnd = 'eog' | 'stop' | 'length' | 'abort';

/**
 * Prompt tokens evaluated per step while other requests are generating: a long prompt is taken a chunk at a time,
 * each chunk in a step with the others' tokens, so their streams pause for a chunk, not for the whole prompt
 * (docs/architecture.md, "Batched decoding").
 */
export const SHARED_PROMPT_CHUNK_TOKENS = 128;
/** Prompt tokens per step when the request is alone: bigger chunks evaluate faster (15 % on a 1,950-token prompt). */
export const ALONE_PROMPT_CHUNK_TOKENS = 512;

/**
 * One request's generation on one context sequence, advanced a step at a time (a prompt chunk, then a token) by
 * the DecodeLoop: sampling options, grammar state, repeat penalties, the budget, cancellation, and what the client
 * is shown (TokenRelease).
 */
export class Generation implements SteppedGeneration {
    readonly sequenceId: number;
    /** New tokens sampled so far (the end-of-generation token not included). */
    readonly generated: Token[] = [];
    text = '';
    end: GenerationEnd | undefined;
    /** When the first new token was sampled (performance.now()). */
    firstTokenAt: number | undefined;
    private iterator: AsyncGenerator<Token, void, Token | Token[] | undefined> | undefined;
    private readonly evaluateOptions: SequenceEvaluateOptions;

    private readonly promptTokens: number;

    private constructor(private readonly options: GenerationOptions, private readonly promptLeft: Token[]) {
        this.sequenceId = options.sequenceId;
        this.promptTokens = promptLeft.length;
        const {sampling, grammar, tokenBias, continuation} = options;
        const penalty = sampling.repeatPenalty;
        let repeatPenalty: LlamaContextSequenceRepeatPenalty | undefined;
        if (penalty !== false) {
            const newline = options.sequence.model.tokens.nl;
            const lastTokens = penalty.lastTokens ?? 0;
            repeatPenalty = {
                // The reply so far, a continuation's tokens included, so that a resumed reply is penalised as the original was.
                punishTokens: () => [...continuation, ...this.generated].slice(-lastTokens).filter((token) => token !== newline),
                maxPunishTokens: lastTokens,
                ...(penalty.penalty !== undefined && {penalty: penalty.penalty}),
                ...(penalty.frequencyPenalty !== undefined && {frequencyPenalty: penalty.frequencyPenalty}),
                ...(penalty.presencePenalty !== undefined && {presencePenalty: penalty.presencePenalty})
            };
        }
        this.evaluateOptions = {
            temperature: sampling.temperature,
            ...(sampling.topP !== undefined && {topP: sampling.topP}),
            ...(sampling.topK !== undefined && {topK: sampling.topK}),
            ...(sampling.minP !== undefined && {minP: sampling.minP}),
            ...(sampling.seed !== undefined && {seed: sampling.seed}),
            ...(grammar !== undefined && {grammarEvaluationState: new LlamaGrammarEvaluationState({model: options.sequence.model, grammar})}),
            ...(repeatPenalty !== undefined && {repeatPenalty}),
            ...(tokenBias !== undefined && {tokenBias})
        };
    }

    /**
     * Keeps what the sequence already holds of `input` (the previous request's prompt often starts the same) and
     * prepares the evaluation of the rest; at least the last input token is evaluated, to sample from.
     */
    static async start(options: GenerationOptions) {
        const {sequence, input} = options;
        await sequence.adaptStateToTokens(input.slice(0, -1), false);
        return new Generation(options, input.slice(sequence.nextTokenIndex));
    }

    get prefilling() {
        return this.firstTokenAt === undefined;
    }

    advance(shared: boolean): Promise<boolean> {
        if (this.options.signal.aborted)
            return this.finish('abort');
        if (this.generated.length >= this.options.budget)
            return this.finish('length');
        const {sequence} = this.options;
        // Every chunk but the last is evaluated without sampling; the last one starts the token iterator.
        const chunk = shared ? SHARED_PROMPT_CHUNK_TOKENS : ALONE_PROMPT_CHUNK_TOKENS;
        if (this.promptLeft.length > chunk)
            return sequence.evaluateWithoutGeneratingNewTokens(this.promptLeft.splice(0, chunk)).then(() => {
                this.options.onPromptProgress?.(this.promptTokens - this.promptLeft.length, this.promptTokens);
                return true;
            });
        this.iterator ??= sequence.evaluate(this.promptLeft.splice(0), this.evaluateOptions);
        return this.iterator.next().then(({value, done}) => {
            this.firstTokenAt ??= performance.now();
            if (done === true)
                return this.finish('eog');
            this.generated.push(value);
            const {release} = this.options;
            this.show(release.push(value));
            if (release.stopped)
                return this.finish('stop');
            if (this.generated.length >= this.options.budget)
                return this.finish('length');
            return true;
        }).catch(async (error: unknown) => {
            // The iterator may still be suspended (a callback threw): close it, so its sampler is freed.
            await this.iterator?.return().catch(() => undefined);
            throw error;
        });
    }

    private async finish(end: GenerationEnd): Promise<false> {
        this.end = end;
        this.show(this.options.release.finish());
        await this.iterator?.return();
        return false;
    }

    private show({text, tokens}: Release) {
        this.text += text;
        if (tokens.length > 0)
            this.options.onText(text, tokens);
    }
}
