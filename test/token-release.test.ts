import test from 'ava';
import {longestStopPrefixSuffix, TokenRelease, type Release, type TokenReleaseOptions} from '../engine/worker/token-release.js';
import {Prng} from '../engine/demo/prng.js';

/**
 * A byte-level vocabulary, as real tokenizers have: each token is some bytes, and text is the UTF-8 decoding of
 * the context's and the tokens' bytes together, minus the context's own text. 'é' is two byte tokens (200, 201).
 */
const VOCAB = new Map<number, Buffer>([
    [1, Buffer.from('Hel')], [2, Buffer.from('lo')], [3, Buffer.from('\nUs')], [4, Buffer.from('er:')], [5, Buffer.from('ed')],
    [6, Buffer.from(' ')], [7, Buffer.from('\n')], [8, Buffer.from('}')], [9, Buffer.from('abXYcd')], [10, Buffer.from('X')],
    [11, Buffer.from('Y')], [12, Buffer.from('a')], [13, Buffer.from('b')],
    [200, Buffer.from([0xc3])], [201, Buffer.from([0xa9])], [202, Buffer.from([0xff])],
    [210, Buffer.from([0xf0])], [211, Buffer.from([0x9f])], [212, Buffer.from([0x98])], [213, Buffer.from([0x80])], // 😀
    [98, Buffer.alloc(0)], [99, Buffer.alloc(0)] // special tokens: no text
]);

function detokenize(tokens: readonly number[], context: readonly number[]) {
    const bytes = (ids: readonly number[]) => Buffer.concat(ids.map((id) => VOCAB.get(id)!));
    const before = bytes(context).toString('utf8');
    return bytes([...context, ...tokens]).toString('utf8').slice(before.length);
}

function run(tokens: number[], options: Omit<TokenReleaseOptions, 'detokenize'> = {}) {
    const release = new TokenRelease({detokenize, ...options});
    const steps: Release[] = [];
    for (const token of tokens) {
        steps.push(release.push(token));
        if (release.stopped)
            break;
    }
    const last = release.finish();
    return {steps, last, stopped: release.stopped, text: [...steps, last].map((step) => step.text).join(''),
        tokens: [...steps, last].flatMap((step) => step.tokens)};
}

test('without stops every token is shown at once, with its text', (t) => {
    const {steps, text, tokens} = run([1, 2, 6, 5]);
    t.deepEqual(steps.map((step) => step.text), ['Hel', 'lo', ' ', 'ed']);
    t.deepEqual(steps.map((step) => step.tokens), [[1], [2], [6], [5]]);
    t.is(text, 'Hello ed');
    t.deepEqual(tokens, [1, 2, 6, 5]);
});

test('a stop string across tokens ends the text before it; its start is held until it is decided', (t) => {
    const {steps, stopped, text} = run([1, 2, 3, 4, 5], {stopTexts: ['\nUser:']});
    t.deepEqual(steps.map((step) => step.text), ['Hel', 'lo', '', '']);
    t.deepEqual(steps[2]!.tokens, [], '"\\nUs" could begin the stop');
    t.true(stopped);
    t.is(text, 'Hello');
});

test('a held start that does not become the stop is shown with what follows', (t) => {
    const {steps, stopped, text, tokens} = run([1, 3, 5], {stopTexts: ['\nUser:']});
    t.false(stopped);
    t.deepEqual(steps.map((step) => step.text), ['Hel', '', '\nUsed']);
    t.deepEqual(steps[2]!.tokens, [3, 5]);
    t.is(text, 'Hel\nUsed');
    t.deepEqual(tokens, [1, 3, 5]);
});

test('a stop inside one token cuts that token\'s text; the earliest of several stops wins', (t) => {
    t.is(run([9], {stopTexts: ['XY']}).text, 'ab');
    t.is(run([9], {stopTexts: ['cd', 'bX']}).text, 'a');
    t.is(run([10, 11], {stopTexts: ['XY']}).text, '');
});

