import test, {type ExecutionContext} from 'ava';
import {SeededRandom} from '../harness/seeded-random.js';
import {candidate, coordinator, INPUT, LAYER, OUTPUT, PER_LAYER, planned, roomFor, shapeOf} from '../harness/shard-plan-fixture.js';
import {
    type LayerRange, type ModelShape, planShards, replanAfterFailure, type ShardCandidate, type ShardPlan, type ShardStage
} from '../inference/sharded/shard-planner.js';
import {pickSpares, type ShardSpare} from '../inference/sharded/spare-picker.js';

const peer = candidate;

/** 8 layers: self with none, a 0–3, b 4–7 (the last stage), each holding its layers. */
const PAIR = [coordinator(), peer('a', {heldLayers: [[0, 3]]}), peer('b', {heldLayers: [[4, 7]], holdsOutput: true})];

function pairPlan(t: ExecutionContext) {
    const plan = planned(planShards(shapeOf(8), PAIR), t);
    t.deepEqual(plan.stages.map((stage) => stage.peerId), ['self', 'a', 'b']);
    return plan;
}

const who = (spares: readonly ShardSpare[]) => spares.map((spare) => `${spare.peerId}→${spare.replaces}`);

test('one spare per remote stage, from outside the plan, never the coordinator nor an excluded peer', (t) => {
    const plan = pairPlan(t);
    const candidates = [...PAIR, peer('s1'), peer('gone'), peer('s2')];
    const spares = pickSpares(shapeOf(8), plan, candidates, 5, {exclude: new Set(['gone'])});
    t.deepEqual(spares, [
        {peerId: 's1', replaces: 'a', firstLayer: 0, lastLayer: 3, bytes: 4 * PER_LAYER, transferBytes: 4 * LAYER, weightsFrom: 'coordinator'},
        {peerId: 's2', replaces: 'b', firstLayer: 4, lastLayer: 7, bytes: roomFor(4), transferBytes: 4 * LAYER + OUTPUT, weightsFrom: 'coordinator'}
    ]);
    t.is(spares[0]!.bytes, plan.stages[1]!.bytes, 'the stage\'s own bytes');
    t.is(spares[1]!.bytes, plan.stages[2]!.bytes);
    t.deepEqual(pickSpares(shapeOf(8), plan, candidates, 0), []);
    t.deepEqual(pickSpares(shapeOf(8), plan, PAIR, 3), [], 'nobody outside the plan');
    // A coordinator with room for everything is still no spare.
    const roomy = [coordinator({freeMemoryBytes: 10_000}), ...PAIR.slice(1)];
    t.deepEqual(pickSpares(shapeOf(8), plan, roomy, 2), []);
});

test('holders of the layers first, then hosts that fetch them from the source, then those this node must feed', (t) => {
    const candidates = [coordinator(), peer('a', {heldLayers: [[0, 3]]})];
    const plan = planned(planShards(shapeOf(4), candidates), t);
    const others = [peer('fed', {rttMs: 1, tflops: 1.2}), peer('fetcher', {sourceBytesPerSecond: 1e6, rttMs: 50}), peer('holder', {heldLayers: [[0, 3]], rttMs: 90, successRate: 0.5})];
    const spares = pickSpares(shapeOf(4), plan, [...candidates, ...others], 3);
    t.deepEqual(spares.map((spare) => [spare.peerId, spare.weightsFrom, spare.transferBytes]), [
        ['holder', 'held', 0],
        ['fetcher', 'source', 4 * LAYER + OUTPUT],
        ['fed', 'coordinator', 4 * LAYER + OUTPUT]
    ]);
    // A rate of 0 is no source.
    t.is(pickSpares(shapeOf(4), plan, [...candidates, peer('zero', {sourceBytesPerSecond: 0})], 1)[0]!.weightsFrom, 'coordinator');
});

