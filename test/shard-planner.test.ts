import test, {type ExecutionContext} from 'ava';
import {Prng} from '../engine/demo/prng.js';
import {SeededRandom} from '../harness/seeded-random.js';
import {candidate, coordinator, INPUT, LAYER, OUTPUT, PER_LAYER, planned, roomFor, shapeOf} from '../harness/shard-plan-fixture.js';
import {
    planShards, replanAfterFailure, shardPlannerDefaults,
    type LayerRange, type ModelShape, type ShardCandidate, type ShardPlan, type ShardPlanOptions, 
} from '../inference/sharded/shard-planner.js';

function peer(peerId: string, heldLayers: LayerRange[], extra: Partial<ShardCandidate> = {}): ShardCandidate {
    return candidate(peerId, {heldLayers, ...extra});
}

/** Each stage as `peer first–last` (`peer -` without layers). */
function layout(plan: ShardPlan) {
    return plan.stages.map((stage) => `${stage.peerId} ${stage.layerCount === 0 ? '-' : `${stage.firstLayer}–${stage.lastLayer}`}`);
}

/** Checks every rule a plan must keep, recomputing bytes and transfers independently of the planner. */
function assertValid(t: ExecutionContext, shape: ModelShape, candidates: readonly ShardCandidate[], plan: ShardPlan, options: ShardPlanOptions = {}) {
    const layers = shape.layerBytes.length;
    const uplink = options.uplinkBytesPerSecond ?? 2.5e6;
    const stages = plan.stages;
    t.true(stages[0]?.self, 'the coordinator is the first stage');
    t.is(stages.filter((stage) => stage.self).length, 1, 'one coordinator stage');
    t.is(new Set(stages.map((stage) => stage.peerId)).size, stages.length, 'a peer takes one stage');
    t.true(stages.length >= (options.minStages ?? 1) && stages.length <= (options.maxStages ?? shardPlannerDefaults.maxStages), 'within the stage limits');
    let next = 0;
    stages.forEach((stage, index) => {
        const candidate = candidates.find((other) => other.peerId === stage.peerId);
        t.truthy(candidate, 'a stage is a candidate');
        t.is(candidate!.self, stage.self);
        t.false(options.exclude?.has(stage.peerId) ?? false, 'no excluded peer');
        const last = index === stages.length - 1;
        if (stage.layerCount === 0) {
            t.true(stage.self && !last, 'only the coordinator may take no layer, and not as the only stage');
            t.is(stage.firstLayer, undefined);
            t.is(stage.lastLayer, undefined);
        } else {
            t.is(stage.firstLayer, next, 'contiguous, in layer order');
            t.is(stage.lastLayer! - stage.firstLayer! + 1, stage.layerCount);
            next = stage.lastLayer! + 1;
        }
        let weights = 0;
        let missing = 0;
        for (let layer = stage.firstLayer ?? 0; layer < (stage.firstLayer ?? 0) + stage.layerCount; layer++) {
            weights += shape.layerBytes[layer]!;
            if (!candidate!.heldLayers.some(([first, lastHeld]) => first <= layer && layer <= lastHeld))
                missing += shape.layerBytes[layer]!;
        }
        const holdsAll = Array.from({length: layers}, (_, layer) => candidate!.heldLayers.some(([first, lastHeld]) => first <= layer && layer <= lastHeld)).every(Boolean);
        const bytes = weights + stage.layerCount * shape.kvBytesPerTokenPerLayer * shape.contextTokens + (stage.layerCount > 0 ? shape.computeBytes ?? 0 : 0)
            + (stage.self ? shape.inputBytes : 0) + (last ? shape.outputBytes : 0);
        t.is(stage.bytes, bytes, 'bytes: weights, KV cache, compute buffer with layers, input on the coordinator, output on the last stage');
        t.true(stage.bytes <= candidate!.freeMemoryBytes, 'fits the memory offered');
        const outputMissing = last && !(candidate!.holdsOutput ?? holdsAll);
        t.is(stage.transferBytes, stage.self ? 0 : missing + (outputMissing ? shape.outputBytes : 0), 'transfers what it does not hold');
        const source = candidate!.sourceBytesPerSecond ?? 0;
        const from = stage.transferBytes === 0 ? 'held' : source > 0 ? 'source' : 'coordinator';
        t.is(stage.weightsFrom, from, 'held without transfer, else from the source when it can fetch, else from the coordinator');
        t.is(stage.formSeconds, {held: 0, source: stage.transferBytes / source, coordinator: stage.transferBytes / uplink}[from], 'its bytes at its rate');
    });
    t.is(next, layers, 'every layer exactly once');
    t.true(Number.isFinite(plan.estimatedMsPerToken) && plan.estimatedMsPerToken > 0);
    t.true(plan.reason.includes(`${stages.length} stage`));
    const fetches = stages.filter((stage) => stage.weightsFrom === 'source').map((stage) => stage.formSeconds);
    const throughUplink = stages.filter((stage) => stage.weightsFrom === 'coordinator').reduce((sum, stage) => sum + stage.transferBytes, 0);
    t.is(plan.estimatedFormSeconds, Math.max(0, ...fetches, throughUplink / uplink), 'downloads in parallel, the uplink shared');
    t.true(plan.reason.endsWith(plan.estimatedFormSeconds === 0 ? 'forms at once' : 'forms in under 1 s') || /forms in ~[\d.]+ (s|min|h)$/.test(plan.reason));
}

// The worked scenario: 16 layers, a coordinator with room for its inputs only, peers 1–5 holding layers, peer 6 none.
function scenario(overrides: Record<string, Partial<ShardCandidate>> = {}, leaveOut: string[] = []): ShardCandidate[] {
    const candidates = [
        coordinator(),
        peer('p1', [[0, 3]]),
        peer('p2', [[4, 7]]),
        peer('p3', [[8, 11]]),
        peer('p4', [[12, 15]], {holdsOutput: true}),
        peer('p5', [[0, 7]], {rttMs: 40}),
        peer('p6', [], {rttMs: 10})
    ];
    return candidates.filter((candidate) => !leaveOut.includes(candidate.peerId))
        .map((candidate) => ({...candidate, ...overrides[candidate.peerId]}));
}

const SCENARIO_OPTIONS = {maxStages: 5};

test('scenario (a): equal compute, room for 4 layers each: 0–3, 4–7, 8–11, 12–15 on the four peers that hold them', (t) => {
    const candidates = scenario();
    const plan = planned(planShards(shapeOf(16), candidates, SCENARIO_OPTIONS), t);
    t.deepEqual(layout(plan), ['self -', 'p1 0–3', 'p2 4–7', 'p3 8–11', 'p4 12–15']);
    t.true(plan.stages.every((stage) => stage.transferBytes === 0));
    t.is(plan.reason, `5 stages: self no layers, p1 0–3 (holds them), p2 4–7 (holds them), p3 8–11 (holds them), p4 12–15 (holds them); ~${plan.estimatedMsPerToken.toFixed(1)} ms/token; forms at once`);
    t.is(plan.estimatedFormSeconds, 0);
    assertValid(t, shapeOf(16), candidates, plan, SCENARIO_OPTIONS);
});

test('a stage with layers holds its compute buffer too: peers with room for 4 layers without it take 3', (t) => {
    const candidates = [coordinator(), peer('p1', []), peer('p2', []), peer('p3', [])];
    // Without a compute buffer, two peers take the 8 layers.
    const without = planned(planShards(shapeOf(8), candidates), t);
    t.deepEqual(without.stages.map((stage) => stage.layerCount), [0, 4, 4]);
    const COMPUTE = 60;
    const shape = shapeOf(8, {computeBytes: COMPUTE});
    const plan = planned(planShards(shape, candidates), t);
    t.deepEqual(plan.stages.map((stage) => stage.layerCount).sort(), [0, 2, 3, 3]);
    for (const stage of plan.stages.filter((candidate) => !candidate.self))
        t.is(stage.bytes, stage.layerCount * PER_LAYER + COMPUTE + (stage === plan.stages.at(-1) ? OUTPUT : 0));
    assertValid(t, shape, candidates, plan);
});

test('scenario (a) over at most 4 stages, the default, has no plan: the reason says so', (t) => {
    t.deepEqual(planShards(shapeOf(16), scenario()), {ok: false, code: 'too_many_stages', reason: 'the model needs at least 5 stages, this node included, more than the maximum of 4'});
});

