/** Text of the given tokens, detokenized after `context` (the tokens before them: leading spaces, multi-byte characters). */
export type Detokenize = (tokens: readonly number[], context: readonly number[]) => string;

export interface TokenReleaseOptions {
    detokenize: Detokenize,
    /** Text that ends the reply and is never shown (a client's `stop`, a template's plain-text turn marker). Defaults to none. */
    stopTexts?: readonly string[],
    /** Token sequences that end the reply (a template's special tokens). Defaults to none. */
    stopTokens?: readonly (readonly number[])[],
    /** Holds whitespace at the end until more text follows, and drops it when the reply ends (JSON grammars). Defaults to `false`. */
    trimWhitespaceSuffix?: boolean,
    /** Tokens already in the reply before this generation (a continuation). Defaults to none. */
    precedingTokens?: readonly number[],
    /**
     * Text that starts a tool call (held like a stop; what precedes it is the reply's text). Defaults to none.
     * A call is looked for only after the stops: a stop that starts first ends the reply.
     */
    callTexts?: readonly string[],
    /** Token sequences that start a tool call (a template's special token). Defaults to none. */
    callTokens?: readonly (readonly number[])[]
}

/** Tokens and their text, shown together: a resumed generation continues after exactly these tokens. */
export interface Release {
    text: string,
    tokens: number[]
}

/** Tokens of context for detokenizing a new piece. */
const DETOKENIZE_CONTEXT_TOKENS = 16;
/** A UTF-8 character spans at most 4 bytes, so at most 4 byte tokens: a longer run of them is not one character. */
const MAX_INCOMPLETE_CHARACTER_TOKENS = 4;
const REPLACEMENT_CHARACTER = '\uFFFD';
const NOTHING: Release = Object.freeze({text: '', tokens: []}) as Release;

/**
 * Decides which generated tokens a client may see. Text is released a whole token at a time, so the tokens sent
 * always spell exactly the text sent; a token is held back while its text could still be the start of a stop
 * sequence, an incomplete UTF-8 character, or (with `trimWhitespaceSuffix`) trailing whitespace.
 */
export class TokenRelease {
    private readonly stopTexts: readonly string[];
    private readonly stopTokens: readonly (readonly number[])[];
    private readonly callTexts: readonly string[];
    private readonly callTokens: readonly (readonly number[])[];
    /** Texts and token sequences that are held while they may be starting. */
    private readonly heldTexts: readonly string[];
    private readonly heldTokens: readonly (readonly number[])[];
    private pending: number[] = [];
    private context: number[];
    private stoppedAt = false;
    /** The stop text that ended the reply; undefined for a stop token, or before a stop. */
    stoppedBy: string | undefined;
    private callStart: {remainder: string} | undefined;

    constructor(private readonly options: TokenReleaseOptions) {
        this.stopTexts = (options.stopTexts ?? []).filter((stop) => stop.length > 0);
        this.stopTokens = (options.stopTokens ?? []).filter((stop) => stop.length > 0);
        this.callTexts = (options.callTexts ?? []).filter((call) => call.length > 0);
        this.callTokens = (options.callTokens ?? []).filter((call) => call.length > 0);
        this.heldTexts = [...this.stopTexts, ...this.callTexts];
        this.heldTokens = [...this.stopTokens, ...this.callTokens];
        this.context = (options.precedingTokens ?? []).slice(-DETOKENIZE_CONTEXT_TOKENS);
    }

    /** A stop sequence was generated: the reply is over. */
    get stopped() {
        return this.stoppedAt;
    }

    /**
     * A tool call started: the reply's text ended where it starts. `remainder` is text before the call that no
     * whole token spells (the call started inside a token): the caller gives it tokens of its own.
     */
    get call() {
        return this.callStart;
    }