test('held text is shown when the reply ends for another reason', (t) => {
    const {steps, last, stopped, text} = run([1, 3], {stopTexts: ['\nUser:']});
    t.false(stopped);
    t.is(steps[1]!.text, '');
    t.deepEqual(last, {text: '\nUs', tokens: [3]});
    t.is(text, 'Hel\nUs');
});

test('a special-token stop ends the reply and is not part of it; a sequence is held while it may complete', (t) => {
    const single = run([1, 99, 2], {stopTokens: [[99]]});
    t.true(single.stopped);
    t.deepEqual(single.tokens, [1]);
    t.is(single.text, 'Hel');

    const pair = run([1, 98, 99], {stopTokens: [[98, 99]]});
    t.deepEqual(pair.steps[1], {text: '', tokens: []});
    t.true(pair.stopped);
    t.deepEqual(pair.tokens, [1]);

    const broken = run([1, 98, 2], {stopTokens: [[98, 99]]});
    t.false(broken.stopped);
    t.deepEqual(broken.steps[2]!.tokens, [98, 2]);
    t.is(broken.text, 'Hello');
});

test('an incomplete UTF-8 character is held until its last byte arrives', (t) => {
    const {steps, text} = run([12, 200, 201, 13]);
    t.deepEqual(steps.map((step) => step.text), ['a', '', 'é', 'b']);
    t.deepEqual(steps[2]!.tokens, [200, 201]);
    t.is(text, 'aéb');
});

test('a 4-byte character after held whitespace is held whole: only its own byte tokens count toward the limit', (t) => {
    const {steps, text} = run([12, 6, 210, 211, 212, 213, 8], {trimWhitespaceSuffix: true});
    t.deepEqual(steps.slice(1, 6).map((step) => step.tokens), [[], [], [], [], [6, 210, 211, 212, 213]]);
    t.is(steps[5]!.text, ' \u{1F600}');
    t.is(text, 'a \u{1F600}}');
    t.false(text.includes('\uFFFD'));
});

test('bytes that never form a character are shown after 4 tokens, not held forever', (t) => {
    const {steps} = run([202, 202, 202, 202, 12]);
    t.deepEqual(steps.slice(0, 3).map((step) => step.tokens), [[], [], []]);
    t.deepEqual(steps[3]!.tokens, [202, 202, 202, 202]);
    t.is(steps[3]!.text, '\uFFFD'.repeat(4));
});

test('trimWhitespaceSuffix holds trailing whitespace, shows it when text follows, drops it at the end', (t) => {
    const {steps, last, text} = run([8, 7, 6, 8, 7, 7], {trimWhitespaceSuffix: true});
    t.deepEqual(steps.map((step) => step.text), ['}', '', '', '\n }', '', '']);
    t.deepEqual(last, {text: '', tokens: [7, 7]});
    t.is(text, '}\n }');
});

test('a continuation is context for the first new tokens (a character split across the seam)', (t) => {
    const {steps} = run([201, 12], {precedingTokens: [12, 200]});
    t.is(steps[0]!.text, detokenize([201], [12, 200]));
    t.deepEqual(steps[0]!.tokens, [201]);
});

test('longestStopPrefixSuffix finds the longest end of the text that may begin a stop', (t) => {
    t.is(longestStopPrefixSuffix('abc', ['cde']), 1);
    t.is(longestStopPrefixSuffix('abcd', ['bcdx', 'dx']), 3);
    t.is(longestStopPrefixSuffix('abc', ['abc']), 0, 'a complete stop is not a prefix in waiting');
    t.is(longestStopPrefixSuffix('', ['a']), 0);
    t.is(longestStopPrefixSuffix('aaa', ['aaaa']), 3);
});

