import {readFile} from 'node:fs/promises';
import {dirname, join} from 'node:path';
import {fileURLToPath} from 'node:url';
import {TokenPredictor, type LlamaContextSequence, type Token} from 'node-llama-cpp';
import type {Drafter, SpeculationCounts} from '../../../core/inference-types.js';
import {SHARED_PROMPT_CHUNK_TOKENS} from '../decode-loop.js';
import {DraftLength, type PassCosts} from './draft-length.js';
import {NgramLookup} from './ngram-lookup.js';

export interface SpeculatorOptions {
    /** The model's pass costs, shared by its sequences. */
    costs: PassCosts,
    /** This slot's sequence of the draft model, when the model has one. Defaults to none: lookup only. */
    draftSequence?: LlamaContextSequence,
    /** Bounds of the tokens drafted for one pass. Defaults to DraftLength's. */
    draftTokens?: {min?: number, max?: number}
}

/**
 * Whether this node-llama-cpp keeps more than one drafted token per pass: 3.21.1 keeps one unless the install step
 * fixed it (scripts/patch-node-llama-cpp.mjs; docs/architecture.md, "Speculative decoding").
 */
export function keepsSeveralDrafts(): Promise<boolean> {
    // Read once per process: every model of the engine loads the same node-llama-cpp.
    severalDrafts ??= (async () => {
        try {
            const entry = fileURLToPath(import.meta.resolve('node-llama-cpp'));
            const source = await readFile(join(dirname(entry), 'evaluator', 'LlamaContext', 'LlamaContext.js'), 'utf8');
            return !source.includes('validatedTokens.at(-1)') || source.includes('validatedTokens.push(');
        } catch {
            return false;
        }
    })();
    return severalDrafts;
}

let severalDrafts: Promise<boolean> | undefined;

/** A draft model this few tokens behind the text drafts at about the cost it has when drafting every pass. */
const STEADY_CATCH_UP = 4;
/** Drafts a new request's acceptance prior weighs as: a few passes of its own outweigh it. */
const PRIOR_WEIGHT = 4;
/**
 * A pass that evaluated at most this many tokens of a prompt is timed as one that verified as many drafts: the cost
 * line's slope is known from a request's first pass.
 */
const TIMED_PROMPT_TOKENS = 256;

/** One request's speculation. */
interface Plan {
    drafter: Drafter,
    length: DraftLength,
    /** Its counts but the tokens generated, which the generation knows (countsFor). */
    counts: Omit<SpeculationCounts, 'tokens'>
}

/**
 * Drafts tokens for one sequence of the target model, which node-llama-cpp verifies in one pass with the token it
 * samples itself, keeping a draft only where its own sample agrees, so the text is drawn from the target's
 * distribution (docs/architecture.md, "Speculative decoding"). Unlike node-llama-cpp's own predictors it drafts
 * only when asked, before a step (`prepare`), so that every sequence of the step still decodes in one batch, and it
 * drafts as many tokens as pay (DraftLength).
 */
export class Speculator extends TokenPredictor {
    private plan: Plan | undefined;
    /** The tokens the target sequence holds or is about to evaluate, as node-llama-cpp told them. */
    private history: Token[] = [];
    /** Tokens added to `history` by `prepare` before node-llama-cpp pushes them. */
    private early: Token[] = [];
    private lookup: NgramLookup | undefined;
    private target: LlamaContextSequence | undefined;
    private prepared: Token[] | undefined;
    /**
     * The pass under way: when it started, the target's prediction counters before it, and for an evaluation's first
     * pass the tokens it evaluated beyond the one a pass takes (no drafts there to count).
     */
    private pass: {startedAt: number, validated: number, refuted: number, promptExtra?: number} | undefined;
    /** Tokens the evaluation's first pass takes; undefined once it is under way. */
    private promptTokens: number | undefined;
    /** A draft failed: this request drafts no more. */
    private failed = false;
    /** Tokens a draft was wanted for while the draft model was still catching up on the text. */
    private wanted: number | undefined;

    constructor(private readonly options: SpeculatorOptions) {
        super();
    }

    /** Starts a request: speculates with `drafter`, or not at all (undefined). */
    begin(drafter: Drafter | undefined) {
        this.plan = drafter === undefined || (drafter === 'draft' && this.options.draftSequence === undefined)
            ? undefined
            : {drafter, length: new DraftLength(this.options.costs, {
                // A new request expects what the model's recent ones met.
                ...(this.options.costs.acceptance !== undefined && {prior: {acceptance: this.options.costs.acceptance, weight: PRIOR_WEIGHT}}),
                ...(this.options.draftTokens?.min !== undefined && {minTokens: this.options.draftTokens.min}),
                ...(this.options.draftTokens?.max !== undefined && {maxTokens: this.options.draftTokens.max})
            }), counts: {drafter, passes: 0, drafted: 0, accepted: 0}};
        this.prepared = undefined;
        this.pass = undefined;
        this.failed = false;
        this.wanted = undefined;
    }

    /** The request's counts, with the tokens it generated; undefined where it did not speculate. */
    countsFor(tokens: number): SpeculationCounts | undefined {
        return this.plan === undefined ? undefined : {...this.plan.counts, tokens};
    }

    get active() {
        return this.plan !== undefined;
    }

