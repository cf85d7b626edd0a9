import {execFile} from 'node:child_process';
import {link, mkdtemp, readdir, readFile, rm, writeFile} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {dirname, join} from 'node:path';
import {fileURLToPath} from 'node:url';
import {promisify} from 'node:util';
import test, {type ExecutionContext} from 'ava';
import {DraftLength, PassCosts, draftLengthDefaults, expectedTokens} from '../engine/worker/speculation/draft-length.js';
import {NgramLookup, type NgramLookupOptions} from '../engine/worker/speculation/ngram-lookup.js';
import {SeededRandom} from '../harness/seeded-random.js';

/**
 * Speculative decoding's pure parts (docs/architecture.md, "Speculative decoding"): n-gram lookup, the draft length
 * against simulated passes, and the install step that fixes node-llama-cpp 3.21.1's check of drafted tokens.
 */

function lookupOf(tokens: number[], options: NgramLookupOptions = {}) {
    const lookup = new NgramLookup(options);
    lookup.push(tokens);
    return lookup;
}

test('lookup: proposes what followed the earlier occurrence of the suffix', (t) => {
    const lookup = lookupOf([1, 2, 3, 4, 5, 9, 1, 2]);
    t.deepEqual(lookup.predict(3), [3, 4, 5]);
    t.deepEqual(lookup.predict(1), [3]);
    t.is(lookup.length, 8);
});

test('lookup: the longest suffix found wins over a shorter one that occurred later', (t) => {
    // [1, 2, 3] was followed by 9; [2, 3], later, by 8.
    const history = [1, 2, 3, 9, 7, 2, 3, 8, 1, 2, 3];
    t.deepEqual(lookupOf(history).predict(1), [9]);
    // Without lengths above 2, [2, 3]'s latest occurrence is all there is.
    t.deepEqual(lookupOf(history, {maxLength: 2}).predict(1), [8]);
});

test('lookup: of several occurrences of the suffix, the latest wins', (t) => {
    const lookup = lookupOf([1, 2, 3, 5, 1, 2, 4, 6, 1, 2]);
    t.deepEqual(lookup.predict(2), [4, 6]);
    lookup.push([7, 1, 2]);
    t.deepEqual(lookup.predict(2), [7, 1], 'now the occurrence just before, which ran into the suffix');
});

test('lookup: suffixes shorter than minLength are not looked up, longer than maxLength not either', (t) => {
    // Only the last token occurred before: below the default minLength of 2.
    t.deepEqual(lookupOf([3, 7, 5, 3]).predict(2), []);
    t.deepEqual(lookupOf([3, 7, 5, 3], {minLength: 1}).predict(2), [7, 5]);
    // The whole suffix of 5 occurred first; its last 4 tokens occurred again later, followed by something else.
    const history = [1, 2, 3, 4, 5, 10, 2, 3, 4, 5, 20, 1, 2, 3, 4, 5];
    t.deepEqual(lookupOf(history, {maxLength: 5}).predict(1), [10]);
    t.deepEqual(lookupOf(history, {maxLength: 4}).predict(1), [20]);
    // minLength above the only match's length: nothing.
    t.deepEqual(lookupOf([8, 9, 1, 2, 8, 9], {minLength: 3, maxLength: 4}).predict(2), []);
    t.deepEqual(lookupOf([8, 9, 1, 2, 8, 9], {minLength: 2, maxLength: 4}).predict(2), [1, 2]);
});

test('lookup: no match, an empty or too short history: nothing proposed', (t) => {
    t.deepEqual(lookupOf([1, 2, 3, 4, 5, 6]).predict(4), []);
    t.deepEqual(new NgramLookup().predict(4), []);
    t.deepEqual(lookupOf([1]).predict(4), []);
    t.deepEqual(lookupOf([1, 1]).predict(4), [], 'the suffix itself is no earlier occurrence');
    t.deepEqual(lookupOf([1, 1, 1]).predict(3), [1, 1, 1]);
});

