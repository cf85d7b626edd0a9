import {withDefaults} from '../core/with-defaults.js';
import {encodeFrame} from '../swarm/channel/frame-codec.js';
import type {GossipFrame} from '../swarm/gossip/gossip-messages.js';
import {type LocalModel, ModelGossip, type ModelGossipOptions, modelGossipDefaults} from '../swarm/gossip/model-gossip.js';
import {SeededRandom} from './seeded-random.js';

/**
 * The model table's gossip over a whole network in one process (issue 26): the real `ModelGossip` at every node,
 * synchronous rounds, churn. Each round every node builds one frame and pushes it to `fanout` distinct random
 * neighbours; all frames of a round are built before any is merged. Every `wireEvery`-th round each frame is
 * encoded as JSON (its bytes counted) and each receiver parses it and merges it through the schema, as a channel
 * would; the other rounds hand the frame object over (`mergeChecked`), which keeps 10,000 nodes fast.
 *
 * The graph: each node has `neighbours` distinct random out-neighbours, drawn when it joins. A node that leaves is
 * replaced in its slot by a newcomer with a new id, an empty table, the same offers (so a model keeps its number of
 * providers while their ids change) and neighbours drawn afresh; the nodes that pointed at the slot now reach the
 * newcomer, as if each had replaced the connection it lost.
 *
 * The story: background models spread for `warmupRounds`; then (with `announce`) slot 0, which does not churn,
 * starts serving a new model; once 99% of the nodes know it and `settleRounds` more have passed, that sole provider
 * leaves, and the run goes on until no table lists the model.
 */

export interface GossipSimulationOptions {
    seed: number,
    /** Defaults to 10,000. */
    nodes: number,
    /** Out-neighbours per node; defaults to 64. */
    neighbours: number,
    /** Neighbours a node pushes its frame to each round; defaults to 2. */
    fanout: number,
    /** Share of the nodes replaced each round; defaults to 1%. */
    churn: number,
    /** One background model per item, served by that many random nodes; defaults to 3 models, of 1, 4 and 40 providers. */
    backgroundProviders: number[],
    /** Defaults to 15. */
    warmupRounds: number,
    /** Whether a node announces a model after the warm-up, and leaves once it has spread; defaults to true. */
    announce: boolean,
    /** Rounds between the announced model reaching 99% and its provider leaving; defaults to 10. */
    settleRounds: number,
    /** The most rounds to wait for the model to reach 99%, and then to leave every table; defaults to 200 each. */
    maxPhaseRounds: number,
    /** Defaults to every 25th round. */
    wireEvery: number,
    /** A round's length by the nodes' clock; defaults to 5 s. */
    intervalMs: number,
    /** Every node's table; each defaults to `modelGossipDefaults`. */
    gossip: Partial<Omit<ModelGossipOptions, 'selfId' | 'clock'>>
}

export const gossipSimulationDefaults: Omit<GossipSimulationOptions, 'seed'> = {
    nodes: 10_000,
    neighbours: 64,
    fanout: 2,
    churn: 0.01,
    backgroundProviders: [1, 4, 40],
    warmupRounds: 15,
    announce: true,
    settleRounds: 10,
    maxPhaseRounds: 200,
    wireEvery: 25,
    intervalMs: 5_000,
    gossip: {}
};

export interface AnnouncedModelFigures {
    /** Rounds from the announcement until 99% of the nodes then present knew the model; null if not within the run. */
    roundsTo99: number | null,
    /** Rounds until every node knew it at once; null if never (newcomers keep arriving). */
    roundsToAll: number | null,
    /** The least share of nodes that knew it over the settle rounds, newcomers included. */
    settledShare: number,
    /** Its age in the tables that knew it, just before its provider left: median, 99th percentile, largest. */
    settledAgeMs: {median: number, p99: number, max: number},
    /** Rounds after its sole provider left until at most 1% of the tables listed it; null if not within the run. */
    lingerRounds99: number | null,
    /** Rounds after it left until no table listed it; null if not within the run. */
    lingerRoundsAll: number | null,
    /** What the linger must stay within: the TTL and one round, in rounds. */
    lingerBoundRounds: number
}

export interface BackgroundModelFigures {
    providers: number,
    /** Share of the nodes that knew it. */
    known: number,
    /** The provider counts that the nodes which knew it held: median and 1st percentile. */
    countMedian: number,
    countP1: number,
    /** Share of the nodes whose count was at its bound. */
    capped: number
}

