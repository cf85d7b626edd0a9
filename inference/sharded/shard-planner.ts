/**
 * Which peers run which layers of a model over llama.cpp's RPC backend, and where the coordinator's own layers are
 * (docs/architecture.md, "Sharding"). Pure, so every rule is tested without a network (test/shard-planner.test.ts).
 */

import {formatBytes} from '../../core/display.js';

/** Layers `[first, last]`, 0-based and inclusive. */
export type LayerRange = readonly [first: number, last: number];

/** What a plan needs to know of a model (engine/model-files.ts reads all but the context from the GGUF file). */
export interface ModelShape {
    /** Bytes of each repeating layer's weights, in layer order. */
    layerBytes: readonly number[],
    /** Token embeddings: they stay on the coordinator. */
    inputBytes: number,
    /** The output layer (norm and projection): it goes with the last stage. */
    outputBytes: number,
    /** KV cache one token of context costs in one layer. */
    kvBytesPerTokenPerLayer: number,
    /** Context each stage keeps a KV cache for: every sequence's. */
    contextTokens: number,
    /**
     * llama.cpp's compute buffer on a device holding layers (`stageComputeBytes`); defaults to 0. A host holds a
     * session to the bytes it asked for, so this must not be short.
     */
    computeBytes?: number,
    /** Named in the reasons; defaults to none. */
    modelId?: string
}

export interface ShardCandidate {
    peerId: string,
    /** The coordinator: this node. Exactly one candidate is; it holds the whole model and never receives weights. */
    self: boolean,
    /** Memory it can give this model, what it holds of it now included. */
    freeMemoryBytes: number,
    /** Measured compute, TFLOP/s; null when unknown. */
    tflops: number | null,
    /** null when not measured. */
    rttMs: number | null,
    /** 0..1. */
    successRate: number,
    /** Layers it holds already (a GGUF file, a tensor cache): they need no transfer. Parts beyond the model are ignored. */
    heldLayers: readonly LayerRange[],
    /** It holds the output layer too; defaults to holding it exactly when it holds every layer (a whole GGUF file). */
    holdsOutput?: boolean,
    /**
     * Bytes per second at which it can download this model's layers from the model's public source (measured by it, or
     * announced). Undefined, null or 0: it cannot, and receives what it lacks through the coordinator's uplink.
     */
    sourceBytesPerSecond?: number | null
}

export interface ShardPlanOptions {
    /** Most stages in a plan, the coordinator's included (it is a stage even with no layers); defaults to 4. */
    maxStages?: number,
    /** Fewest stages, e.g. 2 to split a model that fits the coordinator alone; defaults to 1. */
    minStages?: number,
    /** Peers left out (failed recently); defaults to none. */
    exclude?: ReadonlySet<string>,
    /**
     * The coordinator's measured uplink, bytes per second: every stage that receives weights from it shares it.
     * Defaults to a home uplink's 20 Mbit/s (`shardPlannerDefaults.uplinkBytesPerSecond`).
     */
    uplinkBytesPerSecond?: number
}

/**
 * Where a stage's missing weights come from: it holds them all (`held`: the coordinator's stage always), downloads them
 * from the model's source (`source`), or receives them through the coordinator's uplink (`coordinator`).
 */
export type WeightsFrom = 'held' | 'source' | 'coordinator';

export interface ShardStage {
    peerId: string,
    self: boolean,
    /** Both undefined when the stage takes no layer (only the coordinator may). */
    firstLayer?: number,
    lastLayer?: number,
    layerCount: number,
    /**
     * Memory it will hold: its layers' weights, KV cache and compute buffer, the input embeddings (coordinator), the
     * output layer (last stage).
     */
    bytes: number,
    /** Weights it must receive before it can load: those it does not hold; 0 for the coordinator. */
    transferBytes: number,
    /** `held` exactly when transferBytes is 0; else `source` when the candidate can fetch from it, else `coordinator`. */
    weightsFrom: WeightsFrom,
    /**
     * Seconds to get its transferBytes at its rate alone: the source's for this candidate, or the whole uplink (which
     * stages fed by the coordinator share: see ShardPlan.estimatedFormSeconds); 0 when held.
     */
    formSeconds: number,
    /** The compute the plan counted for it, TFLOP/s (a default when unknown). */
    tflops: number
}

export interface ShardPlan {
    /** In layer order, the coordinator's first. */
    stages: ShardStage[],
    estimatedMsPerToken: number,
    /**
     * Seconds until every stage has its weights: downloads from the source run in parallel, one per host, while every
     * byte through the coordinator shares its one uplink; the slowest of those. Every missing byte counts, though ggml-rpc
     * sends tensors of 10 MiB or less at each load anyway (docs/architecture.md, "Sharding"): an estimate to compare plans.
     */
    estimatedFormSeconds: number,
    /** One line for logs and the dashboard. */
    reason: string
}