test('scenario (b): a peer with twice the compute and room for 8 layers takes 0–7', (t) => {
    const candidates = scenario({p5: {tflops: 2, freeMemoryBytes: roomFor(8)}});
    const plan = planned(planShards(shapeOf(16), candidates), t);
    t.deepEqual(layout(plan), ['self -', 'p5 0–7', 'p3 8–11', 'p4 12–15']);
    t.true(plan.stages.every((stage) => stage.transferBytes === 0));
    assertValid(t, shapeOf(16), candidates, plan);
});

test('scenario (c): peer 6 is chosen only when no holder can serve', (t) => {
    // Nearer than every holder, and still left out while they serve.
    const all = planned(planShards(shapeOf(16), scenario({p6: {rttMs: 1}}), SCENARIO_OPTIONS), t);
    t.false(all.stages.some((stage) => stage.peerId === 'p6'));
    // Without the holder of 12–15, nobody holds them: peer 6 (nearer than peer 5, which would receive as much) takes them.
    const candidates = scenario();
    const options = {...SCENARIO_OPTIONS, exclude: new Set(['p4'])};
    const plan = planned(planShards(shapeOf(16), candidates, options), t);
    t.deepEqual(layout(plan), ['self -', 'p1 0–3', 'p2 4–7', 'p3 8–11', 'p6 12–15']);
    t.is(plan.stages[4]!.transferBytes, 4 * LAYER + OUTPUT);
    t.regex(plan.reason, /p6 12–15 \(must receive 450 B from this node\); .* forms in under 1 s$/);
    t.like(plan.stages[4], {weightsFrom: 'coordinator', formSeconds: (4 * LAYER + OUTPUT) / shardPlannerDefaults.uplinkBytesPerSecond});
    assertValid(t, shapeOf(16), candidates, plan, options);
});

test('scenario (d): when the peer with 4–7 fails, a holder of similar compute replaces it and the others stay', (t) => {
    const candidates = scenario();
    const previous = planned(planShards(shapeOf(16), candidates, SCENARIO_OPTIONS), t);
    const result = replanAfterFailure(shapeOf(16), previous, 'p2', candidates, SCENARIO_OPTIONS);
    const plan = planned(result, t);
    t.deepEqual(layout(plan), ['self -', 'p1 0–3', 'p5 4–7', 'p3 8–11', 'p4 12–15']);
    t.like(plan, {repair: 'replace'});
    t.regex(plan.reason, /^p2 failed, p5 \(holds them\) takes 4–7; 5 stages: /);
    assertValid(t, shapeOf(16), candidates, plan, {...SCENARIO_OPTIONS, exclude: new Set(['p2'])});
});

test('scenario (d), without such a holder: 4–5 go to the strong neighbour (as far as its room goes) and 6–7 to the weaker one', (t) => {
    const previous = planned(planShards(shapeOf(16), scenario(), SCENARIO_OPTIONS), t);
    // Peer 1 now computes twice as fast with room for 6 layers, peer 3 for 8; peer 6 could take the range but must receive it.
    const candidates = scenario({
        p1: {tflops: 2, freeMemoryBytes: roomFor(6), heldLayers: [[0, 5]]},
        p3: {freeMemoryBytes: roomFor(8), heldLayers: [[6, 11]]}
    }, ['p5']);
    const plan = planned(replanAfterFailure(shapeOf(16), previous, 'p2', candidates, SCENARIO_OPTIONS), t);
    t.deepEqual(layout(plan), ['self -', 'p1 0–5', 'p3 6–11', 'p4 12–15']);
    t.like(plan, {repair: 'neighbours'});
    t.true(plan.stages.every((stage) => stage.transferBytes === 0));
    t.regex(plan.reason, /^p2 failed, its neighbours take 4–7; 4 stages: /);
    assertValid(t, shapeOf(16), candidates, plan, {...SCENARIO_OPTIONS, exclude: new Set(['p2'])});
});

test('neighbours share a failed range in proportion to compute when both have room', (t) => {
    const previous = planned(planShards(shapeOf(16), scenario(), SCENARIO_OPTIONS), t);
    const candidates = scenario({p1: {tflops: 3, freeMemoryBytes: roomFor(8)}, p3: {freeMemoryBytes: roomFor(8)}}, ['p5']);
    const plan = planned(replanAfterFailure(shapeOf(16), previous, 'p2', candidates, SCENARIO_OPTIONS), t);
    t.deepEqual(layout(plan), ['self -', 'p1 0–6', 'p3 7–11', 'p4 12–15']);
    t.is(plan.stages[1]!.transferBytes, 3 * LAYER);
    t.is(plan.stages[2]!.transferBytes, LAYER);
});

test('a holder much slower than the failed stage does not replace it: the neighbours come first', (t) => {
    const previous = planned(planShards(shapeOf(16), scenario(), SCENARIO_OPTIONS), t);
    const candidates = scenario({p5: {tflops: 0.25}, p1: {freeMemoryBytes: roomFor(6)}, p3: {freeMemoryBytes: roomFor(6)}});
    const plan = planned(replanAfterFailure(shapeOf(16), previous, 'p2', candidates, SCENARIO_OPTIONS), t);
    t.like(plan, {repair: 'neighbours'});
    t.deepEqual(layout(plan), ['self -', 'p1 0–5', 'p3 6–11', 'p4 12–15']);
});

test('without room next door, another peer takes the failed range: a holder first, else one that must receive it', (t) => {
    const previous = planned(planShards(shapeOf(16), scenario(), SCENARIO_OPTIONS), t);
    const withHolder = planned(replanAfterFailure(shapeOf(16), previous, 'p2', scenario({p5: {tflops: 0.25}}), SCENARIO_OPTIONS), t);
    t.like(withHolder, {repair: 'others'});
    t.deepEqual(layout(withHolder), ['self -', 'p1 0–3', 'p5 4–7', 'p3 8–11', 'p4 12–15']);
    t.regex(withHolder.reason, /^p2 failed, another peer and its neighbours take 4–7; /);
    const candidates = scenario({}, ['p5']);
    const receiving = planned(replanAfterFailure(shapeOf(16), previous, 'p2', candidates, SCENARIO_OPTIONS), t);
    t.like(receiving, {repair: 'others'});
    t.deepEqual(layout(receiving), ['self -', 'p1 0–3', 'p6 4–7', 'p3 8–11', 'p4 12–15']);
    t.is(receiving.stages[2]!.transferBytes, 4 * LAYER);
    assertValid(t, shapeOf(16), candidates, receiving, {...SCENARIO_OPTIONS, exclude: new Set(['p2'])});
});

test('a failed range too large for any one peer is split over several others', (t) => {
    const shape = shapeOf(8);
    const candidates = [coordinator(), peer('big', [], {freeMemoryBytes: roomFor(8)}), peer('a', []), peer('b', [])];
    const previous = planned(planShards(shape, candidates), t);
    t.deepEqual(layout(previous), ['self -', 'big 0–7']);
    const plan = planned(replanAfterFailure(shape, previous, 'big', candidates), t);
    t.like(plan, {repair: 'others'});
    t.deepEqual(plan.stages.map((stage) => stage.layerCount), [0, 4, 4]);
    assertValid(t, shape, candidates, plan, {exclude: new Set(['big'])});
});

test('when the last stage fails, its replacement takes the output layer too', (t) => {
    const previous = planned(planShards(shapeOf(16), scenario(), SCENARIO_OPTIONS), t);
    const candidates = scenario();
    const plan = planned(replanAfterFailure(shapeOf(16), previous, 'p4', candidates, SCENARIO_OPTIONS), t);
    t.deepEqual(layout(plan), ['self -', 'p1 0–3', 'p2 4–7', 'p3 8–11', 'p6 12–15']);
    t.is(plan.stages[4]!.transferBytes, 4 * LAYER + OUTPUT);
    t.is(plan.stages[4]!.bytes, roomFor(4));
    // With room for it, the previous stage takes over the layers and the output layer.
    const roomy = scenario({p3: {freeMemoryBytes: roomFor(8), heldLayers: [[8, 15]], holdsOutput: true}});
    const merged = planned(replanAfterFailure(shapeOf(16), previous, 'p4', roomy, SCENARIO_OPTIONS), t);
    t.like(merged, {repair: 'neighbours'});
    t.deepEqual(layout(merged), ['self -', 'p1 0–3', 'p2 4–7', 'p3 8–15']);
    assertValid(t, shapeOf(16), roomy, merged, {...SCENARIO_OPTIONS, exclude: new Set(['p4'])});
});