test('lookup: a continuation that runs into the suffix goes on with its own proposals, around the loop', (t) => {
    t.deepEqual(lookupOf([1, 2, 3, 1, 2]).predict(7), [3, 1, 2, 3, 1, 2, 3]);
    // Period 1 and a loop after a prefix that is not part of it.
    t.deepEqual(lookupOf([9, 8, 5, 5, 5]).predict(4), [5, 5, 5, 5]);
    t.deepEqual(lookupOf([9, 4, 6, 7, 4, 6, 7, 4, 6]).predict(8), [7, 4, 6, 7, 4, 6, 7, 4]);
    // The proposals are what the history would be if it went on as it did: pushing them predicts the same again.
    const lookup = lookupOf([5, 1, 2, 3, 4, 1, 2]);
    const proposed = lookup.predict(10);
    t.deepEqual(proposed, [3, 4, 1, 2, 3, 4, 1, 2, 3, 4]);
    lookup.push(proposed.slice(0, 3));
    t.deepEqual(lookup.predict(7), proposed.slice(3));
});

test('lookup: pushing a history in pieces indexes it as pushing it at once', (t) => {
    const random = new SeededRandom(24);
    for (let round = 0; round < 50; round++) {
        const history = Array.from({length: random.int(0, 60)}, () => random.int(0, 4));
        const minLength = random.int(1, 3);
        const options = {minLength, maxLength: random.int(minLength, 6)};
        const whole = lookupOf(history, options);
        const pieces = new NgramLookup(options);
        for (let at = 0; at < history.length;) {
            const size = random.int(0, 5);
            pieces.push(history.slice(at, at + size));
            at += size;
            // Every prefix predicts what a lookup of that prefix at once predicts.
            const prefix = history.slice(0, Math.min(at, history.length));
            t.deepEqual(pieces.predict(5), lookupOf(prefix, options).predict(5));
        }
        t.is(pieces.length, whole.length);
        t.deepEqual(pieces.predict(9), whole.predict(9));
    }
});

test('lookup: predictions agree with a brute-force search of the history', (t) => {
    const random = new SeededRandom(7);
    const bruteForce = (history: number[], count: number, minLength: number, maxLength: number) => {
        const end = history.length;
        for (let n = Math.min(maxLength, end); n >= minLength; n--) {
            const suffix = history.slice(end - n).join(',');
            for (let start = end - 1; start >= n; start--) {
                if (history.slice(start - n, start).join(',') !== suffix)
                    continue;
                const extended = history.slice();
                while (extended.length < end + count)
                    extended.push(extended[extended.length - (end - start)]!);
                return extended.slice(end);
            }
        }
        return [];
    };
    for (let round = 0; round < 300; round++) {
        const history = Array.from({length: random.int(0, 40)}, () => random.int(0, random.pick([1, 3, 8])));
        const minLength = random.int(1, 3);
        const maxLength = random.int(minLength, 5);
        const count = random.int(0, 12);
        t.deepEqual(lookupOf(history, {minLength, maxLength}).predict(count), bruteForce(history, count, minLength, maxLength),
            JSON.stringify({history, minLength, maxLength, count}));
    }
});

test('lookup: predict(0) proposes nothing, match or not', (t) => {
    t.deepEqual(lookupOf([1, 2, 3, 1, 2]).predict(0), []);
    t.deepEqual(lookupOf([1, 2, 3]).predict(0), []);
});

test('lookup: lengths must be integers with 1 ≤ minLength ≤ maxLength', (t) => {
    for (const options of [{minLength: 0}, {minLength: -1}, {maxLength: 1}, {minLength: 3, maxLength: 2}, {minLength: 1.5},
        {maxLength: 2.5}, {minLength: Number.NaN}, {maxLength: Number.POSITIVE_INFINITY}, {minLength: 5}])
        t.throws(() => new NgramLookup(options), {instanceOf: RangeError, message: /1 ≤ minLength ≤ maxLength/}, JSON.stringify(options));
    t.notThrows(() => new NgramLookup({minLength: 1, maxLength: 1}));
    t.notThrows(() => new NgramLookup({minLength: 4}));
});