/** How a failed stage was replaced: see replanAfterFailure. */
export type ShardRepair = 'replace' | 'neighbours' | 'others' | 'fresh';

export interface ShardReplan extends ShardPlan {
    repair: ShardRepair
}

export type ShardPlanFailureCode =
    /** The coordinator and the usable peers together have too little memory. */
    | 'not_enough_memory'
    /** The memory is there, but only over more stages than allowed. */
    | 'too_many_stages'
    /** Fewer usable peers than the stages asked for. */
    | 'not_enough_peers';

export type ShardPlanResult<P extends ShardPlan = ShardPlan> = {ok: true, plan: P} | {ok: false, code: ShardPlanFailureCode, reason: string};

/** Each remote stage is a destination the coordinator exchanges activations with: ~1.1 round trips per token (docs/architecture.md, "Sharding"). */
const ROUND_TRIPS_PER_TOKEN = 1.1;

/**
 * Generating a token reads every weight once, so a stage's time is its bytes over its memory bandwidth. Candidates
 * announce compute, not bandwidth: consumer GPUs read about 20 GB/s per TFLOP/s, a proxy good enough to compare.
 */
const READ_BYTES_PER_MS_PER_TFLOPS = 20e6;

/** A peer that has not measured its compute counts as a modest one: it gets a share but outweighs no measured GPU. */
const DEFAULT_TFLOPS = 1;

/** Compute counted for a peer that measured none: it takes layers only when nobody else has room, and no division by zero. */
const MIN_TFLOPS = 0.01;

/** A peer not yet pinged counts as a far one, so measured near ones win ties. */
const DEFAULT_RTT_MS = 100;

/** A peer without successes still counts a little, so that plans of only such peers remain comparable. */
const MIN_SUCCESS_RATE = 0.05;

/**
 * A ready replacement may be slower than the failed stage by this factor at most (a faster one only speeds the
 * pipeline up); spares are picked by the same rule.
 */
const SIMILAR_COMPUTE_RATIO = 1.5;

/**
 * Plans whose times to form differ by at most this fraction of the longer one form equally fast: the faster per token
 * wins. Relative, so a plan that forms at once (nothing to move) never ties with one that must move any bytes.
 */
const FORM_TOLERANCE = 0.05;

/**
 * Peers a search considers, half the best holders of the layers and half those with the most room: every subset of
 * them is tried, so the search stays fast in a large swarm.
 */
const POOL_HALF = 6;

export const shardPlannerDefaults = {
    maxStages: 4,
    minStages: 1,
    /** 20 Mbit/s: a home uplink, what a coordinator that measured none is assumed to have. */
    uplinkBytesPerSecond: 2.5e6
};

/** Where a candidate sits in a plan being built. */
interface Placement {
    candidate: ShardCandidate,
    first: number,
    count: number
}

/** A complete plan, scored. */
interface Draft {
    stages: ShardStage[],
    formSeconds: number,
    msPerToken: number,
    /** What the search minimises after the time to form: time per token over the chance that every remote stage holds. */
    cost: number
}

/** What a search needs of the model, computed once. */
interface Context {
    model: ShapeSums,
    held: Map<string, HeldPrefix>,
    uplinkBytesPerSecond: number
}

interface ShapeSums {
    shape: ModelShape,
    layers: number,
    /** `prefix[i]`: bytes of layers 0..i−1. */
    prefix: number[],
    kvPerLayer: number
}

interface HeldPrefix {
    /** `missing[i]`: bytes of layers 0..i−1 the candidate does not hold. */
    missing: number[],
    holdsOutput: boolean
}

/**
 * The plan with the fewest stages that fits (each remote stage costs a round trip per token). Within a stage count:
 * the one that forms first (holders, which move nothing, before hosts that fetch from the source, before those the
 * coordinator's uplink must feed), then, among those that form equally fast (FORM_TOLERANCE), the lowest time per
 * token over reliability (a far or flaky peer loses ties). So a plan much faster per token still loses to one that
 * forms much sooner: forming can take hours (a 40 GB model over a 20 Mbit/s uplink), a token takes milliseconds.
 * Layers are shared in proportion to compute, clipped to each stage's memory.
 */
export function planShards(shape: ModelShape, candidates: readonly ShardCandidate[], options: ShardPlanOptions = {}): ShardPlanResult {
    const {maxStages, minStages, exclude, uplinkBytesPerSecond} = validatePlanInput(shape, candidates, options);
    const context = contextOf(shape, candidates, uplinkBytesPerSecond);
    const coordinator = candidates.find((candidate) => candidate.self)!;
    const peers = candidates.filter((candidate) => !candidate.self && !exclude.has(candidate.peerId));
    const last = context.model.layers - 1;
    const pool = poolOf(context, 0, last, peers, maxStages - 1);
    const head = {candidate: coordinator, first: 0, count: 0};
    for (let newStages = minStages - 1; newStages < maxStages && newStages <= pool.length; newStages++) {
        const best = searchSegment(context, {first: 0, last, head, tail: null, tailIsLast: false, pool, newStages}, (placements) => placements);
        if (best !== null)
            return {ok: true, plan: planOf(best, describe(best))};
    }
    return explainNoPlan(context, coordinator, peers, maxStages, minStages);
}