test('the coordinator is a neighbour too: it takes back the first stage\'s layers when it has room', (t) => {
    const shape = shapeOf(8);
    const candidates = [coordinator(), peer('a', [[0, 3]]), peer('b', [[4, 7]], {holdsOutput: true})];
    const previous = planned(planShards(shape, candidates), t);
    t.deepEqual(layout(previous), ['self -', 'a 0–3', 'b 4–7']);
    const roomy = [coordinator({freeMemoryBytes: INPUT + 4 * PER_LAYER}), ...candidates.slice(1)];
    const plan = planned(replanAfterFailure(shape, previous, 'a', roomy), t);
    t.like(plan, {repair: 'neighbours'});
    t.deepEqual(layout(plan), ['self 0–3', 'b 4–7']);
    t.is(plan.stages[0]!.transferBytes, 0);
});

test('a replan starts afresh when a kept stage is gone too, or no longer fits', (t) => {
    const previous = planned(planShards(shapeOf(16), scenario(), SCENARIO_OPTIONS), t);
    const gone = scenario({}, ['p3']);
    const plan = planned(replanAfterFailure(shapeOf(16), previous, 'p2', gone, SCENARIO_OPTIONS), t);
    t.like(plan, {repair: 'fresh'});
    t.regex(plan.reason, /^p2 failed, replanned: /);
    t.false(plan.stages.some((stage) => stage.peerId === 'p2' || stage.peerId === 'p3'));
    assertValid(t, shapeOf(16), gone, plan, {...SCENARIO_OPTIONS, exclude: new Set(['p2'])});
    const shrunk = scenario({p3: {freeMemoryBytes: roomFor(3)}, p6: {freeMemoryBytes: roomFor(5)}});
    t.like(planned(replanAfterFailure(shapeOf(16), previous, 'p2', shrunk, SCENARIO_OPTIONS), t), {repair: 'fresh'});
    // Nothing fits without the failed peer: the failure says why.
    const alone = replanAfterFailure(shapeOf(16), previous, 'p2', scenario({}, ['p5', 'p6']), SCENARIO_OPTIONS);
    t.like(alone, {ok: false, code: 'not_enough_memory'});
});

test('a replan refuses a failed peer that is the coordinator or not in the plan, and a plan for another model', (t) => {
    const previous = planned(planShards(shapeOf(16), scenario(), SCENARIO_OPTIONS), t);
    t.throws(() => replanAfterFailure(shapeOf(16), previous, 'self', scenario(), SCENARIO_OPTIONS), {instanceOf: RangeError});
    t.throws(() => replanAfterFailure(shapeOf(16), previous, 'p6', scenario(), SCENARIO_OPTIONS), {instanceOf: RangeError});
    t.throws(() => replanAfterFailure(shapeOf(12), previous, 'p2', scenario(), SCENARIO_OPTIONS), {instanceOf: RangeError, message: /another size/});
});

// Rule 1: shares in proportion to compute, clipped to memory, in whole layers.

test('layers are shared in proportion to compute', (t) => {
    const candidates = [coordinator(), peer('fast', [], {tflops: 3, freeMemoryBytes: roomFor(12)}), peer('slow', [], {tflops: 1, freeMemoryBytes: roomFor(12)})];
    const plan = planned(planShards(shapeOf(16), candidates), t);
    t.deepEqual(Object.fromEntries(plan.stages.map((stage) => [stage.peerId, stage.layerCount])), {self: 0, fast: 12, slow: 4});
    assertValid(t, shapeOf(16), candidates, plan);
});

test('a share is clipped to the memory offered, the rest going to those with room', (t) => {
    const candidates = [coordinator(), peer('fast', [], {tflops: 3, freeMemoryBytes: roomFor(10)}), peer('slow', [], {tflops: 1, freeMemoryBytes: roomFor(12)})];
    const plan = planned(planShards(shapeOf(16), candidates), t);
    t.deepEqual(Object.fromEntries(plan.stages.map((stage) => [stage.peerId, stage.layerCount])), {self: 0, fast: 10, slow: 6});
});

test('the coordinator takes its share like any stage, and its layers come first', (t) => {
    const candidates = [coordinator({freeMemoryBytes: INPUT + 8 * PER_LAYER}), peer('a', [], {freeMemoryBytes: roomFor(12)})];
    const plan = planned(planShards(shapeOf(16), candidates), t);
    t.deepEqual(layout(plan), ['self 0–7', 'a 8–15']);
    t.regex(plan.reason, /^2 stages: self 0–7, a 8–15 \(must receive 850 B from this node\); ~[\d.]+ ms\/token; forms in under 1 s$/);
});

test('the rounding remainder goes to the largest fractions: 16 layers over three equal peers', (t) => {
    const candidates = [coordinator(), peer('a', [], {freeMemoryBytes: roomFor(6)}), peer('b', [], {freeMemoryBytes: roomFor(6)}), peer('c', [], {freeMemoryBytes: roomFor(6)})];
    const plan = planned(planShards(shapeOf(16), candidates), t);
    t.deepEqual(plan.stages.map((stage) => stage.layerCount).sort(), [0, 5, 5, 6]);
    assertValid(t, shapeOf(16), candidates, plan);
});

test('unknown compute counts as 1 TFLOP/s; zero compute takes layers only where nobody else has room', (t) => {
    const unknown = [coordinator(), peer('measured', [], {tflops: 1, freeMemoryBytes: roomFor(16)}), peer('unknown', [], {tflops: null, freeMemoryBytes: roomFor(16)})];
    const even = planned(planShards(shapeOf(16), unknown, {minStages: 3}), t);
    t.deepEqual(even.stages.map((stage) => stage.layerCount), [0, 8, 8]);
    t.is(even.stages.find((stage) => stage.peerId === 'unknown')!.tflops, 1);
    const idle = [coordinator(), peer('idle', [], {tflops: 0, freeMemoryBytes: roomFor(8)}), peer('b', []), peer('c', [], {freeMemoryBytes: roomFor(12)})];
    t.false(planned(planShards(shapeOf(16), idle), t).stages.some((stage) => stage.peerId === 'idle'));
    const needed = [coordinator(), peer('idle', [], {tflops: 0, freeMemoryBytes: roomFor(8)}), peer('b', [], {freeMemoryBytes: roomFor(8)})];
    const plan = planned(planShards(shapeOf(16), needed), t);
    t.deepEqual(plan.stages.map((stage) => stage.layerCount), [0, 8, 8]);
    t.true(Number.isFinite(plan.estimatedMsPerToken));
    // With no compute anywhere, shares are equal rather than undefined.
    const none = [coordinator({tflops: 0}), peer('x', [], {tflops: 0, freeMemoryBytes: roomFor(16)}), peer('y', [], {tflops: 0, freeMemoryBytes: roomFor(16)})];
    t.deepEqual(planned(planShards(shapeOf(16), none, {minStages: 3}), t).stages.map((stage) => stage.layerCount), [0, 8, 8]);
});

test('a forced stage with little compute still gets a layer', (t) => {
    const candidates = [coordinator({freeMemoryBytes: INPUT + 16 * PER_LAYER + OUTPUT, tflops: 100}), peer('slow', [], {tflops: 0.1, freeMemoryBytes: roomFor(16)})];
    const plan = planned(planShards(shapeOf(16), candidates, {minStages: 2}), t);
    t.deepEqual(layout(plan), ['self 0–14', 'slow 15–15']);
});

// Rule 2: as few stages as fit, holders first, then near and reliable peers.

test('the coordinator alone serves a model that fits it, however fast its peers', (t) => {
    const candidates = [coordinator({freeMemoryBytes: INPUT + 16 * PER_LAYER + OUTPUT, tflops: 0.5}), peer('gpu', [[0, 15]], {tflops: 80, freeMemoryBytes: roomFor(16), rttMs: 1})];
    const plan = planned(planShards(shapeOf(16), candidates), t);
    t.deepEqual(layout(plan), ['self 0–15']);
    t.is(plan.stages[0]!.bytes, INPUT + 16 * PER_LAYER + OUTPUT);
    t.is(plan.reason, `1 stage: self 0–15; ~${plan.estimatedMsPerToken.toFixed(1)} ms/token; forms at once`);
    t.like(plan.stages[0], {weightsFrom: 'held', formSeconds: 0});
});

