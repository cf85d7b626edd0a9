import {
    LlamaGrammarEvaluationState,
    type LlamaContextSequence, type LlamaContextSequenceRepeatPenalty, type LlamaGrammar, type SequenceEvaluateOptions, type Token,
    type TokenBias
} from 'node-llama-cpp';
import type {SpeculationCounts, TextListener, TokenLogprob, ToolCall} from '../../core/inference-types.js';
import {parseToolCalls, type ToolCallSyntax} from '../../core/tool-calls/tool-call-syntax.js';
import {ALONE_PROMPT_CHUNK_TOKENS, SHARED_PROMPT_CHUNK_TOKENS, type SteppedGeneration} from './decode-loop.js';
import type {Speculator} from './speculation/speculator.js';
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
    /** The request offers tools: how calls are written and held to. Defaults to none. */
    toolCalls?: ToolCallRules,
    /** Log probabilities of the reply's text tokens, with this many alternatives each. Defaults to none. */
    logprobs?: {top: number, describe(token: Token): {token: string, bytes: number[]}},
    signal: AbortSignal,
    onText: TextListener,
    /**
     * The sequence's token predictor, already begun for this request (Speculator.begin): drafts before each step.
     * Defaults to none.
     */
    speculator?: Speculator,
    /** After each chunk of the prompt but the last (which ends with the first token): tokens evaluated of `total`. */
    onPromptProgress?(evaluated: number, total: number): void,
    /** After each token of a tool call that does not finish one: the call's tokens so far (it is sent whole). */
    onWriting?(tokens: number): void
}

export type GenerationEnd = 'eog' | 'stop' | 'length' | 'abort';

/** What OpenAI writes for a token of (nearly) no probability: a finite number, since JSON has no -Infinity. */
const UNLIKELY_LOGPROB = -9999;

/** How a request's tool calls are written (docs/architecture.md, "Tool calling"). */
export interface ToolCallRules {
    syntax: ToolCallSyntax,
    /** The functions offered. */
    names: string[],
    /** Tokens of `syntax.open`, written by the engine once a call starts. */
    openTokens: Token[],
    /** Holds what follows `open` to the calls' syntax and each function's parameter schema. */
    grammar: LlamaGrammar,
    /** A call starts at once (`tool_choice` required or a function), not when the model writes `release`'s call text. */
    forced: boolean,
    /**
     * The continuation already holds whole calls: only further calls may follow, held to this grammar; undefined
     * with `resumedAfterCalls`: the answer is complete.
     */
    resumedAfterCalls?: {grammar: LlamaGrammar | undefined},
    /** Detokenizes a call's tokens after the tokens before them. */
    detokenize(tokens: readonly Token[], context: readonly Token[]): string,
    /** Tokens for text the reply had before a call started inside a token. */
    tokenize(text: string): Token[]
}

/** The calls being written: tokens after `open` (or after the continuation), and what was already sent. */
interface CallSection {
    tokens: Token[],
    /** Tokens written for calls and not yet sent with a whole call. */
    unsent: Token[],
    sent: number,
    /** The continuation's calls come before these. */
    continuing: boolean
}

/**
 * One request's generation on one context sequence, advanced a step at a time (a prompt chunk, then a token) by
 * the DecodeLoop: sampling options, grammar state, repeat penalties, the budget, cancellation, what the client is
 * shown (TokenRelease), and tool calls (each sent whole once its grammar has written it).
 */