test('expectedTokens: one token without acceptance, k + 1 with certain acceptance, the geometric sum between', (t) => {
    for (let k = 0; k <= 12; k++) {
        t.is(expectedTokens(0, k), 1);
        t.is(expectedTokens(1, k), k + 1);
    }
    t.is(expectedTokens(0.5, 0), 1);
    t.is(expectedTokens(0.5, 1), 1.5);
    t.is(expectedTokens(0.5, 3), 1.875);
    t.true(Math.abs(expectedTokens(0.8, 2) - 2.44) < 1e-12);
    t.true(Math.abs(expectedTokens(0.9, 12) - (1 - 0.9 ** 13) / 0.1) < 1e-12);
    const random = new SeededRandom(3);
    for (let round = 0; round < 200; round++) {
        const p = random.next();
        const k = random.int(0, 20);
        let sum = 0;
        for (let i = 0; i <= k; i++)
            sum += p ** i;
        t.true(Math.abs(expectedTokens(p, k) - sum) < 1e-9 * sum, `p ${p}, k ${k}`);
        t.true(expectedTokens(p, k + 1) >= expectedTokens(p, k));
    }
});

/** Costs that measured passes of 0..6 drafted tokens, each exactly a + b·k. */
function measuredCosts(a: number, b: number) {
    const costs = new PassCosts();
    for (let round = 0; round < 3; round++) {
        for (let k = 0; k <= 6; k++)
            costs.recordPass(k, a + b * k);
    }
    return costs;
}

const near = (actual: number, expected: number, tolerance = 1e-6) => Math.abs(actual - expected) <= tolerance * Math.max(1, Math.abs(expected));

test('pass costs: the line of exact passes is theirs; before any pass a prior; one length alone gives the prior share', (t) => {
    const unmeasured = new PassCosts();
    t.false(unmeasured.measured);
    t.deepEqual(unmeasured.line(), {passMs: 1, verifyMs: 0.25});
    const costs = measuredCosts(100, 1);
    t.true(costs.measured);
    const {passMs, verifyMs} = costs.line();
    t.true(near(passMs, 100) && near(verifyMs, 1), `${passMs} ${verifyMs}`);
    t.true(near(costs.estimate(5), 105));
    // Drafting adds its own cost per token.
    costs.recordDraft(4, 8);
    t.true(near(costs.estimate(5), 115));
    // Passes that never drafted: their mean, and a verified token assumed a quarter of a pass.
    const undrafted = new PassCosts();
    for (let round = 0; round < 5; round++)
        undrafted.recordPass(0, 40);
    t.true(near(undrafted.line().passMs, 40) && near(undrafted.line().verifyMs, 10));
    // Measurements that are not durations are ignored, and so are drafts of nothing.
    const ignored = measuredCosts(100, 1);
    ignored.recordPass(3, Number.NaN);
    ignored.recordPass(3, -1);
    ignored.recordPass(3, Number.POSITIVE_INFINITY);
    ignored.recordDraft(0, 5);
    ignored.recordDraft(2, Number.NaN);
    t.deepEqual(ignored.line(), measuredCosts(100, 1).line());
    t.is(ignored.estimate(2), measuredCosts(100, 1).estimate(2));
});

test('pass costs: a line steeper than its data keeps a positive intercept; older passes fade', (t) => {
    const steep = new PassCosts();
    steep.recordPass(0, 1);
    steep.recordPass(4, 100);
    const line = steep.line();
    t.true(line.passMs > 0 && line.verifyMs >= 0);
    // A pipeline that got faster: after a few dozen passes the line is the new one.
    const costs = measuredCosts(100, 1);
    for (let round = 0; round < 10; round++) {
        for (let k = 0; k <= 6; k++)
            costs.recordPass(k, 10 + 2 * k);
    }
    t.true(near(costs.line().passMs, 10, 0.05) && near(costs.line().verifyMs, 2, 0.05), JSON.stringify(costs.line()));
});