test('minStages splits a model that fits the coordinator', (t) => {
    const candidates = [coordinator({freeMemoryBytes: INPUT + 16 * PER_LAYER + OUTPUT}), peer('a', [], {freeMemoryBytes: roomFor(16)})];
    const plan = planned(planShards(shapeOf(16), candidates, {minStages: 2}), t);
    t.deepEqual(layout(plan), ['self 0–7', 'a 8–15']);
    t.deepEqual(planShards(shapeOf(16), candidates, {minStages: 3}), {ok: false, code: 'not_enough_peers', reason: 'the model is to be split over at least 3 stages, and there are 1 usable peer'});
});

test('fewer stages win over holders: a peer that must receive everything beats two that hold their halves', (t) => {
    const candidates = [coordinator(), peer('a', [[0, 7]], {freeMemoryBytes: roomFor(8)}), peer('b', [[8, 15]], {freeMemoryBytes: roomFor(8), holdsOutput: true}), peer('big', [], {freeMemoryBytes: roomFor(16)})];
    t.deepEqual(layout(planned(planShards(shapeOf(16), candidates), t)), ['self -', 'big 0–15']);
});

test('a peer holding part of its range receives only the rest', (t) => {
    const candidates = [coordinator(), peer('a', [[0, 5], [7, 7]], {freeMemoryBytes: roomFor(8)}), peer('b', [[8, 15]], {freeMemoryBytes: roomFor(8), holdsOutput: true})];
    const plan = planned(planShards(shapeOf(16), candidates), t);
    t.deepEqual(layout(plan), ['self -', 'a 0–7', 'b 8–15']);
    t.is(plan.stages[1]!.transferBytes, LAYER);
    t.is(plan.stages[2]!.transferBytes, 0);
});

test('the output layer counts as held by a peer with every layer, unless it says otherwise', (t) => {
    const whole = [coordinator(), peer('w', [[0, 15]], {freeMemoryBytes: roomFor(16)})];
    t.is(planned(planShards(shapeOf(16), whole), t).stages[1]!.transferBytes, 0);
    const cacheOnly = [coordinator(), peer('w', [[0, 15]], {freeMemoryBytes: roomFor(16), holdsOutput: false})];
    t.is(planned(planShards(shapeOf(16), cacheOnly), t).stages[1]!.transferBytes, OUTPUT);
});

test('among equal holders, the flaky and the far peer lose', (t) => {
    const shape = shapeOf(4);
    const pair = (a: Partial<ShardCandidate>, b: Partial<ShardCandidate>) => [coordinator(), peer('a', [[0, 3]], a), peer('b', [[0, 3]], b)];
    t.is(planned(planShards(shape, pair({successRate: 0.3}, {successRate: 0.9})), t).stages[1]!.peerId, 'b');
    t.is(planned(planShards(shape, pair({successRate: 0.9}, {successRate: 0.3})), t).stages[1]!.peerId, 'a');
    t.is(planned(planShards(shape, pair({rttMs: 90}, {rttMs: 15})), t).stages[1]!.peerId, 'b');
    t.is(planned(planShards(shape, pair({rttMs: 15}, {rttMs: null})), t).stages[1]!.peerId, 'a');
    // But a near, reliable peer that must receive the layers loses to a far, flaky holder.
    const mixed = [coordinator(), peer('holder', [[0, 3]], {rttMs: 200, successRate: 0.2}), peer('empty', [], {rttMs: 1})];
    t.is(planned(planShards(shape, mixed), t).stages[1]!.peerId, 'holder');
});

test('peers are ordered so that each holds the layers it gets', (t) => {
    const candidates = [coordinator(), peer('c', [[8, 11]]), peer('a', [[0, 3]]), peer('d', [[12, 15]], {holdsOutput: true}), peer('b', [[4, 7]])];
    t.deepEqual(layout(planned(planShards(shapeOf(16), candidates, {maxStages: 5}), t)), ['self -', 'a 0–3', 'b 4–7', 'c 8–11', 'd 12–15']);
});

test('the stage holding the output layer is one with room for it', (t) => {
    // Both have room for 8 layers, only "roomy" for the output as well.
    const candidates = [coordinator(), peer('tight', [], {freeMemoryBytes: 8 * PER_LAYER}), peer('roomy', [], {freeMemoryBytes: roomFor(8)})];
    const plan = planned(planShards(shapeOf(16), candidates), t);
    t.deepEqual(layout(plan), ['self -', 'tight 0–7', 'roomy 8–15']);
    assertValid(t, shapeOf(16), candidates, plan);
});

// Rule 3: the latency estimate.

test('time per token: bytes read over the compute\'s bandwidth proxy, plus 1.1 round trips per remote stage', (t) => {
    const shape: ModelShape = {layerBytes: [1e6, 1e6, 1e6, 1e6], inputBytes: 5e6, outputBytes: 1e6, kvBytesPerTokenPerLayer: 0, contextTokens: 4096};
    const candidates = [coordinator({freeMemoryBytes: 5e6}), peer('a', [[0, 3]], {tflops: 2, rttMs: 10, freeMemoryBytes: 5e6})];
    // 5 MB read at 2 TFLOP/s × 20 GB/s per TFLOP/s = 0.125 ms, and 1.1 × 10 ms; the coordinator's embeddings cost nothing.
    t.is(planned(planShards(shape, candidates), t).estimatedMsPerToken, 0.125 + 11);
    const alone = [coordinator({freeMemoryBytes: 10e6, tflops: 2})];
    t.is(planned(planShards(shape, alone), t).estimatedMsPerToken, 0.125);
});

test('each remote stage adds its round trips to the estimate', (t) => {
    const make = (rttMs: number) => [coordinator(), peer('a', [], {rttMs, freeMemoryBytes: roomFor(8)}), peer('b', [], {rttMs, freeMemoryBytes: roomFor(8)})];
    const near = planned(planShards(shapeOf(16), make(10)), t).estimatedMsPerToken;
    const far = planned(planShards(shapeOf(16), make(60)), t).estimatedMsPerToken;
    t.true(Math.abs(far - near - 2 * 1.1 * 50) < 1e-9);
});

// Rule 4: time to form. Real sizes here: 1 GB layers, peers with room for 4, the default 20 Mbit/s uplink (2.5 MB/s).

const GB = 1e9;
const UPLINK = shardPlannerDefaults.uplinkBytesPerSecond;

function bigShape(layers: number): ModelShape {
    return {layerBytes: Array(layers).fill(GB), inputBytes: GB / 2, outputBytes: 0, kvBytesPerTokenPerLayer: 0, contextTokens: 0};
}

const bigCoordinator = () => coordinator({freeMemoryBytes: GB / 2});

function bigPeer(peerId: string, extra: Partial<ShardCandidate> = {}): ShardCandidate {
    return peer(peerId, [], {freeMemoryBytes: 4 * GB, ...extra});
}

const stageOf = (plan: ShardPlan, peerId: string) => plan.stages.find((stage) => stage.peerId === peerId)!;

test('the default uplink is a home uplink\'s 20 Mbit/s', (t) => {
    t.is(UPLINK, 20e6 / 8);
});