export class Generation implements SteppedGeneration {
    readonly sequenceId: number;
    /** The reply's tokens so far as the sequence holds them (the end-of-generation token not included). */
    readonly generated: Token[] = [];
    /** Unsent tokens of the call being written last announced with `onWriting`. */
    private announced = 0;
    text = '';
    readonly toolCalls: ToolCall[] = [];
    end: GenerationEnd | undefined;
    /** When the first new token was sampled (performance.now()). */
    firstTokenAt: number | undefined;
    /** Log probabilities of the text shown, one per token. */
    readonly logprobs: TokenLogprob[] = [];
    private iterator: AsyncGenerator<{token: Token, probabilities?: Map<Token, number>}, void, Token | Token[] | undefined> | undefined;
    /** The current iterator has yielded a token: the next pass follows it, and can be drafted for. */
    private yielded = false;
    /** Log probabilities of the tokens TokenRelease holds, in order. */
    private readonly heldLogprobs: TokenLogprob[] = [];
    private evaluateOptions: SequenceEvaluateOptions;
    /** The options of the evaluation under way (the calls' grammar once calls are written). */
    private evaluating: SequenceEvaluateOptions = {};
    private readonly promptTokens: number;
    /** Set once calls are being written: from then on tokens go to the calls, not to TokenRelease. */
    private calls: CallSection | undefined;
    /** Tokens of the reply sent as text so far. */
    private shownTokens = 0;
    /** The reply already ended when it started: a continuation holding a whole call, where no other may follow. */
    private complete = false;

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
            seed: sampling.seed,
            ...(grammar !== undefined && {grammarEvaluationState: this.grammarState(grammar)}),
            ...(repeatPenalty !== undefined && {repeatPenalty}),
            ...(tokenBias !== undefined && {tokenBias})
        };
        const rules = options.toolCalls;
        if (rules?.resumedAfterCalls !== undefined) {
            const after = rules.resumedAfterCalls.grammar;
            this.complete = after === undefined;
            this.calls = {tokens: [], unsent: [], sent: 0, continuing: true};
            if (after !== undefined)
                this.evaluateOptions = {...this.evaluateOptions, grammarEvaluationState: this.grammarState(after)};
        } else if (rules?.forced === true) {
            promptLeft.push(...rules.openTokens);
            this.generated.push(...rules.openTokens);
            this.calls = {tokens: [], unsent: [...rules.openTokens], sent: 0, continuing: false};
            this.evaluateOptions = {...this.evaluateOptions, grammarEvaluationState: this.grammarState(rules.grammar)};
        }
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
        if (this.complete)
            return this.finish('eog');
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
        this.iterator ??= this.evaluate(this.promptLeft.splice(0), this.evaluateOptions);
        return this.next().catch(async (error: unknown) => {
            // The iterator may still be suspended (a callback threw): close it, so its sampler is freed.
            await this.iterator?.return().catch(() => undefined);
            throw error;
        });
    }

    /**
     * Drafts this generation's next pass before the step starts, so that every sequence's decode is still queued in
     * the same tick (docs/architecture.md, "Speculative decoding").
     */
    prepare(): Promise<void> | undefined {
        const {speculator, sequence} = this.options;
        if (speculator?.active !== true || !this.yielded || this.generated.length === 0 || sequence.tokenPredictions.unused > 0
            // node-llama-cpp 3.21.1 checks a pass's drafts against a copy of the grammar taken before its first token
            // is accepted, so drafts it keeps may break the grammar: a grammar's tokens are not drafted.
            || this.evaluating.grammarEvaluationState !== undefined)
            return undefined;
        // The pass samples one token itself: drafts beyond the budget's last token would be thrown away.
        return speculator.prepare(this.generated.at(-1)!, this.options.budget - this.generated.length - 1);
    }

    /**
     * Takes the iterator's next token; then the drafts the last pass validated, which need no pass of their own,
     * so that a pass's tokens go out together.
     */
    private async next(): Promise<boolean> {
        const {sequence, speculator} = this.options;
        for (;;) {
            const {value: sampled, done} = await this.iterator!.next();
            speculator?.settle();
            this.firstTokenAt ??= performance.now();
            if (done === true)
                return this.finish('eog');
            this.yielded = true;
            const iterator = this.iterator;
            if (!await this.take(sampled))
                return false;
            // A call started (a new evaluation, next step), or the pass's tokens are all out.
            if (this.iterator !== iterator || sequence.tokenPredictions.unused === 0)
                return true;
        }
    }

    /** One sampled token: to the reply or to the calls being written; false once the generation has finished. */
    private async take(sampled: {token: Token, probabilities?: Map<Token, number>}): Promise<boolean> {
        const value = sampled.token;
        this.generated.push(value);
        if (this.calls !== undefined)
            this.writeCall(this.calls, value);
        else {
            const {release} = this.options;
            if (sampled.probabilities !== undefined)
                this.heldLogprobs.push(this.logprobOf(value, sampled.probabilities));
            this.show(release.push(value));
            if (release.stopped)
                return this.finish('stop');
            if (release.call !== undefined)
                await this.startCalls(release.call.remainder);
        }
        if (this.options.signal.aborted)
            return this.finish('abort');
        if (this.generated.length >= this.options.budget)
            return this.finish('length');
        return true;
    }

    /** How this request speculated, once it has finished; undefined where it did not. */
    get speculation(): SpeculationCounts | undefined {
        return this.options.speculator?.countsFor(this.generated.length);
    }

    /**
     * The model started a call: the reply's text ends where it did, and the engine writes `open` itself, so the
     * grammar holds the call from the function's name on. The sequence drops the tokens after the reply's text.
     */
    private async startCalls(remainder: string) {
        const rules = this.options.toolCalls!;
        await this.iterator?.return();
        this.yielded = false;
        const remainderTokens = remainder === '' ? [] : rules.tokenize(remainder);
        this.generated.splice(this.shownTokens, Infinity, ...remainderTokens, ...rules.openTokens);
        // The tokens written for the remainder were not sampled: they have no probabilities.
        this.heldLogprobs.length = 0;
        if (remainderTokens.length > 0)
            this.show({text: remainder, tokens: remainderTokens});
        this.calls = {tokens: [], unsent: [...rules.openTokens], sent: 0, continuing: false};
        const history = [...this.options.input, ...this.generated];
        const {sequence} = this.options;
        await sequence.adaptStateToTokens(history, false);
        this.iterator = this.evaluate(history.slice(sequence.nextTokenIndex),
            {...this.evaluateOptions, grammarEvaluationState: this.grammarState(rules.grammar)});
    }

    /** Tells how many tokens of the call being written are unsent, when that grew since it was last told. */
    private announce(calls: CallSection) {
        if (calls.unsent.length > this.announced) {
            this.announced = calls.unsent.length;
            this.options.onWriting?.(calls.unsent.length);
        }
    }

    /** A token of the calls: each call is sent once whole, with every token written since the last one sent. */
    private writeCall(calls: CallSection, token: Token) {
        const rules = this.options.toolCalls!;
        calls.tokens.push(token);
        calls.unsent.push(token);
        const text = rules.detokenize(calls.tokens, calls.continuing ? this.options.input : rules.openTokens);
        const parsed = parseToolCalls(text, rules.syntax, rules.names, {continuing: calls.continuing});
        for (const call of parsed.calls.slice(calls.sent)) {
            this.toolCalls.push(call);
            this.options.onText('', calls.unsent.splice(0), {toolCall: call});
            this.announced = 0;
        }
        if (parsed.calls.length === calls.sent)
            this.announce(calls);
        calls.sent = parsed.calls.length;
    }

    /** Tokens sampled from `input` on; with the probabilities of each when logprobs are asked for (calls excepted). */
    private evaluate(input: Token[], options: SequenceEvaluateOptions) {
        this.evaluating = options;
        const probabilities = this.options.logprobs !== undefined && this.calls === undefined;
        return this.options.sequence.evaluateWithMetadata(input, {probabilities}, options);
    }

    /**
     * The sampled token's log probability and the likeliest alternatives, from the distribution it was sampled
     * from (node-llama-cpp gives it after the sampling chain, sorted, zeros included: they are left out).
     */
    private logprobOf(token: Token, probabilities: Map<Token, number>): TokenLogprob {
        const {top, describe} = this.options.logprobs!;
        const alternatives: TokenLogprob['top'] = [];
        for (const [candidate, probability] of probabilities) {
            if (alternatives.length >= top || probability <= 0)
                break;
            alternatives.push({...describe(candidate), logprob: Math.log(probability)});
        }
        const probability = probabilities.get(token) ?? 0;
        return {...describe(token), logprob: probability > 0 ? Math.log(probability) : UNLIKELY_LOGPROB, top: alternatives};
    }

    private grammarState(grammar: LlamaGrammar) {
        return new LlamaGrammarEvaluationState({model: this.options.sequence.model, grammar});
    }

    private async finish(end: GenerationEnd): Promise<false> {
        this.end = end;
        if (this.calls === undefined)
            this.show(this.options.release.finish());
        else if (end !== 'abort')
            // Tokens of a call the end cut short (the engine's opening included): announced, never sent, so every
            // token generated is sent or announced (a requester holds a peer to that, docs/peer-protocol.md "Jobs channel").
            this.announce(this.calls);
        await this.iterator?.return();
        return false;
    }

    private show({text, tokens}: Release) {
        this.text += text;
        this.shownTokens += tokens.length;
        if (tokens.length === 0)
            return;
        if (this.options.logprobs === undefined || this.heldLogprobs.length < tokens.length)
            return this.options.onText(text, tokens);
        const logprobs = this.heldLogprobs.splice(0, tokens.length);
        this.logprobs.push(...logprobs);
        this.options.onText(text, tokens, {logprobs});
    }
}