/**
 * A plan without `failedPeerId` that disturbs the others as little as possible: their weights are loaded or cached.
 * In order: a ready spare, a peer that holds the failed stage's layers, has the room and is not much slower
 * (SIMILAR_COMPUTE_RATIO), takes them (`replace`: the fastest per token of such); else the stages on either side
 * extend over them, in proportion to compute within their room (`neighbours`, one stage fewer); else as few other
 * peers as fit take them, the plan that forms first winning as in planShards, the neighbours sharing as they can
 * (`others`); else a new plan from scratch (`fresh`). The failed peer is left out of every one.
 */
export function replanAfterFailure(shape: ModelShape, previous: ShardPlan, failedPeerId: string, candidates: readonly ShardCandidate[],
    options: ShardPlanOptions = {}): ShardPlanResult<ShardReplan> {
    const {maxStages, minStages, exclude, uplinkBytesPerSecond} = validatePlanInput(shape, candidates, options);
    const index = previous.stages.findIndex((stage) => stage.peerId === failedPeerId);
    const failed = previous.stages[index];
    if (failed === undefined || failed.self)
        throw new RangeError(`${failedPeerId} is not a remote stage of the plan`);
    if (previous.stages.at(-1)?.lastLayer !== shape.layerBytes.length - 1)
        throw new RangeError('the plan is for a model of another size');
    const excluded = new Set([...exclude, failedPeerId]);
    const available = new Map(candidates.filter((candidate) => !excluded.has(candidate.peerId)).map((candidate) => [candidate.peerId, candidate]));
    const context = contextOf(shape, candidates, uplinkBytesPerSecond);
    const fresh = (): ShardPlanResult<ShardReplan> => {
        const result = planShards(shape, candidates, {...options, exclude: excluded});
        return result.ok ? {ok: true, plan: {...result.plan, repair: 'fresh', reason: `${shortId(failedPeerId)} failed, replanned: ${result.plan.reason}`}} : result;
    };
    const before = keptPlacements(context, previous.stages.slice(0, index), available, false);
    const after = keptPlacements(context, previous.stages.slice(index + 1), available, true);
    if (before === null || after === null || previous.stages.length > maxStages)
        return fresh();
    const first = failed.firstLayer!;
    const last = failed.lastLayer!;
    const count = last - first + 1;
    const done = (draft: Draft, repair: ShardRepair, how: string): ShardPlanResult<ShardReplan> => ({
        ok: true,
        plan: {...planOf(draft, `${shortId(failedPeerId)} failed, ${how} ${first}–${last}; ${describe(draft)}`), repair}
    });
    const unused = [...available.values()].filter((candidate) => !previous.stages.some((stage) => stage.peerId === candidate.peerId));

    let replacement: Draft | null = null;
    for (const candidate of unused) {
        const fits = stageBytes(context.model, first, count, false, after.length === 0) <= candidate.freeMemoryBytes;
        if (fastEnoughToReplace(candidate, failed) && fits && missingBytes(context, candidate, first, count) === 0) {
            const draft = draftOf(context, [...before, {candidate, first, count}, ...after]);
            if (isBetter(draft, replacement))
                replacement = draft;
        }
    }
    if (replacement !== null)
        return done(replacement, 'replace', `${shortId(replacement.stages[index]!.peerId)} (holds them) takes`);

    const segment = {first, last, head: before.at(-1)!, tail: after[0] ?? null, tailIsLast: after.length === 1};
    const compose = (placements: Placement[]) => [...before.slice(0, -1), ...placements, ...after.slice(1)];
    const fewestNew = Math.max(0, minStages - previous.stages.length + 1);
    const neighbours = fewestNew === 0 ? searchSegment(context, {...segment, pool: [], newStages: 0}, compose) : null;
    if (neighbours !== null)
        return done(neighbours, 'neighbours', 'its neighbours take');
    const mostNew = maxStages - previous.stages.length + 1;
    const pool = poolOf(context, first, last, unused, mostNew);
    for (let newStages = Math.max(1, fewestNew); newStages <= mostNew && newStages <= pool.length; newStages++) {
        const others = searchSegment(context, {...segment, pool, newStages}, compose);
        if (others !== null)
            return done(others, 'others', newStages === 1 ? 'another peer and its neighbours take' : `${newStages} other peers and its neighbours take`);
    }
    return fresh();
}