test('each stage says where its weights come from and how long they take at its rate; the reason too', (t) => {
    const candidates = [bigCoordinator(), bigPeer('holder', {heldLayers: [[0, 3]]}), bigPeer('fetcher', {sourceBytesPerSecond: 10e6})];
    const plan = planned(planShards(bigShape(8), candidates), t);
    t.deepEqual(layout(plan), ['self -', 'holder 0–3', 'fetcher 4–7']);
    t.like(plan.stages[0], {weightsFrom: 'held', formSeconds: 0, transferBytes: 0});
    t.like(plan.stages[1], {weightsFrom: 'held', formSeconds: 0, transferBytes: 0});
    t.like(plan.stages[2], {weightsFrom: 'source', formSeconds: 400, transferBytes: 4 * GB});
    t.is(plan.estimatedFormSeconds, 400);
    t.regex(plan.reason, /^3 stages: self no layers, holder 0–3 \(holds them\), fetcher 4–7 \(fetches 4\.0 GB from the source\); ~[\d.]+ ms\/token; forms in ~7 min$/);
    assertValid(t, bigShape(8), candidates, plan);
    // A peer that cannot reach the source (a rate of 0, or none) gets them through this node.
    for (const sourceBytesPerSecond of [0, null, undefined]) {
        const fed = [bigCoordinator(), bigPeer('holder', {heldLayers: [[0, 3]]}), bigPeer('fed', {sourceBytesPerSecond})];
        const fedPlan = planned(planShards(bigShape(8), fed), t);
        t.like(stageOf(fedPlan, 'fed'), {weightsFrom: 'coordinator', formSeconds: 4 * GB / UPLINK});
        t.regex(fedPlan.reason, /fed 4–7 \(must receive 4\.0 GB from this node\); ~[\d.]+ ms\/token; forms in ~27 min$/);
    }
});

test('downloads from the source run in parallel; everything through the coordinator shares its one uplink', (t) => {
    const options = {maxStages: 3};
    const parallel = planned(planShards(bigShape(8), [bigCoordinator(), bigPeer('f1', {sourceBytesPerSecond: 10e6}), bigPeer('f2', {sourceBytesPerSecond: 8e6})], options), t);
    t.is(stageOf(parallel, 'f1').formSeconds, 400);
    t.is(stageOf(parallel, 'f2').formSeconds, 500);
    t.is(parallel.estimatedFormSeconds, 500);
    const shared = planned(planShards(bigShape(8), [bigCoordinator(), bigPeer('a'), bigPeer('b')], options), t);
    t.is(stageOf(shared, 'a').formSeconds, 1600, 'a stage alone: its bytes over the whole uplink');
    t.is(stageOf(shared, 'b').formSeconds, 1600);
    t.is(shared.estimatedFormSeconds, 3200, 'together: 8 GB through one uplink');
    t.regex(shared.reason, /forms in ~53 min$/);
    const mixed = planned(planShards(bigShape(8), [bigCoordinator(), bigPeer('f1', {sourceBytesPerSecond: 10e6}), bigPeer('a')], options), t);
    t.is(mixed.estimatedFormSeconds, 1600);
    const fast = planned(planShards(bigShape(8), [bigCoordinator(), bigPeer('a'), bigPeer('b')], {...options, uplinkBytesPerSecond: 1e9}), t);
    t.is(stageOf(fast, 'a').formSeconds, 4);
    t.is(fast.estimatedFormSeconds, 8);
    t.regex(fast.reason, /forms in ~8 s$/);
    const alone = planned(planShards(bigShape(40), [coordinator({freeMemoryBytes: 40.5 * GB})], {minStages: 1}), t);
    t.is(alone.estimatedFormSeconds, 0, 'the coordinator holds its own layers');
    const slow = planned(planShards(bigShape(8), [bigCoordinator(), bigPeer('a'), bigPeer('b')], {...options, uplinkBytesPerSecond: 1e6}), t);
    t.regex(slow.reason, /forms in ~2\.2 h$/);
});

test('the reason rounds the time to form to seconds, minutes or hours', (t) => {
    const formsIn = (seconds: number) => planned(planShards(bigShape(4), [bigCoordinator(), bigPeer('a')], {uplinkBytesPerSecond: 4 * GB / seconds}), t).reason.replace(/^.*; /, '');
    t.is(formsIn(0.4), 'forms in under 1 s');
    t.is(formsIn(1), 'forms in ~1 s');
    t.is(formsIn(59.4), 'forms in ~59 s');
    t.is(formsIn(59.6), 'forms in ~1 min');
    t.is(formsIn(3569), 'forms in ~59 min');
    t.is(formsIn(3599), 'forms in ~1.0 h');
    t.is(formsIn(5 * 3600), 'forms in ~5.0 h');
});

test('holders first, then hosts that fetch from the source, then hosts this node feeds, however much faster per token', (t) => {
    const candidates = [
        bigCoordinator(),
        bigPeer('holder', {heldLayers: [[0, 3]], rttMs: 200, successRate: 0.5}),
        bigPeer('fetcher', {sourceBytesPerSecond: 50e6, rttMs: 50}),
        bigPeer('fed', {tflops: 40, rttMs: 1})
    ];
    const shape = bigShape(4);
    const holder = planned(planShards(shape, candidates), t);
    t.is(holder.stages[1]!.peerId, 'holder');
    t.is(holder.estimatedFormSeconds, 0);
    t.regex(holder.reason, /holder 0–3 \(holds them\); ~[\d.]+ ms\/token; forms at once$/);
    const fetcher = planned(planShards(shape, candidates, {exclude: new Set(['holder'])}), t);
    t.is(fetcher.stages[1]!.peerId, 'fetcher');
    t.is(fetcher.estimatedFormSeconds, 80);
    const fed = planned(planShards(shape, candidates, {exclude: new Set(['holder', 'fetcher'])}), t);
    t.is(fed.stages[1]!.peerId, 'fed');
    t.is(fed.estimatedFormSeconds, 1600);
    t.true(fed.estimatedMsPerToken * 10 < fetcher.estimatedMsPerToken && fetcher.estimatedMsPerToken < holder.estimatedMsPerToken, 'each loses per token');
    for (const plan of [holder, fetcher, fed])
        assertValid(t, shape, candidates, plan);
});

test('plans that form within 5% of each other form equally fast: the faster per token wins; beyond, the sooner', (t) => {
    const shape = bigShape(4);
    const near = bigPeer('near', {sourceBytesPerSecond: 10e6, rttMs: 5});
    // 384.6 s against 400 s: 3.8% apart.
    const tie = planned(planShards(shape, [bigCoordinator(), bigPeer('far', {sourceBytesPerSecond: 10.4e6, rttMs: 100}), near]), t);
    t.is(tie.stages[1]!.peerId, 'near');
    // 384.6 s against 444.4 s: the far one forms sooner, and wins.
    const apart = planned(planShards(shape, [bigCoordinator(), bigPeer('far', {sourceBytesPerSecond: 10.4e6, rttMs: 100}), {...near, sourceBytesPerSecond: 9e6}]), t);
    t.is(apart.stages[1]!.peerId, 'far');
    // Among holders, forming at once all, per token as before.
    const holders = planned(planShards(shape, [bigCoordinator(), bigPeer('far', {heldLayers: [[0, 3]], rttMs: 100}), {...near, heldLayers: [[0, 3]]}]), t);
    t.is(holders.stages[1]!.peerId, 'near');
});

test('the uplink is shared: a host that fetches slowly from the source beats a second host this node must feed', (t) => {
    const candidates = [bigCoordinator(), bigPeer('fed1', {rttMs: 5}), bigPeer('fed2', {rttMs: 5}), bigPeer('slow', {sourceBytesPerSecond: 1.5e6, rttMs: 100})];
    const plan = planned(planShards(bigShape(8), candidates), t);
    // Alone, the source is slower than the uplink (2,667 s against 1,600 s for 4 GB); two fed hosts would take 3,200 s.
    t.true(plan.stages.some((stage) => stage.peerId === 'slow'));
    t.is(plan.estimatedFormSeconds, 4 * GB / 1.5e6);
    const withoutSlow = planned(planShards(bigShape(8), candidates, {exclude: new Set(['slow'])}), t);
    t.is(withoutSlow.estimatedFormSeconds, 3200);
    t.true(withoutSlow.estimatedMsPerToken < plan.estimatedMsPerToken);
    assertValid(t, bigShape(8), candidates, plan);
});

test('more bytes from the source beat fewer through the uplink: the plan that forms first, not the one that moves least', (t) => {
    const candidates = [bigCoordinator(), bigPeer('partial', {heldLayers: [[0, 1]], rttMs: 5}), bigPeer('fetcher', {sourceBytesPerSecond: 12.5e6, rttMs: 50})];
    const plan = planned(planShards(bigShape(4), candidates), t);
    t.like(plan.stages[1], {peerId: 'fetcher', transferBytes: 4 * GB, formSeconds: 320});
    const partial = planned(planShards(bigShape(4), candidates, {exclude: new Set(['fetcher'])}), t);
    t.like(partial.stages[1], {peerId: 'partial', transferBytes: 2 * GB, formSeconds: 800, weightsFrom: 'coordinator'});
});

