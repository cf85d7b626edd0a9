/**
 * Spare hosts for a pipeline: peers outside the plan, each asked ahead to get the layers of the remote stage it would
 * replace (from the model's source where it can), so that a failover moves no weights: replanAfterFailure takes a
 * ready spare first (docs/architecture.md, "Sharding"). Pure, tested in test/spare-picker.test.ts.
 */

import {
    computeOf, fastEnoughToReplace, type ModelShape, type ShardCandidate, type ShardPlan, type ShardPlanOptions, stageFigures, validatePlanInput,
    type WeightsFrom
} from './shard-planner.js';

export interface ShardSpare {
    peerId: string,
    /** The peer of the remote stage it would replace. */
    replaces: string,
    /** That stage's layers, 0-based and inclusive. */
    firstLayer: number,
    lastLayer: number,
    /** Memory it would hold as that stage, by the planner's rules (ShardStage.bytes). */
    bytes: number,
    /** Weights of that stage it lacks: what it should get ahead. */
    transferBytes: number,
    /** Where it would get them (`held`: it is ready now). */
    weightsFrom: WeightsFrom
}

/** Spares that hold the layers come first, then those that fetch them from the source, then those the coordinator must feed. */
const WEIGHTS_RANK: Record<WeightsFrom, number> = {held: 0, source: 1, coordinator: 2};

interface Offer {
    stage: number,
    candidate: ShardCandidate,
    spare: ShardSpare,
    /** Compared in order, lower first. */
    key: number[]
}

/**
 * Up to `count` spares for the remote stages of `plan` (made by planShards or replanAfterFailure with the same
 * `shape` and options). A spare is a candidate outside the plan, not the coordinator nor excluded, with room for the
 * stage and not much slower than it (the rule replanAfterFailure replaces by). Preferred, in order: it holds the
 * layers, else fetches them from the source, else must receive them through the coordinator; compute closest to the
 * stage's (by ratio); the nearest (an unmeasured RTT last); the most reliable. Every remote stage that has a possible
 * spare gets one before any gets a second; within a round, the best pairs of stage and spare are taken first.
 */
export function pickSpares(shape: ModelShape, plan: ShardPlan, candidates: readonly ShardCandidate[], count: number,
    options: ShardPlanOptions = {}): ShardSpare[] {
    const {exclude, uplinkBytesPerSecond} = validatePlanInput(shape, candidates, options);
    if (!Number.isInteger(count) || count < 0)
        throw new RangeError(`invalid number of spares: ${count}`);
    if (plan.stages.at(-1)?.lastLayer !== shape.layerBytes.length - 1)
        throw new RangeError('the plan is for a model of another size');
    const inPlan = new Set(plan.stages.map((stage) => stage.peerId));
    const free = candidates.filter((candidate) => !candidate.self && !inPlan.has(candidate.peerId) && !exclude.has(candidate.peerId));
    const offers: Offer[] = [];
    plan.stages.forEach((stage, position) => {
        if (stage.self || stage.layerCount === 0)
            return;
        const firstLayer = stage.firstLayer!;
        const lastLayer = stage.lastLayer!;
        for (const candidate of free) {
            const figures = stageFigures(shape, candidate, firstLayer, stage.layerCount, position === plan.stages.length - 1, {uplinkBytesPerSecond});
            if (figures.bytes > candidate.freeMemoryBytes || !fastEnoughToReplace(candidate, stage))
                continue;
            const {bytes, transferBytes, weightsFrom} = figures;
            offers.push({
                stage: position,
                candidate,
                spare: {peerId: candidate.peerId, replaces: stage.peerId, firstLayer, lastLayer, bytes, transferBytes, weightsFrom},
                key: [WEIGHTS_RANK[weightsFrom], Math.abs(Math.log(computeOf(candidate) / stage.tflops)), candidate.rttMs ?? Number.POSITIVE_INFINITY, -candidate.successRate]
            });
        }
    });
    // Stable: equal offers keep the plan's stage order, then the candidates' order.
    offers.sort((a, b) => compareKeys(a.key, b.key));
    const spares: ShardSpare[] = [];
    const taken = new Set<string>();
    while (spares.length < count) {
        const covered = new Set<number>();
        for (const offer of offers) {
            if (spares.length === count)
                break;
            if (taken.has(offer.candidate.peerId) || covered.has(offer.stage))
                continue;
            spares.push(offer.spare);
            taken.add(offer.candidate.peerId);
            covered.add(offer.stage);
        }
        if (covered.size === 0)
            break;
    }
    return spares;
}

function compareKeys(a: readonly number[], b: readonly number[]) {
    for (const [index, value] of a.entries()) {
        const other = b[index]!;
        if (value !== other)
            return value < other ? -1 : 1;
    }
    return 0;
}