    /** Takes the next generated token; returns what may be shown now (possibly nothing). */
    push(token: number): Release {
        if (this.stoppedAt || this.callStart !== undefined)
            throw new Error('TokenRelease: a token after the stop');
        this.pending.push(token);

        const tokenStop = this.stopTokens.find((stop) => endsWith(this.pending, stop));
        if (tokenStop !== undefined) {
            this.stoppedAt = true;
            return this.releaseAll(this.pending.slice(0, -tokenStop.length));
        }
        const tokenCall = this.callTokens.find((call) => endsWith(this.pending, call));
        if (tokenCall !== undefined) {
            this.callStart = {remainder: ''};
            return this.releaseAll(this.pending.slice(0, -tokenCall.length));
        }

        const text = this.detokenize(this.pending);
        const stopIndex = firstIndexOfAny(text, this.stopTexts);
        const callIndex = firstIndexOfAny(text, this.callTexts);
        if (callIndex !== undefined && (stopIndex === undefined || callIndex < stopIndex))
            return this.startCall(text.slice(0, callIndex));
        if (stopIndex !== undefined) {
            this.stoppedAt = true;
            this.stoppedBy = this.stopTexts.find((stop) => text.startsWith(stop, stopIndex));
            // Every pending token went into the stop; the text ends before it.
            const tokens = this.pending;
            this.pending = [];
            return {text: this.trimmed(text.slice(0, stopIndex)), tokens};
        }

        let safeLength = text.length - longestStopPrefixSuffix(text, this.heldTexts);
        if (text.endsWith(REPLACEMENT_CHARACTER) && this.trailingByteTokens() < MAX_INCOMPLETE_CHARACTER_TOKENS)
            safeLength = Math.min(safeLength, text.length - trailingRunLength(text, REPLACEMENT_CHARACTER));
        if (this.options.trimWhitespaceSuffix === true) // whitespace before held text may end the reply too
            safeLength = text.slice(0, safeLength).trimEnd().length;
        const heldTokens = longestTokenStopPrefixSuffix(this.pending, this.heldTokens);
        const releasable = this.pending.length - heldTokens;
        if (safeLength === text.length && releasable === this.pending.length)
            return this.take(this.pending.length, text);
        for (let count = releasable; count > 0; count--) {
            const prefix = this.detokenize(this.pending.slice(0, count));
            if (prefix.length <= safeLength && text.startsWith(prefix))
                return this.take(count, prefix);
        }
        return NOTHING;
    }

    /** The reply ended (end of generation, budget, abort): everything held is shown, trailing whitespace dropped if asked. */
    finish(): Release {
        if (this.stoppedAt || this.callStart !== undefined || this.pending.length === 0)
            return NOTHING;
        return this.releaseAll(this.pending);
    }

    /** The whole tokens that spell the start of `text` are released; the rest of it is the call's remainder. */
    private startCall(text: string): Release {
        for (let count = this.pending.length; count > 0; count--) {
            const prefix = this.detokenize(this.pending.slice(0, count));
            if (text.startsWith(prefix)) {
                this.callStart = {remainder: text.slice(prefix.length)};
                return this.releaseAll(this.pending.slice(0, count));
            }
        }
        this.callStart = {remainder: text};
        this.pending = [];
        return NOTHING;
    }

    private releaseAll(tokens: number[]): Release {
        this.pending = [];
        return {text: this.trimmed(tokens.length === 0 ? '' : this.detokenize(tokens)), tokens};
    }

    private trimmed(text: string) {
        return this.options.trimWhitespaceSuffix === true ? text.trimEnd() : text;
    }

    private take(count: number, text: string): Release {
        const tokens = this.pending.slice(0, count);
        this.pending = this.pending.slice(count);
        this.context = [...this.context, ...tokens].slice(-DETOKENIZE_CONTEXT_TOKENS);
        return {text, tokens};
    }

    /** Pending tokens at the end that are no character by themselves (bytes of one): other held tokens do not count. */
    private trailingByteTokens() {
        let count = 0;
        while (count < this.pending.length && this.options.detokenize([this.pending[this.pending.length - 1 - count]!], []) === REPLACEMENT_CHARACTER)
            count++;
        return count;
    }

    private detokenize(tokens: readonly number[]) {
        return this.options.detokenize(tokens, this.context);
    }
}

function endsWith(tokens: readonly number[], suffix: readonly number[]) {
    if (suffix.length > tokens.length)
        return false;
    const offset = tokens.length - suffix.length;
    return suffix.every((token, index) => tokens[offset + index] === token);
}

function firstIndexOfAny(text: string, needles: readonly string[]) {
    let first: number | undefined;
    for (const needle of needles) {
        const index = text.indexOf(needle);
        if (index >= 0 && (first === undefined || index < first))
            first = index;
    }
    return first;
}

/** Length of the longest end of `text` that is the start of some stop (the stop may still complete). */
export function longestStopPrefixSuffix(text: string, stops: readonly string[]) {
    let longest = 0;
    for (const stop of stops)
        for (let length = Math.min(stop.length - 1, text.length); length > longest; length--)
            if (text.endsWith(stop.slice(0, length))) {
                longest = length;
                break;
            }
    return longest;
}

/** Tokens at the end of `tokens` that are the start of some token stop. */
function longestTokenStopPrefixSuffix(tokens: readonly number[], stops: readonly (readonly number[])[]) {
    let longest = 0;
    for (const stop of stops)
        for (let length = Math.min(stop.length - 1, tokens.length); length > longest; length--)
            if (endsWith(tokens, stop.slice(0, length))) {
                longest = length;
                break;
            }
    return longest;
}

function trailingRunLength(text: string, character: string) {
    let length = 0;
    while (length < text.length && text[text.length - 1 - length] === character)
        length++;
    return length;
}