test('draft length: each `preferred` is the best k for the estimates; every 8th pass a quarter more, every 16th a quarter fewer', (t) => {
    // p = 1/2 on a 100 ms pass with 1 ms per token: k = 5 yields the most tokens per ms.
    const length = new DraftLength(measuredCosts(100, 1));
    t.is(length.acceptance, 0.5);
    const rates = Array.from({length: 13}, (_, k) => expectedTokens(0.5, k) / (100 + k));
    t.is(rates.indexOf(Math.max(...rates)), 5);
    const chosen = Array.from({length: 32}, () => length.next());
    // A quarter of 5, rounded up: 2.
    const expected = Array.from({length: 32}, (_, index) => (index + 1) % 16 === 0 ? 3 : (index + 1) % 8 === 0 ? 7 : 5);
    t.deepEqual(chosen, expected);
    t.is(length.preferred, 5);
    // Exploring stays within the bounds: one more than the most is the most, one fewer than one is one.
    const atMost = new DraftLength(measuredCosts(100, 1), {maxTokens: 5});
    t.true(Array.from({length: 16}, () => atMost.next()).every((k, index) => k === (index === 15 ? 3 : 5)));
    const cheapOne = new DraftLength(measuredCosts(3, 2), {prior: {acceptance: 0.8, weight: 4}});
    t.deepEqual(Array.from({length: 16}, () => cheapOne.next()), Array.from({length: 16}, (_, index) => index === 7 ? 2 : 1));
});

test('draft length: a pass that drafted nothing feeds only the cost line', (t) => {
    const costs = new PassCosts();
    const direct = new PassCosts();
    const length = new DraftLength(costs, {prior: {acceptance: 0.7, weight: 4}});
    for (const ms of [50, 52, 48]) {
        length.record(0, 0, ms);
        length.record(0, 3, ms);
        direct.recordPass(0, ms);
        direct.recordPass(0, ms);
    }
    t.is(length.acceptance, 0.7);
    t.deepEqual(costs.line(), direct.line());
    // A pass that drafted does move the estimate, and keeps no more than it drafted.
    length.record(2, 5, 60);
    t.true(near(length.acceptance, (0.7 * 4 * 0.9 + 2) / (4 * 0.9 + 2)));
    length.record(3, 0, 60);
    t.true(length.acceptance < 0.7);
});