test('randomized: shown text is the generation cut at its first stop, and shown tokens spell shown text', (t) => {
    const prng = new Prng(7);
    const ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 200, 201];
    const stopPool = ['\nUser:', 'XY', 'lo\n', 'ab', 'Hello', 'é', 'dX', ' \n'];
    for (let trial = 0; trial < 3000; trial++) {
        const tokens = Array.from({length: 1 + Math.floor(prng.next() * 12)}, () => ids[Math.floor(prng.next() * ids.length)]!);
        const stopTexts = stopPool.filter(() => prng.next() < 0.3);
        const trimWhitespaceSuffix = prng.next() < 0.3;
        const result = run(tokens, {stopTexts, trimWhitespaceSuffix});
        const full = detokenize(tokens, []);
        const cuts = stopTexts.map((stop) => full.indexOf(stop)).filter((index) => index >= 0);
        let expected = cuts.length > 0 ? full.slice(0, Math.min(...cuts)) : full;
        if (trimWhitespaceSuffix)
            expected = expected.trimEnd();
        const label = JSON.stringify({tokens, stopTexts, trimWhitespaceSuffix});
        t.is(result.text, expected, label);
        t.is(result.stopped, cuts.length > 0, label);
        for (const step of result.steps)
            t.false(stopTexts.some((stop) => step.text.includes(stop)), label);
        if (cuts.length === 0) {
            t.deepEqual(result.tokens, tokens, label);
            t.is(detokenize(result.tokens, []).slice(0, expected.length), expected, label);
        }
    }
});

/** Feeds tokens until a call starts; what was shown, and the call's remainder. */
function runToCall(tokens: number[], options: Omit<TokenReleaseOptions, 'detokenize'>) {
    const release = new TokenRelease({detokenize, ...options});
    const steps: Release[] = [];
    for (const token of tokens) {
        steps.push(release.push(token));
        if (release.stopped || release.call !== undefined)
            break;
    }
    return {text: steps.map((step) => step.text).join(''), tokens: steps.flatMap((step) => step.tokens), call: release.call, stopped: release.stopped,
        finish: release.finish()};
}

test('a tool call\'s start is held like a stop; the text before it is shown, whole tokens only', (t) => {
    // 'XY' starts a call: held while it may be starting, then the text before it is the reply's.
    const atBoundary = runToCall([1, 2, 10, 11, 12], {callTexts: ['XY']});
    t.is(atBoundary.text, 'Hello');
    t.deepEqual(atBoundary.tokens, [1, 2]);
    t.deepEqual(atBoundary.call, {remainder: ''});
    t.false(atBoundary.stopped);
    t.deepEqual(atBoundary.finish, {text: '', tokens: []}, 'nothing held is shown after the call starts');

    // Inside a token: 'ab' no whole token spells; it is the remainder, for the caller to give tokens of its own.
    const inside = runToCall([1, 9], {callTexts: ['XY']});
    t.is(inside.text, 'Hel');
    t.deepEqual(inside.call, {remainder: 'ab'});

    // A special token that starts calls is matched as a token.
    const special = runToCall([1, 2, 98, 12], {callTokens: [[98]]});
    t.is(special.text, 'Hello');
    t.deepEqual(special.tokens, [1, 2]);
    t.deepEqual(special.call, {remainder: ''});
});

test('a stop that starts before a call ends the reply; a call that starts first wins over a later stop', (t) => {
    const stopFirst = runToCall([1, 2, 10, 11], {callTexts: ['XY'], stopTexts: ['lo']});
    t.true(stopFirst.stopped);
    t.is(stopFirst.call, undefined);
    t.is(stopFirst.text, 'Hel');
    const callFirst = runToCall([9], {callTexts: ['XY'], stopTexts: ['cd']});
    t.false(callFirst.stopped);
    t.deepEqual(callFirst.call, {remainder: 'ab'});
});

test('text that only begins like a call is shown once it parts from it', (t) => {
    const {text, call} = runToCall([10, 12, 13], {callTexts: ['XY']});
    t.is(call, undefined);
    t.is(text, 'Xab');
});