export interface GossipSimulationResult {
    /** Null without `announce`. */
    announced: AnnouncedModelFigures | null,
    /** Taken before the announced model's provider left, or after the warm-up. */
    background: BackgroundModelFigures[],
    /** The most models a node held after a round's expiry, and the bound. */
    largestTable: number,
    maxEntries: number,
    /** JSON bytes a node pushed in a round (its frame times the fan-out) over the wire rounds: mean and most. */
    bytesPerNodePerRound: {mean: number, max: number},
    largestFrameBytes: number,
    rounds: number,
    nodesJoined: number,
    wallMs: number
}

export function simulateModelGossip(options: Partial<GossipSimulationOptions> & {seed: number}): GossipSimulationResult {
    const settings = withDefaults(gossipSimulationDefaults, options);
    const {nodes, neighbours: degree, fanout, intervalMs, wireEvery} = settings;
    const gossipOptions = withDefaults(modelGossipDefaults, settings.gossip);
    if (degree >= nodes || fanout > degree)
        throw new Error('simulateModelGossip: more neighbours than nodes, or a fan-out over the neighbours');
    const started = performance.now();
    const random = new SeededRandom(settings.seed);
    let now = 0;
    const clock = () => now;
    const bytes = Buffer.alloc(32);
    // internalized (a property key's string): equal ids are then one string, and unequal ones differ by address
    const hex = (): string => {
        for (let index = 0; index < bytes.length; index++)
            bytes[index] = random.int(0, 255);
        return Object.keys({[bytes.toString('hex')]: 0})[0]!;
    };

    const ids: string[] = [];
    const tables: ModelGossip[] = [];
    const offers: LocalModel[][] = Array.from({length: nodes}, () => []);
    const neighbours = new Int32Array(nodes * degree);
    let nodesJoined = 0;
    const join = (slot: number) => {
        ids[slot] = hex();
        tables[slot] = new ModelGossip({...gossipOptions, selfId: ids[slot]!, clock});
        tables[slot]!.setLocalModels(offers[slot]!);
        nodesJoined++;
        const base = slot * degree;
        for (let index = 0; index < degree; index++) {
            let other: number;
            do
                other = random.int(0, nodes - 1);
            while (other === slot || neighbours.subarray(base, base + index).includes(other));
            neighbours[base + index] = other;
        }
    };
    const model = (index: number): LocalModel =>
        ({sha256: hex(), name: `model-${index}`, sizeBytes: 4_000_000_000 + index, layers: 32, quantization: 'Q4_K_M'});
    const background = settings.backgroundProviders.map((providers, index) => {
        const offer = model(index);
        const chosen = new Set<number>();
        while (chosen.size < Math.min(providers, nodes - 1))
            chosen.add(random.int(1, nodes - 1));
        for (const slot of chosen)
            offers[slot]!.push(offer);
        return {offer, providers: chosen.size};
    });
    for (let slot = 0; slot < nodes; slot++)
        join(slot);

    const frames: GossipFrame[] = new Array(nodes);
    // a round's pushes in typed arrays: each push's target, then the senders grouped by target (a counting sort)
    const targets = new Int32Array(nodes * fanout);
    const starts = new Int32Array(nodes + 1);
    const inbox = new Int32Array(nodes * fanout);
    let largestTable = 0;
    let largestFrameBytes = 0;
    const bytesPerNode: number[] = [];
    let mostBytes = 0;
    let round = 0;
    let pinned = settings.announce;
    const step = () => {
        round++;
        now = round * intervalMs;
        for (let leaving = Math.round(nodes * settings.churn); leaving > 0; leaving--)
            join(random.int(pinned ? 1 : 0, nodes - 1));
        for (let slot = 0; slot < nodes; slot++) {
            frames[slot] = tables[slot]!.frame();
            largestTable = Math.max(largestTable, tables[slot]!.size);
        }
        starts.fill(0);
        for (let slot = 0; slot < nodes; slot++) {
            // `fanout` distinct neighbours: consecutive ones from a random start
            const first = random.int(0, degree - 1);
            for (let push = 0; push < fanout; push++) {
                const target = neighbours[slot * degree + (first + push) % degree]!;
                targets[slot * fanout + push] = target;
                starts[target + 1]!++;
            }
        }
        for (let slot = 0; slot < nodes; slot++)
            starts[slot + 1]! += starts[slot]!;
        const cursor = starts.slice();
        for (let push = 0; push < nodes * fanout; push++)
            inbox[cursor[targets[push]!]!++] = Math.floor(push / fanout);
        const encoded = round % wireEvery === 0 ? frames.map((frame) => encodeFrame(frame)) : undefined;
        if (encoded !== undefined) {
            let roundBytes = 0;
            for (const frame of encoded) {
                roundBytes += frame.byteLength * fanout;
                mostBytes = Math.max(mostBytes, frame.byteLength * fanout);
                largestFrameBytes = Math.max(largestFrameBytes, frame.byteLength);
            }
            bytesPerNode.push(roundBytes / nodes);
        }
        // each table takes its round's frames together, which keeps its memory warm
        for (let target = 0; target < nodes; target++)
            for (let index = starts[target]!; index < starts[target + 1]!; index++) {
                const sender = inbox[index]!;
                if (encoded === undefined)
                    tables[target]!.mergeChecked(frames[sender]!, ids[sender]!);
                else
                    tables[target]!.merge(JSON.parse(encoded[sender]!.toString('utf8')), ids[sender]!);
            }
    };
    const knowing = (sha256: string) => {
        let count = 0;
        for (const table of tables)
            if (table.has(sha256))
                count++;
        return count / nodes;
    };
    const backgroundFigures = () => background.map(({offer, providers}): BackgroundModelFigures => {
        const views = tables.flatMap((table) => table.get(offer.sha256) ?? []);
        const counts = views.map((view) => view.providerCount).sort((a, b) => a - b);
        return {providers, known: views.length / nodes, countMedian: quantile(counts, 0.5), countP1: quantile(counts, 0.01),
            capped: views.filter((view) => view.providerCountCapped).length / nodes};
    });

    for (let warmup = 0; warmup < settings.warmupRounds; warmup++)
        step();
    let announced: AnnouncedModelFigures | null = null;
    let figures: BackgroundModelFigures[];
    if (!settings.announce)
        figures = backgroundFigures();
    else {
        const offer = model(background.length);
        offers[0]!.push(offer);
        tables[0]!.setLocalModels(offers[0]!);
        announced = {roundsTo99: null, roundsToAll: null, settledShare: 1, settledAgeMs: {median: 0, p99: 0, max: 0},
            lingerRounds99: null, lingerRoundsAll: null, lingerBoundRounds: Math.ceil((gossipOptions.ttlMs + intervalMs) / intervalMs)};
        const announcedAt = round;
        const spread = () => {
            step();
            const share = knowing(offer.sha256);
            if (share === 1)
                announced!.roundsToAll ??= round - announcedAt;
            return share;
        };
        while (announced.roundsTo99 === null && round - announcedAt < settings.maxPhaseRounds)
            if (spread() >= 0.99)
                announced.roundsTo99 = round - announcedAt;
        for (let settle = 0; settle < settings.settleRounds; settle++)
            announced.settledShare = Math.min(announced.settledShare, spread());
        const ages = tables.flatMap((table) => table.get(offer.sha256)?.ageMs ?? []).sort((a, b) => a - b);
        announced.settledAgeMs = {median: quantile(ages, 0.5), p99: quantile(ages, 0.99), max: ages[ages.length - 1]!};
        figures = backgroundFigures();

        // the sole provider leaves: a newcomer takes its slot, without the model
        offers[0] = offers[0]!.filter((held) => held !== offer);
        pinned = false;
        join(0);
        const leftAt = round;
        while (announced.lingerRoundsAll === null && round - leftAt < settings.maxPhaseRounds) {
            step();
            const share = knowing(offer.sha256);
            if (share <= 0.01)
                announced.lingerRounds99 ??= round - leftAt;
            if (share === 0)
                announced.lingerRoundsAll = round - leftAt;
        }
    }
    return {
        announced, background: figures, largestTable, maxEntries: gossipOptions.maxEntries,
        bytesPerNodePerRound: {mean: bytesPerNode.reduce((sum, value) => sum + value, 0) / Math.max(1, bytesPerNode.length), max: mostBytes},
        largestFrameBytes, rounds: round, nodesJoined, wallMs: performance.now() - started
    };
}

/** The value at a share of a sorted list. */
function quantile(sorted: readonly number[], share: number) {
    return sorted[Math.min(sorted.length - 1, Math.floor(share * sorted.length))] ?? 0;
}
