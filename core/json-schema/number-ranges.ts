import {charClass, choice, literal, repeat, sequence, type GrammarNode} from './grammar-node.js';

/**
 * Grammars for JSON numbers within bounds, digit by digit: JSON has no exponent-free way to say "an integer from
 * 0 to 9", so the bounds become alternatives over digit ranges (docs/architecture.md, "Structured output").
 */

/** Most digits written for an integer part: 15 keeps every value a safe JavaScript integer. */
export const MAX_INTEGER_DIGITS = 15;
export const MAX_SAFE_MAGNITUDE = 10 ** MAX_INTEGER_DIGITS - 1;
/** Most digits after the point. */
export const MAX_FRACTION_DIGITS = 15;

const DIGIT = charClass('0-9');

/** Numbers with `low` and `high` digits of equal length: the decimal strings between them, inclusive. */
function sameLengthRange(low: string, high: string): GrammarNode {
    if (low === high)
        return literal(low);
    const rest = low.length - 1;
    const [l, h] = [Number(low[0]), Number(high[0])];
    if (rest === 0)
        return charClass(l === h ? String(l) : `${l}-${h}`);
    if (l === h)
        return sequence(literal(low[0]!), sameLengthRange(low.slice(1), high.slice(1)));
    if (/^0*$/.test(low.slice(1)) && /^9*$/.test(high.slice(1)))
        return sequence(charClass(`${l}-${h}`), repeat(DIGIT, rest, rest));
    const options = [sequence(literal(low[0]!), sameLengthRange(low.slice(1), '9'.repeat(rest)))];
    if (h - l >= 2)
        options.push(sequence(charClass(l + 1 === h - 1 ? String(l + 1) : `${l + 1}-${h - 1}`), repeat(DIGIT, rest, rest)));
    options.push(sequence(literal(high[0]!), sameLengthRange('0'.repeat(rest), high.slice(1))));
    return choice(...options);
}

/** The integers low..high (0 ≤ low ≤ high), written without leading zeros. */
function naturalRange(low: number, high: number): GrammarNode {
    const options: GrammarNode[] = [];
    for (let digits = String(low).length; digits <= String(high).length; digits++) {
        const from = Math.max(low, digits === 1 ? 0 : 10 ** (digits - 1));
        const to = Math.min(high, 10 ** digits - 1);
        if (from <= to)
            options.push(sameLengthRange(String(from), String(to)));
    }
    return choice(...options);
}

/** The integers low..high inclusive (low ≤ high, both within ±MAX_SAFE_MAGNITUDE); negative zero is never written. */
export function integerRange(low: number, high: number): GrammarNode {
    const options: GrammarNode[] = [];
    if (low < 0)
        options.push(sequence(literal('-'), naturalRange(Math.max(1, -high), -low)));
    if (high >= 0)
        options.push(naturalRange(Math.max(0, low), high));
    return choice(...options);
}

export interface NumberBounds {
    minimum?: number,
    maximum?: number,
    exclusiveMinimum?: number,
    exclusiveMaximum?: number
}

/** The integers the bounds allow, clamped to what the grammar writes; null when none. */
export function integerBounds({minimum, maximum, exclusiveMinimum, exclusiveMaximum}: NumberBounds): [number, number] | null {
    const low = Math.max(-MAX_SAFE_MAGNITUDE,
        minimum === undefined ? -Infinity : Math.ceil(minimum),
        exclusiveMinimum === undefined ? -Infinity : Math.floor(exclusiveMinimum) + 1);
    const high = Math.min(MAX_SAFE_MAGNITUDE,
        maximum === undefined ? Infinity : Math.floor(maximum),
        exclusiveMaximum === undefined ? Infinity : Math.ceil(exclusiveMaximum) - 1);
    return low <= high ? [low, high] : null;
}

/** A fraction that is not zero: its last digit is not 0, so `1.0` (an integer-valued number) is never written. */
const FRACTION = sequence(literal('.'), repeat(DIGIT, 0, MAX_FRACTION_DIGITS - 1), charClass('1-9'));

/**
 * Numbers within the bounds, without exponents: the integers between them, and k.f for every integer part k
 * whose whole open interval (k, k+1) lies within them (a subset of the allowed numbers: 0.7 is not written when
 * the bounds are 0.5 and 0.9). null when the bounds leave nothing.
 */
export function numberGrammar(bounds: NumberBounds): GrammarNode | null {
    const lower = Math.max(bounds.minimum ?? -Infinity, bounds.exclusiveMinimum ?? -Infinity);
    const upper = Math.min(bounds.maximum ?? Infinity, bounds.exclusiveMaximum ?? Infinity);
    const options: GrammarNode[] = [];
    const integers = integerBounds(bounds);
    if (integers !== null)
        options.push(integerRange(...integers));
    // k.f with k ≥ 0 lies in (k, k+1): k ≥ lower and k + 1 ≤ upper
    const positiveLow = Math.max(0, Math.ceil(lower));
    const positiveHigh = Math.min(MAX_SAFE_MAGNITUDE, Math.floor(upper) - 1);
    if (positiveLow <= positiveHigh)
        options.push(sequence(naturalRange(positiveLow, positiveHigh), FRACTION));
    // -k.f lies in (-(k+1), -k): -(k+1) ≥ lower and -k ≤ upper
    const negativeLow = Math.max(0, Math.ceil(-upper));
    const negativeHigh = Math.min(MAX_SAFE_MAGNITUDE, Math.floor(-lower) - 1);
    if (negativeLow <= negativeHigh)
        options.push(sequence(literal('-'), naturalRange(negativeLow, negativeHigh), FRACTION));
    return options.length === 0 ? null : choice(...options);
}