test('peers are ordered so that each gets its range soonest: a fetcher takes the layers nobody holds', (t) => {
    // The holder of 4–7 takes them; the fetcher the rest, though it was listed first.
    const candidates = [bigCoordinator(), bigPeer('fetcher', {sourceBytesPerSecond: 10e6}), bigPeer('holder', {heldLayers: [[4, 7]]})];
    const plan = planned(planShards(bigShape(8), candidates), t);
    t.deepEqual(layout(plan), ['self -', 'fetcher 0–3', 'holder 4–7']);
    t.is(plan.estimatedFormSeconds, 400);
});

test('a ready spare, holding exactly the failed stage\'s layers, replaces it before a faster peer that must fetch them', (t) => {
    const previous = planned(planShards(shapeOf(16), scenario(), SCENARIO_OPTIONS), t);
    const spare = peer('spare', [[4, 7]], {rttMs: 60, successRate: 0.9});
    const fast = peer('fast', [], {tflops: 1.4, rttMs: 1, sourceBytesPerSecond: 1e9});
    const candidates = [...scenario({}, ['p5']), spare, fast];
    const plan = planned(replanAfterFailure(shapeOf(16), previous, 'p2', candidates, SCENARIO_OPTIONS), t);
    t.like(plan, {repair: 'replace', estimatedFormSeconds: 0});
    t.deepEqual(layout(plan), ['self -', 'p1 0–3', 'spare 4–7', 'p3 8–11', 'p4 12–15']);
    t.regex(plan.reason, /^p2 failed, spare \(holds them\) takes 4–7; 5 stages: .*; forms at once$/);
    assertValid(t, shapeOf(16), candidates, plan, {...SCENARIO_OPTIONS, exclude: new Set(['p2'])});
    // Without it, the neighbours have no room: the peer that fetches from the source takes the range, before peer 6, which this node must feed.
    const without = planned(replanAfterFailure(shapeOf(16), previous, 'p2', [...scenario({}, ['p5']), fast], SCENARIO_OPTIONS), t);
    t.like(without, {repair: 'others'});
    t.like(without.stages[2], {peerId: 'fast', weightsFrom: 'source', formSeconds: 4 * LAYER / 1e9});
    t.regex(without.reason, /fast 4–7 \(fetches 400 B from the source\)/);
});

test('a ready spare faster than the failed stage replaces it too; of several, the fastest per token', (t) => {
    const previous = planned(planShards(shapeOf(16), scenario(), SCENARIO_OPTIONS), t);
    const faster = planned(replanAfterFailure(shapeOf(16), previous, 'p2', scenario({p5: {tflops: 4}}), SCENARIO_OPTIONS), t);
    t.like(faster, {repair: 'replace'});
    t.is(faster.stages[2]!.peerId, 'p5');
    const candidates = [...scenario({p5: {tflops: 4}}), peer('p7', [[4, 7]], {rttMs: 5})];
    t.is(planned(replanAfterFailure(shapeOf(16), previous, 'p2', candidates, SCENARIO_OPTIONS), t).stages[2]!.peerId, 'p7');
    // 1.5 times slower still replaces; more than that does not.
    t.like(planned(replanAfterFailure(shapeOf(16), previous, 'p2', scenario({p5: {tflops: 1 / 1.5}}), SCENARIO_OPTIONS), t), {repair: 'replace'});
    t.not(planned(replanAfterFailure(shapeOf(16), previous, 'p2', scenario({p5: {tflops: 0.66}}), SCENARIO_OPTIONS), t).repair, 'replace');
});

// Failures and edge cases.

test('a model that fits nowhere: the reason names what it needs and what is offered', (t) => {
    const candidates = [coordinator(), peer('a', [], {freeMemoryBytes: roomFor(4)}), peer('b', [], {freeMemoryBytes: roomFor(4)})];
    const result = planShards(shapeOf(16, {modelId: 'llama'}), candidates);
    t.deepEqual(result, {ok: false, code: 'not_enough_memory', reason: "model 'llama' needs 1.8 KB, this node and the 2 usable peers offer 1.0 KB"});
});

test('a coordinator without room for the input embeddings has no plan', (t) => {
    const candidates = [coordinator({freeMemoryBytes: INPUT - 1}), peer('a', [], {freeMemoryBytes: roomFor(16)})];
    t.deepEqual(planShards(shapeOf(16), candidates), {ok: false, code: 'not_enough_memory', reason: 'this node has 29 B for the model, its input embeddings alone need 30 B'});
});

test('room for every layer but not for the output layer on a last stage is explained', (t) => {
    const candidates = [coordinator(), peer('a', [], {freeMemoryBytes: 16 * PER_LAYER}), peer('b', [], {freeMemoryBytes: PER_LAYER + OUTPUT - 1})];
    const result = planShards(shapeOf(16), candidates, {maxStages: 2});
    t.like(result, {ok: false, code: 'not_enough_memory'});
    t.regex((result as {reason: string}).reason, /no arrangement of whole layers leaves room for the output layer \(50 B\) on the last stage/);
    // A third stage solves it: "b" takes a layer, not the output, and "a" the rest with the output.
    const plan = planned(planShards(shapeOf(16), candidates, {maxStages: 3}), t);
    t.deepEqual(layout(plan), ['self -', 'b 0–0', 'a 1–15']);
});

test('no peers: the coordinator alone, or no plan', (t) => {
    t.deepEqual(layout(planned(planShards(shapeOf(3), [coordinator({freeMemoryBytes: INPUT + 3 * PER_LAYER + OUTPUT})]), t)), ['self 0–2']);
    t.like(planShards(shapeOf(3), [coordinator()]), {ok: false, code: 'not_enough_memory', reason: 'the model needs 410 B, this node and the 0 usable peers offer 30 B'});
});

test('all peers excluded: as with none', (t) => {
    const candidates = [coordinator(), peer('a', [[0, 3]]), peer('b', [[0, 3]])];
    const options = {exclude: new Set(['a', 'b'])};
    t.like(planShards(shapeOf(4), candidates, options), {ok: false, code: 'not_enough_memory'});
    t.is(planned(planShards(shapeOf(4), candidates, {exclude: new Set(['a'])}), t).stages[1]!.peerId, 'b');
    const roomy = [coordinator({freeMemoryBytes: INPUT + 4 * PER_LAYER + OUTPUT}), ...candidates.slice(1)];
    t.deepEqual(layout(planned(planShards(shapeOf(4), roomy, options), t)), ['self 0–3']);
});

test('a one-layer model: on the coordinator, or on one peer with the output layer', (t) => {
    t.deepEqual(layout(planned(planShards(shapeOf(1), [coordinator({freeMemoryBytes: INPUT + PER_LAYER + OUTPUT})]), t)), ['self 0–0']);
    const candidates = [coordinator(), peer('a', [])];
    const plan = planned(planShards(shapeOf(1), candidates, {maxStages: 3}), t);
    t.deepEqual(layout(plan), ['self -', 'a 0–0']);
    t.is(plan.stages[1]!.bytes, PER_LAYER + OUTPUT);
    t.is(plan.stages[1]!.transferBytes, LAYER + OUTPUT);
    t.like(planShards(shapeOf(1), candidates, {minStages: 3}), {ok: false, code: 'not_enough_peers'});
});

test('memory exactly at the limit fits; a byte less does not', (t) => {
    const exact = roomFor(4);
    const at = [coordinator(), peer('a', [[0, 3]], {freeMemoryBytes: exact})];
    const plan = planned(planShards(shapeOf(4), at), t);
    t.is(plan.stages[1]!.bytes, exact);
    t.like(planShards(shapeOf(4), [coordinator(), peer('a', [[0, 3]], {freeMemoryBytes: exact - 1})]), {ok: false});
    const coordinatorExact = INPUT + 4 * PER_LAYER + OUTPUT;
    t.deepEqual(layout(planned(planShards(shapeOf(4), [coordinator({freeMemoryBytes: coordinatorExact})]), t)), ['self 0–3']);
    t.like(planShards(shapeOf(4), [coordinator({freeMemoryBytes: coordinatorExact - 1})]), {ok: false});
});

