/**
 * Drafting by n-gram lookup (docs/architecture.md, "Speculative decoding"): the text so far, prompt included, is
 * searched for an earlier occurrence of its last few tokens, and what followed that occurrence is proposed. Needs
 * no draft model; it pays on text that repeats its input (quoting, editing code, loops of a small model).
 */

export interface NgramLookupOptions {
    /** Longest suffix looked up; longer matches are tried first. Defaults to 4. */
    maxLength?: number,
    /** Shortest suffix looked up. Defaults to 2: a single token matches too often to predict much. */
    minLength?: number
}

export const ngramLookupDefaults = {maxLength: 4, minLength: 2};

/** An index of the n-grams of a token history, each with where its latest occurrence was followed. */
export class NgramLookup {
    private readonly history: number[] = [];
    /** Per length n (index n - minLength): n-gram → the position that followed its latest occurrence. */
    private readonly continuations: Map<string, number>[];
    private readonly maxLength: number;
    private readonly minLength: number;

    constructor(options: NgramLookupOptions = {}) {
        const {maxLength, minLength} = {...ngramLookupDefaults, ...options};
        if (!Number.isInteger(minLength) || minLength < 1 || !Number.isInteger(maxLength) || maxLength < minLength)
            throw new RangeError(`n-gram lengths must be integers with 1 ≤ minLength ≤ maxLength, got ${minLength}..${maxLength}`);
        this.maxLength = maxLength;
        this.minLength = minLength;
        this.continuations = Array.from({length: maxLength - minLength + 1}, () => new Map());
    }

    get length() {
        return this.history.length;
    }

    /** Appends tokens to the history. */
    push(tokens: readonly number[]) {
        for (const token of tokens) {
            const position = this.history.length;
            // The n-grams that end just before this token are now followed by it.
            for (let n = this.minLength; n <= this.maxLength && n <= position; n++)
                this.continuations[n - this.minLength]!.set(this.key(position - n, position), position);
            this.history.push(token);
        }
    }

    /**
     * Up to `count` tokens that followed the latest earlier occurrence of the longest suffix found. A continuation
     * that runs into the suffix itself goes on with the tokens it proposed: a loop is predicted around and around.
     */
    predict(count: number): number[] {
        const end = this.history.length;
        for (let n = Math.min(this.maxLength, end); n >= this.minLength; n--) {
            const start = this.continuations[n - this.minLength]!.get(this.key(end - n, end));
            if (start === undefined)
                continue;
            const predicted: number[] = [];
            for (let position = start; predicted.length < count; position++)
                predicted.push(position < end ? this.history[position]! : predicted[position - end]!);
            return predicted;
        }
        return [];
    }

    private key(start: number, end: number) {
        return this.history.slice(start, end).join(',');
    }
}