test('then compute closest to the stage\'s, then the nearest (unmeasured last), then the most reliable', (t) => {
    const candidates = [coordinator(), peer('a', {heldLayers: [[0, 3]], tflops: 2})];
    const plan = planned(planShards(shapeOf(4), candidates), t);
    const pick = (others: ShardCandidate[]) => pickSpares(shapeOf(4), plan, [...candidates, ...others], others.length).map((spare) => spare.peerId);
    // 2.2 is 1.1 times the stage's compute, 1.6 is 1.25 times less, 4 is twice; 1.2 is more than 1.5 times less: no spare.
    t.deepEqual(pick([peer('double', {tflops: 4}), peer('tooSlow', {tflops: 1.2}), peer('slower', {tflops: 1.6}), peer('close', {tflops: 2.2})]), ['close', 'slower', 'double']);
    t.deepEqual(pick([peer('unmeasured', {tflops: 2, rttMs: null}), peer('far', {tflops: 2, rttMs: 50}), peer('near', {tflops: 2, rttMs: 5})]), ['near', 'far', 'unmeasured']);
    t.deepEqual(pick([peer('flaky', {tflops: 2, successRate: 0.5}), peer('steady', {tflops: 2, successRate: 0.9})]), ['steady', 'flaky']);
    // Unknown compute counts as 1 TFLOP/s, as the planner counts it: too slow for this stage.
    t.deepEqual(pick([peer('unknown', {tflops: null})]), []);
});

test('a spare needs the room its stage takes: the last stage\'s, room for the output layer too', (t) => {
    const plan = pairPlan(t);
    t.deepEqual(who(pickSpares(shapeOf(8), plan, [...PAIR, peer('tight', {freeMemoryBytes: 4 * PER_LAYER})], 2)), ['tight→a']);
    t.deepEqual(pickSpares(shapeOf(8), plan, [...PAIR, peer('tiny', {freeMemoryBytes: 4 * PER_LAYER - 1})], 2), []);
    // With a compute buffer, the spare's bytes are the stage's.
    const shape = shapeOf(8, {computeBytes: 40});
    const room = 4 * PER_LAYER + 40 + OUTPUT;
    const candidates = [coordinator(), peer('a', {heldLayers: [[0, 3]], freeMemoryBytes: room}), peer('b', {heldLayers: [[4, 7]], holdsOutput: true, freeMemoryBytes: room})];
    const withBuffer = planned(planShards(shape, candidates), t);
    const spares = pickSpares(shape, withBuffer, [...candidates, peer('x', {freeMemoryBytes: room}), peer('y', {freeMemoryBytes: room})], 2);
    t.deepEqual(spares.map((spare) => spare.bytes), [withBuffer.stages[1]!.bytes, withBuffer.stages[2]!.bytes]);
    t.is(spares[1]!.bytes, 4 * PER_LAYER + 40 + OUTPUT);
});

test('every remote stage gets a spare before any gets a second, the best pairs first', (t) => {
    const plan = pairPlan(t);
    const candidates = [...PAIR, peer('fed'), peer('f1', {sourceBytesPerSecond: 1e6}), peer('f2', {sourceBytesPerSecond: 1e6}), peer('ha', {heldLayers: [[0, 3]]})];
    const pick = (count: number) => who(pickSpares(shapeOf(8), plan, candidates, count));
    t.deepEqual(pick(1), ['ha→a'], 'the best pair: a holder ready for a');
    t.deepEqual(pick(2), ['ha→a', 'f1→b']);
    t.deepEqual(pick(3), ['ha→a', 'f1→b', 'f2→a']);
    t.deepEqual(pick(4), ['ha→a', 'f1→b', 'f2→a', 'fed→b']);
    t.deepEqual(pick(9), pick(4), 'as many as there are');
});

test('a spare that has fetched its stage\'s layers is ready: it replaces that stage when it fails, with nothing to move', (t) => {
    const plan = pairPlan(t);
    const spare = peer('spare', {sourceBytesPerSecond: 1e6});
    const other = peer('other', {tflops: 1.4, rttMs: 1});
    const [chosen] = pickSpares(shapeOf(8), plan, [...PAIR, spare, other], 1);
    t.like(chosen, {peerId: 'spare', replaces: 'a', weightsFrom: 'source', transferBytes: 4 * LAYER});
    // Once it holds 0–3 (its tensor cache), the coordinator announces them as held.
    const ready = {...spare, heldLayers: [[chosen!.firstLayer, chosen!.lastLayer] as LayerRange]};
    const repaired = planned(replanAfterFailure(shapeOf(8), plan, 'a', [...PAIR, ready, other]), t);
    t.like(repaired, {repair: 'replace', estimatedFormSeconds: 0});
    t.deepEqual(repaired.stages.map((stage) => [stage.peerId, stage.weightsFrom]), [['self', 'held'], ['spare', 'held'], ['b', 'held']]);
    // Before it does, it must fetch them like anyone.
    const early = planned(replanAfterFailure(shapeOf(8), plan, 'a', [...PAIR, spare, other]), t);
    t.not(early.repair, 'replace');
    t.true(early.estimatedFormSeconds > 0);
});