test('draft length: while drafting does not pay it probes, backing off to 8× the interval; a probe after which drafting pays resets it', (t) => {
    // A CPU-bound pass (3 ms, 2 ms per verified token) and no acceptance: no k pays.
    const length = new DraftLength(measuredCosts(3, 2), {prior: {acceptance: 0, weight: 4}});
    const probes: number[] = [];
    let pass = 0;
    /** Runs until the next probe, which keeps `kept` of its drafts; returns the passes since the last one. */
    const untilProbe = (kept: number, limit = Infinity) => {
        const from = pass;
        for (;;) {
            const k = length.next(limit);
            pass++;
            if (k > 0) {
                t.is(k, Math.min(2, limit), 'a probe drafts probeTokens');
                length.record(k, kept, 3 + 2 * k);
                probes.push(pass);
                return pass - from;
            }
            length.record(0, 0, 3);
        }
    };
    t.deepEqual([untilProbe(0), untilProbe(0), untilProbe(0), untilProbe(0), untilProbe(0), untilProbe(0)], [16, 32, 64, 128, 128, 128]);
    t.is(length.preferred, 0);
    // Drafts kept, yet drafting still does not pay here: the probes stay 128 apart (a draft model catches up on the
    // text since its last draft at each one).
    t.deepEqual([untilProbe(2), untilProbe(1)], [128, 128]);
    t.is(probes.length, 8);
    // A probe that drafted nothing (lookup found no match) tells nothing: the interval stays.
    const quiet = new DraftLength(measuredCosts(3, 2), {prior: {acceptance: 0, weight: 4}});
    const gaps: number[] = [];
    for (let passes = 1; gaps.length < 3; passes++) {
        const k = quiet.next();
        quiet.record(0, 0, 3);
        if (k > 0) {
            gaps.push(passes);
            passes = 0;
        }
    }
    t.deepEqual(gaps, [16, 16, 16]);
    // A limit of one: the probe drafts one.
    const limited = new DraftLength(measuredCosts(3, 2), {prior: {acceptance: 0, weight: 4}});
    const ks = Array.from({length: 16}, () => limited.next(1));
    t.deepEqual(ks, [...Array(15).fill(0), 1]);
    // Where a probe's kept drafts make drafting pay (a 100 ms pass), it drafts at once, and later probes come every 16
    // passes again.
    const network = new DraftLength(measuredCosts(100, 1), {prior: {acceptance: 0, weight: 4}});
    const until = () => {
        for (let passes = 1; ; passes++) {
            const k = network.next();
            if (k > 0)
                return {passes, k};
            network.record(0, 0, 100);
        }
    };
    t.like(until(), {passes: 16, k: 2});
    network.record(2, 0, 102);
    t.like(until(), {passes: 32, k: 2});
    network.record(2, 2, 102);
    t.like(until(), {passes: 1});
    t.true(network.preferred > 0);
    for (let pass = 0; pass < 40 && network.next() > 0; pass++)
        network.record(3, 0, 103);
    t.is(network.preferred, 0, 'refused drafts bring it back to none');
    // 16 passes after the last one that drafted (the loop above took the first of them).
    t.like(until(), {passes: 15, k: 2});
    // With no room to draft (a limit of 0) there is no probe, and the next pass with room probes.
    const zero = new DraftLength(measuredCosts(3, 2), {prior: {acceptance: 0, weight: 4}});
    t.deepEqual(Array.from({length: 20}, () => zero.next(0)), Array(20).fill(0));
    t.is(zero.next(), 2);
});

test('draft length: the probes\' back-off is the model\'s: a new request on the same costs goes on from it', (t) => {
    const costs = measuredCosts(3, 2);
    const gapsOf = (length: DraftLength, probes: number) => {
        const gaps: number[] = [];
        for (let passes = 1; gaps.length < probes; passes++) {
            const k = length.next();
            length.record(k, 0, 3 + 2 * k);
            if (k > 0) {
                gaps.push(passes);
                passes = 0;
            }
        }
        return gaps;
    };
    t.deepEqual(gapsOf(new DraftLength(costs, {prior: {acceptance: 0, weight: 4}}), 3), [16, 32, 64]);
    t.deepEqual(gapsOf(new DraftLength(costs, {prior: {acceptance: 0, weight: 4}}), 2), [128, 128]);
    t.deepEqual(gapsOf(new DraftLength(measuredCosts(3, 2), {prior: {acceptance: 0, weight: 4}}), 1), [16], 'another model starts afresh');
});

test('draft length: never more than the limit or maxTokens, at least minTokens within the limit', (t) => {
    const random = new SeededRandom(11);
    for (let round = 0; round < 40; round++) {
        const maxTokens = random.int(0, 16);
        const minTokens = random.int(0, 4);
        const a = random.pick([1, 3, 20, 100]);
        const b = random.pick([0.1, 1, 2, 5]);
        const p = random.next();
        const length = new DraftLength(measuredCosts(a, b), {maxTokens, minTokens, probeInterval: random.int(1, 20)});
        for (let step = 0; step < 200; step++) {
            const limit = random.pick([Number.POSITIVE_INFINITY, random.int(-2, 20), random.int(0, 20) + random.next()]);
            const k = length.next(limit);
            const room = Math.max(0, Math.min(maxTokens, Math.floor(limit)));
            t.true(Number.isInteger(k) && k >= Math.min(minTokens, room) && k <= room, JSON.stringify({maxTokens, minTokens, limit, k}));
            let accepted = 0;
            while (accepted < k && random.chance(p))
                accepted++;
            length.record(k, accepted, a + b * k);
        }
    }
});