/** Checks what planShards, replanAfterFailure and pickSpares (spare-picker.ts) are given; throws a RangeError. */
export function validatePlanInput(shape: ModelShape, candidates: readonly ShardCandidate[], options: ShardPlanOptions) {
    const maxStages = options.maxStages ?? shardPlannerDefaults.maxStages;
    const minStages = options.minStages ?? shardPlannerDefaults.minStages;
    const exclude = options.exclude ?? new Set<string>();
    const uplinkBytesPerSecond = options.uplinkBytesPerSecond ?? shardPlannerDefaults.uplinkBytesPerSecond;
    const amount = (value: number) => Number.isFinite(value) && value >= 0;
    if (shape.layerBytes.length === 0 || !shape.layerBytes.every((bytes) => amount(bytes) && bytes > 0))
        throw new RangeError('a model needs at least one layer, each of some bytes');
    if (![shape.inputBytes, shape.outputBytes, shape.kvBytesPerTokenPerLayer, shape.contextTokens].every(amount))
        throw new RangeError('model sizes must be finite and not negative');
    if (!Number.isInteger(minStages) || !Number.isInteger(maxStages) || minStages < 1 || maxStages < minStages)
        throw new RangeError(`invalid stage limits: ${minStages}..${maxStages}`);
    if (!amount(uplinkBytesPerSecond) || uplinkBytesPerSecond === 0)
        throw new RangeError(`invalid uplink: ${uplinkBytesPerSecond} bytes/s`);
    const selves = candidates.filter((candidate) => candidate.self);
    if (selves.length !== 1)
        throw new RangeError(`exactly one candidate must be the coordinator, not ${selves.length}`);
    if (exclude.has(selves[0]!.peerId))
        throw new RangeError('the coordinator cannot be excluded');
    const ids = new Set(candidates.map((candidate) => candidate.peerId));
    if (ids.size !== candidates.length)
        throw new RangeError('candidates repeat a peer id');
    for (const candidate of candidates) {
        const valid = amount(candidate.freeMemoryBytes) && (candidate.tflops === null || amount(candidate.tflops))
            && (candidate.rttMs === null || amount(candidate.rttMs)) && candidate.successRate >= 0 && candidate.successRate <= 1
            && candidate.heldLayers.every((range) => Number.isInteger(range[0]) && Number.isInteger(range[1]))
            && (candidate.sourceBytesPerSecond === undefined || candidate.sourceBytesPerSecond === null || amount(candidate.sourceBytesPerSecond));
        if (!valid)
            throw new RangeError(`candidate ${candidate.peerId} has invalid figures`);
    }
    return {maxStages, minStages, exclude, uplinkBytesPerSecond};
}

function contextOf(shape: ModelShape, candidates: readonly ShardCandidate[], uplinkBytesPerSecond: number): Context {
    const prefix = [0];
    for (const bytes of shape.layerBytes)
        prefix.push(prefix.at(-1)! + bytes);
    const model = {shape, layers: shape.layerBytes.length, prefix, kvPerLayer: shape.kvBytesPerTokenPerLayer * shape.contextTokens};
    const held = new Map(candidates.map((candidate) => {
        const holds = shape.layerBytes.map(() => candidate.self);
        for (const [first, last] of candidate.heldLayers)
            for (let layer = Math.max(first, 0); layer <= Math.min(last, model.layers - 1); layer++)
                holds[layer] = true;
        const missing = [0];
        for (const [layer, bytes] of shape.layerBytes.entries())
            missing.push(missing.at(-1)! + (holds[layer] ? 0 : bytes));
        return [candidate.peerId, {missing, holdsOutput: candidate.self || (candidate.holdsOutput ?? holds.every(Boolean))}];
    }));
    return {model, held, uplinkBytesPerSecond};
}

/** The compute a plan counts for a candidate, TFLOP/s: a default when unknown, never 0. */
export function computeOf(candidate: ShardCandidate) {
    return Math.max(candidate.tflops ?? DEFAULT_TFLOPS, MIN_TFLOPS);
}

/** A candidate may take over a stage's layers unless it is much slower than the stage (SIMILAR_COMPUTE_RATIO). */
export function fastEnoughToReplace(candidate: ShardCandidate, stage: ShardStage) {
    return computeOf(candidate) * SIMILAR_COMPUTE_RATIO >= stage.tflops;
}

/** The rate a candidate downloads from the model's source at; null when it cannot. */
function sourceRateOf(candidate: ShardCandidate) {
    const rate = candidate.sourceBytesPerSecond;
    return rate === undefined || rate === null || rate === 0 ? null : rate;
}

/** Where `transferBytes` of weights would come from for a candidate, and how long that takes it alone. */
function weightsOf(context: Context, candidate: ShardCandidate, transferBytes: number): {weightsFrom: WeightsFrom, formSeconds: number} {
    if (transferBytes === 0)
        return {weightsFrom: 'held', formSeconds: 0};
    const source = sourceRateOf(candidate);
    return source === null
        ? {weightsFrom: 'coordinator', formSeconds: transferBytes / context.uplinkBytesPerSecond}
        : {weightsFrom: 'source', formSeconds: transferBytes / source};
}