test('the KV cache for the context counts against memory', (t) => {
    const candidates = [coordinator(), peer('a', [], {freeMemoryBytes: 4 * LAYER + OUTPUT})];
    t.true(planShards(shapeOf(4, {contextTokens: 0}), candidates).ok);
    t.false(planShards(shapeOf(4, {contextTokens: 1}), candidates).ok);
    t.is(planned(planShards(shapeOf(4, {contextTokens: 0}), candidates), t).stages[1]!.bytes, 4 * LAYER + OUTPUT);
});

test('a candidate with no free memory is never a stage, nor counted as usable', (t) => {
    const candidates = [coordinator(), peer('empty', [[0, 15]], {freeMemoryBytes: 0}), peer('a', [], {freeMemoryBytes: roomFor(16)})];
    t.deepEqual(layout(planned(planShards(shapeOf(16), candidates), t)), ['self -', 'a 0–15']);
    t.regex((planShards(shapeOf(16), candidates.slice(0, 2)) as {reason: string}).reason, /the 0 usable peers/);
});

test('layers of unequal size count as the largest of them, so that any split fits', (t) => {
    const shape = shapeOf(6, {layerBytes: [100, 300, 100, 100, 300, 100]});
    // Room for three of the largest layers (310 bytes with their KV cache) and the output layer.
    const candidates = [coordinator(), peer('a', [], {freeMemoryBytes: 3 * 310 + OUTPUT}), peer('b', [], {freeMemoryBytes: 3 * 310 + OUTPUT})];
    const plan = planned(planShards(shape, candidates), t);
    t.deepEqual(plan.stages.map((stage) => stage.layerCount), [0, 3, 3]);
    assertValid(t, shape, candidates, plan);
    // 0–2 and 3–5 would fit 700 bytes each (530 and 580), but not any three layers: no plan is made.
    t.like(planShards(shape, [coordinator(), peer('a', [], {freeMemoryBytes: 700}), peer('b', [], {freeMemoryBytes: 700})]), {ok: false});
});

test('held ranges beyond the model are ignored', (t) => {
    const beyond = planned(planShards(shapeOf(4), [coordinator(), peer('a', [[2, 40]])]), t);
    t.is(beyond.stages[1]!.transferBytes, 2 * LAYER + OUTPUT);
    // Both ends clipped cover the whole model, so the output layer counts as held.
    const whole = planned(planShards(shapeOf(4), [coordinator(), peer('a', [[2, 40], [-5, 1]])]), t);
    t.is(whole.stages[1]!.transferBytes, 0);
});

test('invalid input is refused', (t) => {
    const valid = [coordinator(), peer('a', [])];
    const refuses = (shape: ModelShape, candidates: ShardCandidate[], options: ShardPlanOptions, message: RegExp) =>
        t.throws(() => planShards(shape, candidates, options), {instanceOf: RangeError, message});
    refuses(shapeOf(4), [...valid, peer('a', [])], {}, /repeat a peer id/);
    refuses(shapeOf(4), [peer('a', [])], {}, /exactly one candidate must be the coordinator, not 0/);
    refuses(shapeOf(4), [...valid, coordinator({peerId: 'other'})], {}, /not 2/);
    refuses(shapeOf(4), valid, {exclude: new Set(['self'])}, /coordinator cannot be excluded/);
    refuses(shapeOf(0), valid, {}, /at least one layer/);
    refuses(shapeOf(2, {layerBytes: [100, 0]}), valid, {}, /at least one layer/);
    refuses(shapeOf(2, {outputBytes: -1}), valid, {}, /finite/);
    refuses(shapeOf(2, {contextTokens: Number.NaN}), valid, {}, /finite/);
    refuses(shapeOf(4), valid, {maxStages: 0}, /stage limits/);
    refuses(shapeOf(4), valid, {minStages: 3, maxStages: 2}, /stage limits/);
    refuses(shapeOf(4), valid, {maxStages: 2.5}, /stage limits/);
    refuses(shapeOf(4), [coordinator(), peer('a', [], {freeMemoryBytes: -1})], {}, /candidate a/);
    refuses(shapeOf(4), [coordinator(), peer('a', [], {successRate: 2})], {}, /candidate a/);
    refuses(shapeOf(4), [coordinator(), peer('a', [], {tflops: Number.POSITIVE_INFINITY})], {}, /candidate a/);
    refuses(shapeOf(4), [coordinator(), peer('a', [[0.5, 2]])], {}, /candidate a/);
    refuses(shapeOf(4), valid, {uplinkBytesPerSecond: 0}, /invalid uplink/);
    refuses(shapeOf(4), valid, {uplinkBytesPerSecond: -1}, /invalid uplink/);
    refuses(shapeOf(4), valid, {uplinkBytesPerSecond: Number.NaN}, /invalid uplink/);
    refuses(shapeOf(4), valid, {uplinkBytesPerSecond: Number.POSITIVE_INFINITY}, /invalid uplink/);
    refuses(shapeOf(4), [coordinator(), peer('a', [], {sourceBytesPerSecond: -1})], {}, /candidate a/);
    refuses(shapeOf(4), [coordinator(), peer('a', [], {sourceBytesPerSecond: Number.NaN})], {}, /candidate a/);
    refuses(shapeOf(4), [coordinator(), peer('a', [], {sourceBytesPerSecond: Number.POSITIVE_INFINITY})], {}, /candidate a/);
    t.notThrows(() => planShards(shapeOf(4), valid, {maxStages: undefined, minStages: undefined, uplinkBytesPerSecond: undefined}));
    t.notThrows(() => planShards(shapeOf(4), [coordinator(), peer('a', [], {sourceBytesPerSecond: 0}), peer('b', [], {sourceBytesPerSecond: null})]));
});

test('a large swarm is planned quickly, from the best of it', (t) => {
    const candidates = [coordinator(), ...Array.from({length: 60}, (_, index) => peer(`p${index}`, index === 42 ? [[0, 31]] : [], {freeMemoryBytes: roomFor(10), rttMs: 10 + index}))];
    const started = performance.now();
    const plan = planned(planShards(shapeOf(32), candidates, {maxStages: 8}), t);
    t.true(performance.now() - started < 2000);
    t.true(plan.stages.some((stage) => stage.peerId === 'p42'));
    assertValid(t, shapeOf(32), candidates, plan, {maxStages: 8});
});

// Invariants over random inputs, checked against a brute-force search for the fewest stages that fit.

function random(seed: number) {
    const generator = new Prng(seed);
    return () => generator.next();
}

interface Instance {
    shape: ModelShape,
    candidates: ShardCandidate[],
    options: ShardPlanOptions & {exclude: Set<string>}
}

function randomInstance(next: () => number, {uniform, maxLayers, maxPeers}: {uniform: boolean, maxLayers: number, maxPeers: number}): Instance {
    const integer = (low: number, high: number) => low + Math.floor(next() * (high - low + 1));
    const layers = integer(1, maxLayers);
    const layerBytes = Array.from({length: layers}, () => uniform ? LAYER : integer(50, 200));
    const shape = shapeOf(layers, {layerBytes, inputBytes: integer(0, 60), outputBytes: integer(0, 150), kvBytesPerTokenPerLayer: integer(0, 2), contextTokens: integer(0, 20),
        ...(next() < 0.5 && {computeBytes: integer(0, 80)})});
    const perLayer = Math.max(...layerBytes) + shape.kvBytesPerTokenPerLayer * shape.contextTokens;
    const range = (): LayerRange => {
        const first = integer(0, layers - 1);
        return [first, integer(first, layers - 1)];
    };
    const figures = () => ({
        tflops: next() < 0.2 ? null : next() < 0.1 ? 0 : integer(1, 40) / 4,
        rttMs: next() < 0.2 ? null : integer(1, 150),
        successRate: integer(0, 10) / 10
    });
    const candidates = [coordinator({...figures(), freeMemoryBytes: Math.max(0, shape.inputBytes + integer(-1, Math.ceil(layers / 2)) * perLayer + integer(0, 1) * shape.outputBytes)})];
    for (let index = integer(0, maxPeers); index > 0; index--) {
        const held = next() < 0.2 ? [[0, layers - 1] as LayerRange] : Array.from({length: integer(0, 2)}, range);
        candidates.push(peer(`peer${index}`, held, {
            ...figures(),
            freeMemoryBytes: next() < 0.1 ? 0 : integer(0, layers) * perLayer + integer(0, 1) * shape.outputBytes + integer(0, 30),
            ...(next() < 0.3 ? {holdsOutput: next() < 0.5} : {})
        }));
    }
    const exclude = new Set(candidates.filter((candidate) => !candidate.self && next() < 0.15).map((candidate) => candidate.peerId));
    const minStages = integer(1, 2);
    return {shape, candidates, options: {minStages, maxStages: integer(minStages, 5), exclude}};
}