test('draft length: minTokens drafts where nothing pays, maxTokens caps where everything does', (t) => {
    const forced = new DraftLength(measuredCosts(3, 2), {minTokens: 3, prior: {acceptance: 0, weight: 4}});
    for (let pass = 0; pass < 100; pass++) {
        const k = forced.next();
        t.is(k, 3);
        forced.record(k, 0, 3 + 2 * k);
    }
    t.is(forced.preferred, 0);
    t.is(forced.next(2), 2);
    t.is(forced.next(0), 0);
    const capped = new DraftLength(measuredCosts(100, 1), {maxTokens: 4});
    const chosen: number[] = [];
    for (let pass = 0; pass < 100; pass++) {
        const k = capped.next();
        chosen.push(k);
        capped.record(k, k, 100 + k);
    }
    t.true(chosen.every((k) => k <= 4));
    t.true(chosen.slice(-50).filter((k) => k === 4).length >= 40);
    t.is(draftLengthDefaults.maxTokens, 12);
});

/** A target that keeps each draft with probability p while it kept the ones before; its passes cost a + b·k (± noise). */
interface Scenario {
    name: string,
    /** A pass's milliseconds, network round trips included. */
    a: number,
    /** Verifying one drafted token, in the pass. */
    b: number,
    /** Drafting one token, before the pass. */
    draft: number,
    p: number
}

const TOKENS = 4000;
const NOISE = 0.1;

/** Generates TOKENS tokens drafting `fixed` tokens a pass, or as DraftLength chooses; the tokens per ms, the k chosen. */
function simulate(scenario: Scenario, seed: number, fixed?: number) {
    const random = new SeededRandom(seed);
    const costs = new PassCosts();
    const length = new DraftLength(costs);
    let tokens = 0;
    let ms = 0;
    const chosen: number[] = [];
    while (tokens < TOKENS) {
        // As the engine asks: the budget left after the token the pass yields itself.
        const limit = TOKENS - tokens - 1;
        const k = fixed === undefined ? length.next(limit) : Math.min(fixed, limit);
        const draftMs = scenario.draft * k;
        if (k > 0)
            costs.recordDraft(k, draftMs);
        let accepted = 0;
        while (accepted < k && random.chance(scenario.p))
            accepted++;
        const passMs = (scenario.a + scenario.b * k) * (1 + NOISE * (2 * random.next() - 1));
        length.record(k, accepted, passMs);
        tokens += accepted + 1;
        ms += draftMs + passMs;
        chosen.push(k);
    }
    return {rate: tokens / ms, chosen};
}

/** The best fixed k by brute force over 0..maxTokens, on the same draws. */
function bestFixed(scenario: Scenario, seed: number) {
    let best = {k: 0, rate: 0};
    for (let k = 0; k <= draftLengthDefaults.maxTokens; k++) {
        const {rate} = simulate(scenario, seed, k);
        if (rate > best.rate)
            best = {k, rate};
    }
    return best;
}

const histogram = (chosen: number[]) => {
    const counts: Record<number, number> = {};
    for (const k of chosen)
        counts[k] = (counts[k] ?? 0) + 1;
    return JSON.stringify(counts);
};