/**
 * What a candidate taking layers `[first, first + count)` would hold and receive, and from where, by the rules of
 * a plan's stages: for placing it outside a search (spare-picker.ts). `last`: the stage takes the output layer.
 */
export function stageFigures(shape: ModelShape, candidate: ShardCandidate, first: number, count: number, last: boolean,
    options: Pick<ShardPlanOptions, 'uplinkBytesPerSecond'> = {}) {
    const context = contextOf(shape, [candidate], options.uplinkBytesPerSecond ?? shardPlannerDefaults.uplinkBytesPerSecond);
    const outputMissing = last && !context.held.get(candidate.peerId)!.holdsOutput;
    const transferBytes = candidate.self ? 0 : missingBytes(context, candidate, first, count) + (outputMissing ? shape.outputBytes : 0);
    return {bytes: stageBytes(context.model, first, count, candidate.self, last), transferBytes, ...weightsOf(context, candidate, transferBytes)};
}

function layersBytes(model: ShapeSums, first: number, count: number) {
    return model.prefix[first + count]! - model.prefix[first]!;
}

/** What a stage holds: see ShardStage.bytes. */
function stageBytes(model: ShapeSums, first: number, count: number, self: boolean, last: boolean) {
    return layersBytes(model, first, count) + count * model.kvPerLayer + (count > 0 ? model.shape.computeBytes ?? 0 : 0)
        + (self ? model.shape.inputBytes : 0) + (last ? model.shape.outputBytes : 0);
}

export interface ComputeShape {
    embeddingLength: number,
    feedForwardLength: number,
    headCount: number,
    /** Context of one sequence: how many keys one query attends to at most. */
    sequenceTokens: number,
    /** Tokens of all sequences together (llama.cpp's context). */
    contextTokens: number,
    flashAttention: boolean
}

/** llama.cpp's micro-batch: at most 512 tokens, and no more than the context. */
const MICRO_BATCH_TOKENS = 512;
const F32_BYTES = 4;

/**
 * An upper bound of the compute buffer llama.cpp allocates on a device that holds layers (its scratch for one
 * micro-batch, reused layer after layer): the feed-forward and residual activations, and the attention scores of
 * every head without flash attention (one row of keys per head with it). Measured on generated models from 256 to
 * 768 wide and contexts of 256 to 8,192 tokens, llama.cpp's CPU backend allocated 0.51 to 0.70 of it (docs/architecture.md,
 * "Sharding").
 */
export function stageComputeBytes(shape: ComputeShape) {
    const micro = Math.min(MICRO_BATCH_TOKENS, shape.contextTokens);
    const activations = micro * F32_BYTES * (3 * shape.feedForwardLength + 6 * shape.embeddingLength);
    const scores = micro * shape.sequenceTokens * F32_BYTES * (shape.flashAttention ? 1 : 2 * shape.headCount);
    return activations + scores;
}

function missingBytes(context: Context, candidate: ShardCandidate, first: number, count: number) {
    const {missing} = context.held.get(candidate.peerId)!;
    return missing[first + count]! - missing[first]!;
}

/**
 * Layers of `[first, last]` that fit in `spare` bytes, each counted as the largest of them so that any of them fit.
 * A stage that holds no layer yet (`empty`) also needs room for its compute buffer.
 */
function layersFitting(model: ShapeSums, first: number, last: number, spare: number, empty = true) {
    const perLayer = Math.max(...model.shape.layerBytes.slice(first, last + 1)) + model.kvPerLayer;
    const fitting = Math.floor(spare / perLayer);
    // The compute buffer comes with a first layer: it never makes a stage's room negative.
    return empty && fitting >= 1 ? Math.max(0, Math.floor((spare - (model.shape.computeBytes ?? 0)) / perLayer)) : fitting;
}

/**
 * The peers a search tries: see POOL_HALF; the "best holders" are those that would get the whole range soonest alone
 * (holders, then fast fetchers from the source). Only those with room for a layer of the range.
 */
function poolOf(context: Context, first: number, last: number, peers: readonly ShardCandidate[], newStages: number) {
    const usable = peers.filter((peer) => layersFitting(context.model, first, last, peer.freeMemoryBytes) >= 1);
    const count = last - first + 1;
    const seconds = (peer: ShardCandidate) => weightsOf(context, peer, missingBytes(context, peer, first, count)).formSeconds;
    const byReady = [...usable].sort((a, b) => seconds(a) - seconds(b) || peerCost(a) - peerCost(b));
    const byRoom = [...usable].sort((a, b) => b.freeMemoryBytes - a.freeMemoryBytes || peerCost(a) - peerCost(b));
    return [...new Set([...byReady.slice(0, POOL_HALF), ...byRoom.slice(0, Math.max(POOL_HALF, newStages))])];
}