test('invalid input is refused', (t) => {
    const plan = pairPlan(t);
    for (const count of [-1, 1.5, Number.NaN])
        t.throws(() => pickSpares(shapeOf(8), plan, PAIR, count), {instanceOf: RangeError, message: /number of spares/});
    t.throws(() => pickSpares(shapeOf(6), plan, PAIR, 1), {instanceOf: RangeError, message: /another size/});
    t.throws(() => pickSpares(shapeOf(8), plan, [...PAIR, coordinator({peerId: 'two'})], 1), {instanceOf: RangeError, message: /exactly one candidate/});
    t.throws(() => pickSpares(shapeOf(8), plan, [...PAIR, peer('x', {sourceBytesPerSecond: -1})], 1), {instanceOf: RangeError, message: /candidate x/});
});

// Invariants over random plans, each checked against rules written out here again.

interface Offer {
    candidate: ShardCandidate,
    bytes: number,
    transferBytes: number,
    weightsFrom: ShardSpare['weightsFrom'],
    key: number[]
}

/** What a candidate would be as a spare for a stage, by the rules as documented; null when it cannot be one. */
function offerOf(shape: ModelShape, plan: ShardPlan, stage: ShardStage, candidate: ShardCandidate): Offer | null {
    const last = stage === plan.stages.at(-1);
    const holds = (layer: number) => candidate.heldLayers.some(([first, end]) => first <= layer && layer <= end);
    let weights = 0;
    let missing = 0;
    for (let layer = stage.firstLayer!; layer <= stage.lastLayer!; layer++) {
        weights += shape.layerBytes[layer]!;
        missing += holds(layer) ? 0 : shape.layerBytes[layer]!;
    }
    const holdsOutput = candidate.holdsOutput ?? shape.layerBytes.every((_, layer) => holds(layer));
    const bytes = weights + stage.layerCount * shape.kvBytesPerTokenPerLayer * shape.contextTokens + (shape.computeBytes ?? 0) + (last ? shape.outputBytes : 0);
    const compute = Math.max(candidate.tflops ?? 1, 0.01);
    if (bytes > candidate.freeMemoryBytes || compute * 1.5 < stage.tflops)
        return null;
    const transferBytes = missing + (last && !holdsOutput ? shape.outputBytes : 0);
    const weightsFrom = transferBytes === 0 ? 'held' : (candidate.sourceBytesPerSecond ?? 0) > 0 ? 'source' : 'coordinator';
    const rank = {held: 0, source: 1, coordinator: 2}[weightsFrom];
    return {candidate, bytes, transferBytes, weightsFrom, key: [rank, Math.abs(Math.log(compute / stage.tflops)), candidate.rttMs ?? Number.POSITIVE_INFINITY, -candidate.successRate]};
}

function notBefore(a: readonly number[], b: readonly number[]) {
    const index = a.findIndex((value, position) => value !== b[position]);
    return index === -1 || a[index]! > b[index]!;
}