const scenarios: {scenario: Scenario, settles: (recent: number[]) => boolean, bestK: (k: number) => boolean}[] = [
    {
        // Network-bound (a pipeline over the internet) with a draft that always agrees: draft as many as allowed.
        scenario: {name: 'network-bound, always kept', a: 100, b: 1, draft: 0, p: 1},
        // Now and then a line fitted to noisy passes of 11 and 12 tokens is too steep, and one pass drafts nothing.
        // At 12 it explores 9 (a quarter fewer) every 16th pass.
        settles: (recent) => recent.filter((k) => k >= 9).length >= 0.97 * recent.length && recent.filter((k) => k === 12).length >= 0.9 * recent.length,
        bestK: (k) => k === 12
    },
    {
        scenario: {name: 'network-bound, nearly always kept', a: 100, b: 1, draft: 0, p: 0.98},
        settles: (recent) => recent.filter((k) => k >= 10).length >= 0.9 * recent.length,
        bestK: (k) => k >= 11
    },
    {
        // Middling acceptance on a slow link: the best k is in the middle.
        scenario: {name: 'network-bound, kept 60%', a: 100, b: 1, draft: 0, p: 0.6},
        settles: (recent) => recent.every((k) => k >= 2) && recent.filter((k) => k >= 3 && k <= 9).length >= 0.75 * recent.length,
        bestK: (k) => k >= 4 && k <= 9
    },
    {
        // A draft model's own cost per token counts as much as verifying it.
        scenario: {name: 'network-bound, kept 90%, drafting 5 ms a token', a: 100, b: 1, draft: 5, p: 0.9},
        settles: (recent) => recent.filter((k) => k >= 6).length >= 0.9 * recent.length,
        bestK: (k) => k >= 8
    },
    {
        scenario: {name: 'network-bound, never kept', a: 100, b: 1, draft: 0, p: 0},
        settles: (recent) => recent.every((k) => k === 0 || k === 2) && recent.filter((k) => k === 2).length <= 2,
        bestK: (k) => k === 0
    },
    {
        scenario: {name: 'CPU-bound, never kept', a: 3, b: 2, draft: 0, p: 0},
        settles: (recent) => recent.every((k) => k === 0 || k === 2) && recent.filter((k) => k === 2).length <= 2,
        bestK: (k) => k === 0
    },
    {
        // Verifying is dear against a pass: a token or two pays, more does not.
        scenario: {name: 'CPU-bound, kept 80%', a: 3, b: 2, draft: 0, p: 0.8},
        settles: (recent) => recent.every((k) => k <= 4) && recent.some((k) => k >= 1),
        bestK: (k) => k >= 1 && k <= 2
    },
    {
        scenario: {name: 'CPU-bound, kept 95%', a: 3, b: 2, draft: 0, p: 0.95},
        settles: (recent) => recent.filter((k) => k >= 1 && k <= 8).length >= 0.9 * recent.length,
        bestK: (k) => k >= 2 && k <= 6
    },
    {
        // Between the two: k = 0 is the best fixed choice, by little; drafting now and then must cost little.
        scenario: {name: 'CPU-bound, kept 60%', a: 3, b: 2, draft: 0, p: 0.6},
        settles: (recent) => recent.filter((k) => k === 0).length >= 0.8 * recent.length,
        bestK: (k) => k === 0
    }
];

for (const {scenario, settles, bestK} of scenarios) {
    test(`draft length, simulated: ${scenario.name} (a ${scenario.a}, b ${scenario.b}, p ${scenario.p})`, (t) => {
        for (const seed of [1, 2, 3]) {
            const best = bestFixed(scenario, seed);
            t.true(bestK(best.k), `seed ${seed}: the best fixed k is ${best.k}`);
            const adaptive = simulate(scenario, seed);
            // The last 200 passes but the few at the end that the budget cut.
            const recent = adaptive.chosen.slice(-210, -10);
            t.true(settles(recent), `seed ${seed}: settled on ${histogram(recent)}`);
            t.true(adaptive.rate >= 0.85 * best.rate,
                `seed ${seed}: ${adaptive.rate.toFixed(4)} tokens/ms against ${best.rate.toFixed(4)} at a fixed k of ${best.k}`);
        }
    });
}

test('draft length, simulated: follows a text whose acceptance drops to nothing and comes back', (t) => {
    const random = new SeededRandom(4);
    const length = new DraftLength(new PassCosts());
    const chosen: number[] = [];
    for (let pass = 0; pass < 1500; pass++) {
        const p = pass < 300 || pass >= 800 ? 0.95 : 0;
        const k = length.next();
        let accepted = 0;
        while (accepted < k && random.chance(p))
            accepted++;
        length.record(k, accepted, 100 + k);
        chosen.push(k);
    }
    t.true(chosen.slice(200, 300).every((k) => k >= 9), histogram(chosen.slice(200, 300)));
    t.true(chosen.slice(500, 800).filter((k) => k > 0).length <= 4, histogram(chosen.slice(500, 800)));
    // Back within a probe interval at most (8 × 16 passes) and the climb.
    t.true(chosen.slice(1000, 1500).every((k) => k >= 9), histogram(chosen.slice(1000, 1500)));
});