/** Distance over reliability, for ordering peers before a search. */
function peerCost(peer: ShardCandidate) {
    return (peer.rttMs ?? DEFAULT_RTT_MS) / Math.max(peer.successRate, MIN_SUCCESS_RATE);
}

interface Segment {
    /** The layers to place. */
    first: number,
    last: number,
    /** The stage before them, which may extend over their first ones (the coordinator, planning from scratch). */
    head: Placement,
    /** The stage after them, which may extend over their last ones; null when the segment ends the model. */
    tail: Placement | null,
    /** The tail is the plan's last stage, with the output layer. */
    tailIsLast: boolean,
    pool: readonly ShardCandidate[],
    /** Peers of the pool that take a range of their own, between head and tail. */
    newStages: number
}

/**
 * The best plan in which `segment.newStages` peers of the pool, the head and the tail share the segment's layers.
 * `compose` turns the segment's placements (head, new peers, tail) into the whole plan's.
 */
function searchSegment(context: Context, segment: Segment, compose: (placements: Placement[]) => Placement[]): Draft | null {
    const {model} = context;
    const {first, last, head, tail, tailIsLast, pool, newStages} = segment;
    const total = last - first + 1;
    const spare = (placement: Placement, takesOutput: boolean) => layersFitting(model, first, last,
        placement.candidate.freeMemoryBytes - stageBytes(model, placement.first, placement.count, placement.candidate.self, takesOutput), placement.count === 0);
    let best: Draft | null = null;
    for (const chosen of combinations(pool.length, newStages)) {
        const peers = chosen.map((position) => pool[position]!);
        // Without a tail, the segment's last stage takes the output layer: each new peer in turn, or the head alone.
        const lastChoices = tail === null && newStages > 0 ? peers.map((_, position) => position) : [null];
        for (const lastPeer of lastChoices) {
            const takers = [
                {compute: computeOf(head.candidate), cap: spare(head, tail === null && newStages === 0), min: 0},
                ...peers.map((peer, position) => ({compute: computeOf(peer), cap: spare({candidate: peer, first, count: 0}, position === lastPeer), min: 1})),
                ...(tail === null ? [] : [{compute: computeOf(tail.candidate), cap: spare(tail, tailIsLast), min: 0}])
            ];
            const counts = allocate(total, takers);
            if (counts === null)
                continue;
            const headCount = counts[0]!;
            const middle = peers.map((_, position) => position).filter((position) => position !== lastPeer);
            const order = orderForForming(context, middle.map((position) => peers[position]!), middle.map((position) => counts[position + 1]!), first + headCount);
            const sequence = [...order.map((position) => middle[position]!), ...(lastPeer === null ? [] : [lastPeer])];
            const placements: Placement[] = [{...head, count: head.count + headCount}];
            let next = first + headCount;
            for (const position of sequence) {
                placements.push({candidate: peers[position]!, first: next, count: counts[position + 1]!});
                next += counts[position + 1]!;
            }
            if (tail !== null)
                placements.push({candidate: tail.candidate, first: next, count: tail.count + counts.at(-1)!});
            const draft = draftOf(context, compose(placements));
            if (isBetter(draft, best))
                best = draft;
        }
    }
    return best;
}

interface Taker {
    compute: number,
    /** Most layers it has room for. */
    cap: number,
    min: number
}

/**
 * Whole layers per taker, in proportion to compute, clipped to each one's room, the rounding remainder to those
 * with room left (largest fractions first). A taker short of its minimum gets it from the one with the most layers.
 * Null when they lack the room, or the layers are too few for the minimums.
 */
function allocate(total: number, takers: readonly Taker[]): number[] | null {
    const sum = (values: readonly number[]) => values.reduce((subtotal, value) => subtotal + value, 0);
    if (takers.some((taker) => taker.cap < taker.min) || sum(takers.map((taker) => taker.cap)) < total || sum(takers.map((taker) => taker.min)) > total)
        return null;
    const shares = takers.map(() => 0);
    const open = new Set(takers.keys());
    let remaining = total;
    for (;;) {
        const weight = sum([...open].map((position) => takers[position]!.compute));
        const share = (position: number) => (remaining * takers[position]!.compute) / weight;
        const full = [...open].filter((position) => share(position) >= takers[position]!.cap);
        if (full.length === 0) {
            for (const position of open)
                shares[position] = share(position);
            break;
        }
        for (const position of full) {
            shares[position] = takers[position]!.cap;
            open.delete(position);
        }
        remaining -= sum(full.map((position) => takers[position]!.cap));
    }
    const counts = shares.map(Math.floor);
    const short = total - sum(counts);
    const roomy = [...takers.keys()].filter((position) => counts[position]! < takers[position]!.cap)
        .sort((a, b) => (shares[b]! - counts[b]!) - (shares[a]! - counts[a]!) || takers[b]!.compute - takers[a]!.compute || a - b);
    for (const position of roomy.slice(0, short))
        counts[position]! += 1;
    takers.forEach((taker, position) => {
        while (counts[position]! < taker.min) {
            const richest = counts.reduce((best, count, other) => count - takers[other]!.min > counts[best]! - takers[best]!.min ? other : best, 0);
            counts[richest]! -= 1;
            counts[position]! += 1;
        }
    });
    return counts;
}