    reset({targetSequence, stateTokens}: {targetSequence: LlamaContextSequence, stateTokens: Token[]}) {
        this.target = targetSequence;
        this.prepared = undefined;
        this.pass = undefined;
        this.early = [];
        // The first pass of an evaluation takes its whole input: timed as verifying that many tokens, no acceptance.
        this.promptTokens = Math.max(1, stateTokens.length - targetSequence.nextTokenIndex);
        if (this.plan === undefined)
            return;
        this.history = stateTokens.slice();
        if (this.plan.drafter === 'lookup')
            this.indexHistory();
    }

    pushTokens(tokens: Token[]) {
        if (this.plan === undefined)
            return;
        let index = 0;
        while (index < tokens.length && this.early.length > 0 && this.early[0] === tokens[index]) {
            this.early.shift();
            index++;
        }
        if (this.early.length > 0) {
            // Not the token prepare() drafted after: forget it, and index again from what node-llama-cpp says.
            this.history.splice(this.history.length - this.early.length);
            this.early = [];
            if (this.lookup !== undefined)
                this.indexHistory();
        }
        this.append(tokens.slice(index));
    }

    /**
     * Drafts the tokens for the next pass, which will follow `last` (the token just yielded, not yet pushed), at
     * most `limit` of them. A draft that fails ends this request's speculation, not the request.
     */
    async prepare(last: Token, limit: number): Promise<void> {
        const plan = this.plan;
        if (plan === undefined || this.target === undefined)
            return;
        this.append([last]);
        this.early.push(last);
        // A draft the draft model is still catching up for goes on; otherwise the length decides.
        const count = Math.min(this.wanted ?? (this.failed ? 0 : plan.length.next(limit)), Math.max(0, limit));
        this.wanted = undefined;
        this.prepared = [];
        if (count === 0)
            return;
        const startedAt = performance.now();
        try {
            if (plan.drafter === 'lookup') {
                this.prepared = this.lookup!.predict(count) as Token[];
                this.options.costs.recordDraft(this.prepared.length, performance.now() - startedAt);
                return;
            }
            const drafted = await this.draft(count);
            if (drafted === undefined) {
                this.wanted = count;
                return;
            }
            this.prepared = drafted.tokens;
            // Only a draft from a text nearly caught up tells what drafting costs when it runs every pass.
            if (drafted.caughtUp <= STEADY_CATCH_UP)
                this.options.costs.recordDraft(this.prepared.length, performance.now() - startedAt);
        } catch {
            this.failed = true;
        }
    }

    predictTokens(): Token[] {
        const drafted = this.prepared ?? [];
        this.prepared = undefined;
        if (this.plan !== undefined && this.target !== undefined) {
            this.plan.counts.passes++;
            const {validated, refuted} = this.target.tokenPredictions;
            const prompt = this.promptTokens;
            this.promptTokens = undefined;
            this.pass = prompt === undefined ? {startedAt: performance.now(), validated, refuted}
                : prompt - 1 <= TIMED_PROMPT_TOKENS ? {startedAt: performance.now(), validated, refuted, promptExtra: prompt - 1} : undefined;
        }
        return drafted;
    }

    /** The target yielded a token: when that ended a pass, its drafts kept and its cost are recorded. */
    settle() {
        const {plan, pass, target} = this;
        if (plan === undefined || target === undefined || pass === undefined)
            return;
        this.pass = undefined;
        if (pass.promptExtra !== undefined) {
            this.options.costs.recordPass(pass.promptExtra, performance.now() - pass.startedAt);
            return;
        }
        const {validated, refuted} = target.tokenPredictions;
        const accepted = validated - pass.validated;
        const drafted = accepted + refuted - pass.refuted;
        plan.counts.drafted += drafted;
        plan.counts.accepted += accepted;
        plan.length.record(drafted, accepted, performance.now() - pass.startedAt);
    }

    override stop() {
        this.prepared = undefined;
    }

    /** Lookup's index of the history, built anew. */
    private indexHistory() {
        this.lookup = new NgramLookup();
        this.lookup.push(this.history);
    }

    private append(tokens: readonly Token[]) {
        this.history.push(...tokens);
        this.lookup?.push(tokens);
    }

    /**
     * The draft model's greedy continuation of the history, and how many tokens of it the draft model had to read
     * first. Its sequence keeps what it holds in common with the history; a longer way behind (a new prompt, the
     * text since the last probe) is read a chunk per step, as the target reads prompts, and then undefined: the
     * draft comes on a later step.
     */
    private async draft(count: number): Promise<{tokens: Token[], caughtUp: number} | undefined> {
        const sequence = this.options.draftSequence!;
        const history = this.history;
        if (history.length + count >= sequence.context.contextSize)
            return {tokens: [], caughtUp: 0};
        await sequence.adaptStateToTokens(history.slice(0, -1), false);
        const behind = history.length - 1 - sequence.nextTokenIndex;
        if (behind > SHARED_PROMPT_CHUNK_TOKENS) {
            await sequence.evaluateWithoutGeneratingNewTokens(history.slice(sequence.nextTokenIndex, sequence.nextTokenIndex + SHARED_PROMPT_CHUNK_TOKENS));
            return undefined;
        }
        const tokens: Token[] = [];
        for await (const token of sequence.evaluate(history.slice(sequence.nextTokenIndex), {temperature: 0})) {
            tokens.push(token);
            if (tokens.length >= count)
                break;
        }
        return {tokens, caughtUp: behind};
    }
}