function randomCase(random: SeededRandom) {
    const layers = random.int(1, 12);
    // Peers with room for up to half the layers, so that plans often have several remote stages to find spares for.
    const layerBytes = Array.from({length: layers}, () => random.int(50, 200));
    const shape = shapeOf(layers, {layerBytes, outputBytes: random.int(0, 150), kvBytesPerTokenPerLayer: random.int(0, 2), ...(random.chance(0.5) && {computeBytes: random.int(0, 80)})});
    const perLayer = Math.max(...layerBytes) + shape.kvBytesPerTokenPerLayer * shape.contextTokens;
    const range = (): LayerRange => {
        const first = random.int(0, layers - 1);
        return [first, random.int(first, layers - 1)];
    };
    const candidates = [coordinator({freeMemoryBytes: INPUT + random.int(0, 2) * perLayer})];
    for (let index = random.int(2, 12); index > 0; index--)
        candidates.push(peer(`p${index}`, {
            freeMemoryBytes: random.int(0, Math.ceil(layers / 2)) * perLayer + random.int(0, 1) * shape.outputBytes + (shape.computeBytes ?? 0) + random.int(0, 100),
            tflops: random.chance(0.2) ? null : random.int(1, 12) / 4,
            rttMs: random.chance(0.2) ? null : random.int(1, 150),
            successRate: random.int(0, 10) / 10,
            heldLayers: random.chance(0.2) ? [[0, layers - 1]] : Array.from({length: random.int(0, 2)}, range),
            ...(random.chance(0.3) && {holdsOutput: random.chance(0.5)}),
            ...(random.chance(0.5) && {sourceBytesPerSecond: random.pick([0, null, random.int(1, 100) * 1e4])})
        }));
    const exclude = new Set(candidates.filter((candidate) => !candidate.self && random.chance(0.1)).map((candidate) => candidate.peerId));
    return {shape, candidates, options: {exclude, maxStages: random.int(2, 5)}};
}

test('random spares keep every rule: outside the plan, with room, each stage covered before a second, the best first', (t) => {
    const random = new SeededRandom(2025);
    let picked = 0;
    let seconds = 0;
    for (let run = 0; run < 400; run++) {
        const {shape, candidates, options} = randomCase(random);
        const result = planShards(shape, candidates, options);
        if (!result.ok)
            continue;
        const plan = result.plan;
        const count = random.int(0, 6);
        const spares = pickSpares(shape, plan, candidates, count, options);
        picked += spares.length;
        t.true(spares.length <= count, `run ${run}`);
        t.is(new Set(spares.map((spare) => spare.peerId)).size, spares.length, `run ${run}: a peer is one spare`);
        const chosen = new Set(spares.map((spare) => spare.peerId));
        const outside = candidates.filter((candidate) => !candidate.self && !options.exclude.has(candidate.peerId) && !plan.stages.some((stage) => stage.peerId === candidate.peerId));
        const remote = plan.stages.filter((stage) => !stage.self);
        const perStage = new Map(remote.map((stage) => [stage.peerId, spares.filter((spare) => spare.replaces === stage.peerId)]));
        const unchosenOffers = (stage: ShardStage) => outside.filter((candidate) => !chosen.has(candidate.peerId))
            .map((candidate) => offerOf(shape, plan, stage, candidate)).filter((offer) => offer !== null);
        for (const spare of spares) {
            const stage = remote.find((other) => other.peerId === spare.replaces);
            t.truthy(stage, `run ${run}: replaces a remote stage`);
            const candidate = outside.find((other) => other.peerId === spare.peerId);
            t.truthy(candidate, `run ${run}: a peer outside the plan, not the coordinator, not excluded`);
            const offer = offerOf(shape, plan, stage!, candidate!);
            t.truthy(offer, `run ${run}: with room, fast enough`);
            t.deepEqual(spare, {peerId: candidate!.peerId, replaces: stage!.peerId, firstLayer: stage!.firstLayer!, lastLayer: stage!.lastLayer!,
                bytes: offer!.bytes, transferBytes: offer!.transferBytes, weightsFrom: offer!.weightsFrom}, `run ${run}`);
            for (const other of unchosenOffers(stage!))
                t.true(notBefore(other.key, offer!.key), `run ${run}: ${other.candidate.peerId} would have been a better spare for ${stage!.peerId}`);
        }
        for (const stage of remote) {
            const left = unchosenOffers(stage);
            if (spares.length < count)
                t.is(left.length, 0, `run ${run}: fewer spares than asked, yet ${stage.peerId} could have another`);
            const mine = perStage.get(stage.peerId)!.length;
            if (remote.some((other) => perStage.get(other.peerId)!.length > mine) && left.length > 0)
                t.is(spares.length, count, `run ${run}: ${stage.peerId} could have another spare, and fewer were picked than asked`);
            if (remote.some((other) => perStage.get(other.peerId)!.length >= mine + 2)) {
                t.is(left.length, 0, `run ${run}: another stage has two more spares than ${stage.peerId}, which could have another`);
                seconds++;
            }
        }
    }
    t.true(picked > 200, `only ${picked} spares picked`);
    t.true(seconds > 0, 'the random cases reach stages with more spares than others');
});