/**
 * The order of `peers`, each taking `counts` layers from `start` on, that gets them their weights soonest: it
 * minimises the sum of each one's seconds alone, an additive stand-in for the plan's time to form (exact when the
 * coordinator feeds them all; a bound when they fetch in parallel) that a search over subsets can minimise.
 */
function orderForForming(context: Context, peers: readonly ShardCandidate[], counts: readonly number[], start: number): number[] {
    const subsets = 1 << peers.length;
    const transfer = new Array<number>(subsets).fill(Number.POSITIVE_INFINITY);
    const position = new Array<number>(subsets).fill(start);
    const lastOf = new Array<number>(subsets).fill(-1);
    transfer[0] = 0;
    for (let placed = 0; placed < subsets; placed++)
        peers.forEach((peer, index) => {
            const bit = 1 << index;
            if ((placed & bit) !== 0)
                return;
            const cost = transfer[placed]! + weightsOf(context, peer, missingBytes(context, peer, position[placed]!, counts[index]!)).formSeconds;
            if (cost < transfer[placed | bit]!) {
                transfer[placed | bit] = cost;
                position[placed | bit] = position[placed]! + counts[index]!;
                lastOf[placed | bit] = index;
            }
        });
    const order: number[] = [];
    for (let placed = subsets - 1; placed !== 0; placed &= ~(1 << lastOf[placed]!))
        order.unshift(lastOf[placed]!);
    return order;
}

function* combinations(size: number, choose: number): Generator<number[]> {
    const chosen: number[] = [];
    function* extend(from: number): Generator<number[]> {
        if (chosen.length === choose) {
            yield [...chosen];
            return;
        }
        for (let next = from; next <= size - (choose - chosen.length); next++) {
            chosen.push(next);
            yield* extend(next + 1);
            chosen.pop();
        }
    }
    yield* extend(0);
}

/**
 * Scores placements. Time per token: each stage reads its layers, their KV cache (at full context, the worst case)
 * and the output layer if it is last, at its compute's bandwidth; the input embeddings are a lookup of one row.
 * Each remote stage adds its round trips. Time to form: see ShardPlan.estimatedFormSeconds.
 */
function draftOf(context: Context, placements: readonly Placement[]): Draft {
    const {model} = context;
    let msPerToken = 0;
    let reliability = 1;
    let fetchSeconds = 0;
    let uplinkBytes = 0;
    const stages = placements.map(({candidate, first, count}, position): ShardStage => {
        const last = position === placements.length - 1;
        const bytes = stageBytes(model, first, count, candidate.self, last);
        const outputMissing = last && !context.held.get(candidate.peerId)!.holdsOutput;
        const transferBytes = missingBytes(context, candidate, first, count) + (outputMissing ? model.shape.outputBytes : 0);
        const tflops = computeOf(candidate);
        msPerToken += (bytes - (candidate.self ? model.shape.inputBytes : 0)) / (tflops * READ_BYTES_PER_MS_PER_TFLOPS);
        if (!candidate.self) {
            msPerToken += ROUND_TRIPS_PER_TOKEN * (candidate.rttMs ?? DEFAULT_RTT_MS);
            reliability *= Math.max(candidate.successRate, MIN_SUCCESS_RATE);
        }
        const weights = weightsOf(context, candidate, transferBytes);
        if (weights.weightsFrom === 'source')
            fetchSeconds = Math.max(fetchSeconds, weights.formSeconds);
        else
            uplinkBytes += transferBytes;
        const range = count === 0 ? {} : {firstLayer: first, lastLayer: first + count - 1};
        return {peerId: candidate.peerId, self: candidate.self, ...range, layerCount: count, bytes, transferBytes, ...weights, tflops};
    });
    const formSeconds = Math.max(fetchSeconds, uplinkBytes / context.uplinkBytesPerSecond);
    return {stages, formSeconds, msPerToken, cost: msPerToken / reliability};
}

/** Forms sooner; else, forming equally fast (FORM_TOLERANCE), costs less per token. */
function isBetter(draft: Draft, best: Draft | null) {
    if (best === null)
        return true;
    const equallyFast = Math.abs(draft.formSeconds - best.formSeconds) <= FORM_TOLERANCE * Math.max(draft.formSeconds, best.formSeconds);
    return equallyFast ? draft.cost < best.cost : draft.formSeconds < best.formSeconds;
}