const execFileAsync = promisify(execFile);
const PATCH = join(dirname(fileURLToPath(import.meta.url)), '..', 'scripts', 'patch-node-llama-cpp.mjs');
const FIX = ' validatedTokens.push([evalTokens[i], resultToken]);';
const installed = join(dirname(fileURLToPath(import.meta.resolve('node-llama-cpp'))), 'evaluator', 'LlamaContext', 'LlamaContext.js');

const occurrences = (text: string, part: string) => text.split(part).length - 1;

async function patch(file?: string) {
    const {stdout} = await execFileAsync(process.execPath, file === undefined ? [PATCH] : [PATCH, file]);
    return stdout;
}

async function temporaryDirectory(t: ExecutionContext) {
    const directory = await mkdtemp(join(tmpdir(), 'strongdoge-patch-'));
    t.teardown(() => rm(directory, {recursive: true, force: true}));
    return directory;
}

test('install step: fixes node-llama-cpp 3.21.1\'s LlamaContext.js with the one line, once; again changes nothing', async (t) => {
    const fixed = await readFile(installed, 'utf8');
    t.is(occurrences(fixed, FIX), 1, 'the installed node-llama-cpp was fixed at install');
    const unfixed = fixed.replace(FIX, '');
    t.is(occurrences(unfixed, 'validatedTokens.push('), 0);
    const file = join(await temporaryDirectory(t), 'LlamaContext.js');
    await writeFile(file, unfixed);
    t.regex(await patch(file), /fixed node-llama-cpp 3\.21\.1/);
    const patched = await readFile(file, 'utf8');
    t.is(patched, fixed);
    t.is(occurrences(patched, FIX), 1);
    t.is(await patch(file), '');
    t.is(await readFile(file, 'utf8'), fixed);
    // Without an argument: node-llama-cpp's own, already fixed, is left as it is.
    t.is(await patch(), '');
    t.is(await readFile(installed, 'utf8'), fixed);
});

test('install step: a file hard-linked from a shared store is replaced, not written through: the store keeps its copy', async (t) => {
    const unfixed = (await readFile(installed, 'utf8')).replace(FIX, '');
    const directory = await temporaryDirectory(t);
    const store = join(directory, 'store.js');
    const project = join(directory, 'LlamaContext.js');
    await writeFile(store, unfixed);
    await link(store, project);
    t.regex(await patch(project), /fixed node-llama-cpp 3\.21\.1/);
    t.is(occurrences(await readFile(project, 'utf8'), FIX), 1);
    t.is(await readFile(store, 'utf8'), unfixed);
    t.deepEqual((await readdir(directory)).sort(), ['LlamaContext.js', 'store.js'], 'no temporary file left');
});

test('install step: a file without the 3.21.1 pattern is left byte-identical, and the install goes on', async (t) => {
    const fixed = await readFile(installed, 'utf8');
    const unfixed = fixed.replace(FIX, '');
    const directory = await temporaryDirectory(t);
    const others = {
        'another file': Buffer.from('export const x = 1;\r\n\u00e9\u0000\n'),
        'the check without the list it reads': Buffer.from(unfixed.replace('validatedTokens.at(-1)?.[1]', 'undefined')),
        'the kept line twice': Buffer.from(unfixed.replace('return', 'this._loadedTokenPredictions.push([evalTokens[i], [resultToken, probabilities, confidence]]);\nreturn')),
        'empty': Buffer.alloc(0)
    };
    for (const [name, content] of Object.entries(others)) {
        const file = join(directory, `${name}.js`);
        await writeFile(file, content);
        t.regex(await patch(file), /not the 3\.21\.1 one; left as it is/, name);
        t.deepEqual(await readFile(file), content, name);
    }
    // A file that cannot be read: a line, never a failed install.
    t.regex(await patch(join(directory, 'missing.js')), /could not fix/);
});
