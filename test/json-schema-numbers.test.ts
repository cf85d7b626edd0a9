import test from 'ava';
import {toGbnf} from '../core/json-schema/grammar-node.js';
import {integerBounds, integerRange, MAX_SAFE_MAGNITUDE, numberGrammar} from '../core/json-schema/number-ranges.js';
import {grammarRegExp} from '../harness/grammar-regexp.js';

test('an integer range accepts exactly the integers in it, written as JSON writes them', (t) => {
    let checked = 0;
    for (let low = -120; low <= 120; low += 7)
        for (let high = low; high <= 130; high += 11) {
            const pattern = grammarRegExp(integerRange(low, high));
            for (let value = -150; value <= 150; value++) {
                if (pattern.test(String(value)) !== (value >= low && value <= high))
                    t.fail(`${low}..${high}: ${value}`);
                checked++;
            }
            for (const malformed of ['-0', '007', '+5', '1e2', '1.0', ''])
                if (pattern.test(malformed))
                    t.fail(`${low}..${high} accepts ${malformed}`);
        }
    t.log(`${checked} values checked`);
    t.pass();
});

test('wide integer ranges hold at their edges, up to 15 digits', (t) => {
    let seed = 7;
    const random = () => {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        return seed / 2 ** 31;
    };
    for (let trial = 0; trial < 300; trial++) {
        const magnitude = 10 ** Math.floor(random() * 15);
        const a = Math.round((random() * 2 - 1) * magnitude);
        const b = Math.round((random() * 2 - 1) * magnitude);
        const [low, high] = [Math.min(a, b), Math.max(a, b)];
        const pattern = grammarRegExp(integerRange(low, high));
        for (const value of [low - 1, low, low + 1, high - 1, high, high + 1, Math.round((low + high) / 2), 0])
            t.is(pattern.test(String(value)), value >= low && value <= high, `${low}..${high}: ${value}`);
    }
    const all = grammarRegExp(integerRange(-MAX_SAFE_MAGNITUDE, MAX_SAFE_MAGNITUDE));
    t.true(all.test(String(MAX_SAFE_MAGNITUDE)));
    t.false(all.test(String(MAX_SAFE_MAGNITUDE + 1)), 'sixteen digits are never written');
});

test('integer bounds: inclusive and exclusive, fractional bounds rounded inwards, empty when nothing fits', (t) => {
    t.deepEqual(integerBounds({minimum: 0, maximum: 9}), [0, 9]);
    t.deepEqual(integerBounds({exclusiveMinimum: 0, exclusiveMaximum: 9}), [1, 8]);
    t.deepEqual(integerBounds({minimum: 0.5, maximum: 9.5}), [1, 9]);
    t.deepEqual(integerBounds({exclusiveMinimum: -2.5, exclusiveMaximum: 3.5}), [-2, 3]);
    t.deepEqual(integerBounds({minimum: 1, exclusiveMinimum: 3}), [4, MAX_SAFE_MAGNITUDE], 'the stricter bound wins');
    t.deepEqual(integerBounds({}), [-MAX_SAFE_MAGNITUDE, MAX_SAFE_MAGNITUDE]);
    t.is(integerBounds({minimum: 0.2, maximum: 0.8}), null);
});

test('numbers within bounds: every string the grammar writes is a number inside them, and never an exponent', (t) => {
    const cases = [
        {minimum: 0, maximum: 1}, {minimum: -1, maximum: 1}, {exclusiveMinimum: 0, exclusiveMaximum: 1}, {minimum: 0.5, maximum: 2.5},
        {minimum: -2.5, maximum: -0.5}, {exclusiveMinimum: -3, maximum: 3}, {minimum: 10}, {maximum: -10}, {}, {minimum: 0.25, maximum: 0.75}
    ];
    const samples = ['0', '1', '-1', '0.5', '0.25', '-0.5', '-0.75', '1.5', '2.49', '2.5', '2.51', '-2.5', '-3', '-2.9', '3', '2.999',
        '10', '10.5', '9.99', '-10', '-10.5', '-9.5', '1.0', '1e3', '-0', '00.5', '.5', '0.1234567890123456'];
    for (const bounds of cases) {
        const grammar = numberGrammar(bounds);
        if (grammar === null) {
            t.deepEqual(bounds, {minimum: 0.25, maximum: 0.75}, 'only this case leaves nothing the grammar writes');
            continue;
        }
        const pattern = grammarRegExp(grammar);
        for (const sample of samples) {
            if (!pattern.test(sample))
                continue;
            const value = Number(sample);
            const inside = (bounds.minimum === undefined || value >= bounds.minimum) && (bounds.maximum === undefined || value <= bounds.maximum)
                && (bounds.exclusiveMinimum === undefined || value > bounds.exclusiveMinimum) && (bounds.exclusiveMaximum === undefined || value < bounds.exclusiveMaximum);
            t.true(inside, `${JSON.stringify(bounds)} writes ${sample}`);
            t.regex(sample, /^-?(0|[1-9]\d*)(\.\d*[1-9])?$/, 'JSON without exponent, trailing zeros or negative zero');
        }
        const integers = integerBounds(bounds);
        if (integers !== null)
            t.true(pattern.test(String(integers[0])) && pattern.test(String(integers[1])), 'the lowest and highest integers allowed');
    }
    t.regex(toGbnf(numberGrammar({minimum: 0, maximum: 9})!), /\[0-9\]/);
});