/** The instance with some peers able to fetch from the source (some at a rate of 0: they cannot), and an uplink of its own. */
function withSources(instance: Instance, random: SeededRandom): Instance {
    const candidates = instance.candidates.map((candidate) => candidate.self || random.chance(0.4) ? candidate
        : {...candidate, sourceBytesPerSecond: random.chance(0.15) ? random.pick([0, null]) : random.int(1, 400) * 1e3});
    return {...instance, candidates, options: {...instance.options, uplinkBytesPerSecond: random.int(1, 400) * 1e3}};
}

/** The fewest stages of any plan that fits, by trying every sequence of peers and every split; null when none does. */
function fewestStages({shape, candidates, options}: Instance): number | null {
    const layers = shape.layerBytes.length;
    const kv = shape.kvBytesPerTokenPerLayer * shape.contextTokens;
    const bytes = (first: number, count: number, self: boolean, last: boolean) =>
        shape.layerBytes.slice(first, first + count).reduce((sum, value) => sum + value + kv, 0) + (count > 0 ? shape.computeBytes ?? 0 : 0)
        + (self ? shape.inputBytes : 0) + (last ? shape.outputBytes : 0);
    const peers = candidates.filter((candidate) => !candidate.self && !options.exclude.has(candidate.peerId));
    const self = candidates.find((candidate) => candidate.self)!;
    let best: number | null = null;
    const extend = (next: number, used: Set<string>, stages: number) => {
        if (next === layers) {
            if (stages >= options.minStages! && stages <= options.maxStages! && (best === null || stages < best))
                best = stages;
            return;
        }
        if (stages >= options.maxStages!)
            return;
        for (const candidate of peers.filter((other) => !used.has(other.peerId)))
            for (let count = 1; next + count <= layers; count++)
                if (bytes(next, count, false, next + count === layers) <= candidate.freeMemoryBytes)
                    extend(next + count, new Set([...used, candidate.peerId]), stages + 1);
    };
    for (let count = 0; count <= layers; count++)
        if (bytes(0, count, true, count === layers) <= self.freeMemoryBytes)
            extend(count, new Set(), 1);
    return best;
}

test('random plans keep every invariant, with the fewest stages that fit', (t) => {
    const next = random(20261127);
    let planned = 0;
    for (let run = 0; run < 400; run++) {
        const instance = randomInstance(next, {uniform: true, maxLayers: 7, maxPeers: 4});
        const result = planShards(instance.shape, instance.candidates, instance.options);
        const fewest = fewestStages(instance);
        if (fewest === null) {
            t.false(result.ok, `run ${run}: no plan fits, yet one was made`);
            continue;
        }
        if (!result.ok) {
            t.fail(`run ${run}: a plan of ${fewest} stages fits, yet none was made: ${result.reason}`);
            continue;
        }
        planned++;
        t.is(result.plan.stages.length, fewest, `run ${run}`);
        assertValid(t, instance.shape, instance.candidates, result.plan, instance.options);
    }
    t.true(planned > 100, `only ${planned} of the random instances had a plan`);
});

test('random plans with layers of unequal size and larger swarms keep every invariant', (t) => {
    const next = random(7);
    let planned = 0;
    for (let run = 0; run < 300; run++) {
        const instance = randomInstance(next, {uniform: false, maxLayers: 40, maxPeers: 9});
        const result = planShards(instance.shape, instance.candidates, instance.options);
        if (result.ok) {
            planned++;
            assertValid(t, instance.shape, instance.candidates, result.plan, instance.options);
        } else
            t.true(result.reason.length > 0);
    }
    t.true(planned > 50, `only ${planned} of the random instances had a plan`);
});

test('random replans keep every invariant and leave the stages away from the failure as they were', (t) => {
    const next = random(99);
    const repairs = new Set<string>();
    for (let run = 0; run < 400; run++) {
        const instance = randomInstance(next, {uniform: next() < 0.5, maxLayers: 16, maxPeers: 8});
        const first = planShards(instance.shape, instance.candidates, instance.options);
        const remote = first.ok ? first.plan.stages.filter((stage) => !stage.self) : [];
        if (!first.ok || remote.length === 0)
            continue;
        const previous = first.plan;
        const failed = remote[Math.floor(next() * remote.length)]!.peerId;
        const index = previous.stages.findIndex((stage) => stage.peerId === failed);
        // Sometimes another peer is gone too.
        const gone = next() < 0.3 ? instance.candidates[1 + Math.floor(next() * (instance.candidates.length - 1))]?.peerId : undefined;
        const candidates = instance.candidates.filter((candidate) => candidate.peerId !== gone || candidate.peerId === failed);
        const result = replanAfterFailure(instance.shape, previous, failed, candidates, instance.options);
        const exclude = new Set([...instance.options.exclude, failed]);
        if (!result.ok) {
            t.false(planShards(instance.shape, candidates, {...instance.options, exclude}).ok, `run ${run}: a fresh plan exists`);
            continue;
        }
        const plan = result.plan;
        repairs.add(plan.repair);
        assertValid(t, instance.shape, candidates, plan, {...instance.options, exclude});
        if (plan.repair === 'fresh')
            continue;
        const now = new Map(plan.stages.map((stage) => [stage.peerId, stage]));
        previous.stages.forEach((stage, position) => {
            if (position === index)
                return;
            const kept = now.get(stage.peerId);
            t.truthy(kept, `run ${run}: ${plan.repair} keeps ${stage.peerId}`);
            if (Math.abs(position - index) > 1)
                t.deepEqual([kept!.firstLayer, kept!.lastLayer], [stage.firstLayer, stage.lastLayer], `run ${run}: a stage away from the failure keeps its layers`);
            else if (stage.layerCount > 0)
                t.true(kept!.firstLayer! <= stage.firstLayer! && kept!.lastLayer! >= stage.lastLayer!, `run ${run}: a neighbour keeps its layers`);
        });
        const expected = {replace: previous.stages.length, neighbours: previous.stages.length - 1}[plan.repair as string];
        if (expected !== undefined)
            t.is(plan.stages.length, expected);
    }
    t.deepEqual([...repairs].sort(), ['fresh', 'neighbours', 'others', 'replace'], 'the random cases reach every repair');
});

test('random plans and replans with hosts that fetch from the source: each stage\'s weights as its holdings and rate say, the form estimate its formula', (t) => {
    const random = new SeededRandom(25);
    const next = () => random.next();
    const sources = new Set<string>();
    let replans = 0;
    for (let run = 0; run < 300; run++) {
        const instance = withSources(randomInstance(next, {uniform: random.chance(0.5), maxLayers: 16, maxPeers: 7}), random);
        const result = planShards(instance.shape, instance.candidates, instance.options);
        // Where weights come from decides between plans of as many stages, never whether there is one nor how many stages.
        const plain = planShards(instance.shape, instance.candidates.map(({sourceBytesPerSecond: _, ...candidate}) => candidate), instance.options);
        t.is(result.ok, plain.ok, `run ${run}`);
        if (!result.ok || !plain.ok)
            continue;
        t.is(result.plan.stages.length, plain.plan.stages.length, `run ${run}`);
        assertValid(t, instance.shape, instance.candidates, result.plan, instance.options);
        for (const stage of result.plan.stages)
            sources.add(stage.weightsFrom);
        const remote = result.plan.stages.filter((stage) => !stage.self);
        if (remote.length === 0)
            continue;
        const failed = random.pick(remote).peerId;
        const replan = replanAfterFailure(instance.shape, result.plan, failed, instance.candidates, instance.options);
        if (replan.ok) {
            replans++;
            assertValid(t, instance.shape, instance.candidates, replan.plan, {...instance.options, exclude: new Set([...instance.options.exclude, failed])});
        }
    }
    t.deepEqual([...sources].sort(), ['coordinator', 'held', 'source'], 'the random cases reach every source of weights');
    t.true(replans > 50, `only ${replans} replans`);
});