function planOf(draft: Draft, reason: string): ShardPlan {
    return {stages: draft.stages, estimatedMsPerToken: draft.msPerToken, estimatedFormSeconds: draft.formSeconds, reason};
}

/**
 * Stages kept from a plan, with their candidates' current figures; null when one is gone or no longer fits.
 * `endsPlan`: the last of them is the plan's last stage, with the output layer.
 */
function keptPlacements(context: Context, stages: readonly ShardStage[], available: ReadonlyMap<string, ShardCandidate>, endsPlan: boolean): Placement[] | null {
    const placements: Placement[] = [];
    for (const [position, stage] of stages.entries()) {
        const candidate = available.get(stage.peerId);
        const first = stage.firstLayer ?? 0;
        const holdsOutput = endsPlan && position === stages.length - 1;
        if (candidate === undefined || candidate.self !== stage.self
            || stageBytes(context.model, first, stage.layerCount, candidate.self, holdsOutput) > candidate.freeMemoryBytes)
            return null;
        placements.push({candidate, first, count: stage.layerCount});
    }
    return placements;
}

function explainNoPlan(context: Context, coordinator: ShardCandidate, peers: readonly ShardCandidate[], maxStages: number, minStages: number): ShardPlanResult {
    const {model} = context;
    const {shape} = model;
    const name = shape.modelId === undefined ? 'the model' : `model '${shape.modelId}'`;
    const last = model.layers - 1;
    const usable = peers.filter((peer) => layersFitting(model, 0, last, peer.freeMemoryBytes) >= 1);
    const needed = stageBytes(model, 0, model.layers, false, true) + shape.inputBytes;
    const offered = [coordinator, ...usable].reduce((sum, candidate) => sum + candidate.freeMemoryBytes, 0);
    const peerCount = `${usable.length} usable peer${usable.length === 1 ? '' : 's'}`;
    if (coordinator.freeMemoryBytes < shape.inputBytes)
        return {ok: false, code: 'not_enough_memory', reason: `this node has ${formatBytes(coordinator.freeMemoryBytes)} for ${name}, its input embeddings alone need ${formatBytes(shape.inputBytes)}`};
    if (minStages > 1 + usable.length)
        return {ok: false, code: 'not_enough_peers', reason: `${name} is to be split over at least ${minStages} stages, and there are ${peerCount}`};
    if (offered < needed)
        return {ok: false, code: 'not_enough_memory', reason: `${name} needs ${formatBytes(needed)}, this node and the ${peerCount} offer ${formatBytes(offered)}`};
    // The fewest stages the layers could fit, were the output layer free: a bound that tells too few stages from too little room.
    const rooms = usable.map((peer) => layersFitting(model, 0, last, peer.freeMemoryBytes)).sort((a, b) => b - a);
    let placed = layersFitting(model, 0, last, coordinator.freeMemoryBytes - shape.inputBytes);
    let stages = 1;
    for (const room of rooms) {
        if (placed >= model.layers)
            break;
        placed += room;
        stages++;
    }
    if (placed >= model.layers && stages > maxStages)
        return {ok: false, code: 'too_many_stages', reason: `${name} needs at least ${stages} stages, this node included, more than the maximum of ${maxStages}`};
    return {ok: false, code: 'not_enough_memory', reason: `${name} fits this node and the ${peerCount} only in parts: no arrangement of whole layers leaves room for the output layer (${formatBytes(shape.outputBytes)}) on the last stage`};
}

function describe(draft: Draft) {
    const parts = draft.stages.map((stage) => {
        const name = stage.self ? 'self' : shortId(stage.peerId);
        if (stage.layerCount === 0)
            return `${name} no layers`;
        const range = `${name} ${stage.firstLayer}–${stage.lastLayer}`;
        if (stage.self)
            return range;
        const bytes = formatBytes(stage.transferBytes);
        const weights = {held: 'holds them', source: `fetches ${bytes} from the source`, coordinator: `must receive ${bytes} from this node`};
        return `${range} (${weights[stage.weightsFrom]})`;
    });
    const count = draft.stages.length;
    return `${count} stage${count === 1 ? '' : 's'}: ${parts.join(', ')}; ~${draft.msPerToken.toFixed(1)} ms/token; ${describeForming(draft.formSeconds)}`;
}

function describeForming(seconds: number) {
    if (seconds === 0)
        return 'forms at once';
    if (seconds < 1)
        return 'forms in under 1 s';
    if (Math.round(seconds) < 60)
        return `forms in ~${Math.round(seconds)} s`;
    return Math.round(seconds / 60) < 60 ? `forms in ~${Math.round(seconds / 60)} min` : `forms in ~${(seconds / 3600).toFixed(1)} h`;
}

function shortId(peerId: string) {
    return peerId.slice(0, 8);
}

