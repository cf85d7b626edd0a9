import test from 'ava';
import {gossipSimulationDefaults, simulateModelGossip} from '../harness/gossip-simulation.js';
import {MAX_GOSSIP_FRAME_BYTES} from '../swarm/gossip/gossip-messages.js';
import {modelGossipDefaults} from '../swarm/gossip/model-gossip.js';

const {ttlMs, maxTrackedProviders} = modelGossipDefaults;
const {intervalMs, fanout} = gossipSimulationDefaults;
const number = (value: number) => Math.round(value).toLocaleString('en-US');
const seconds = (ms: number) => `${number(ms / 1_000)} s`;

test('10,000 nodes with 64 neighbours and 1% churn a round: a model reaches 99% of them fast, and its departed provider lingers no longer than the TTL', (t) => {
    const result = simulateModelGossip({seed: 26});
    const announced = result.announced!;
    // push gossip with fan-out f reaches n nodes in about log(n)/log(1 + f) + ln(n)/f rounds: 13 here
    t.not(announced.roundsTo99, null);
    t.true(announced.roundsTo99! <= 20, `${announced.roundsTo99} rounds to 99%`);
    t.true(announced.settledShare >= 0.99, 'it stays known: newcomers learn it, no table drops it');
    // ages stay far from the TTL, so no table drops a live model between two refreshes
    t.true(announced.settledAgeMs.p99 < ttlMs / 2 && announced.settledAgeMs.max < ttlMs, JSON.stringify(announced.settledAgeMs));
    t.not(announced.lingerRoundsAll, null);
    t.true(announced.lingerRoundsAll! <= announced.lingerBoundRounds, `gone from every table after ${announced.lingerRoundsAll} rounds`);
    t.true(announced.lingerRounds99! <= announced.lingerRoundsAll!);
    t.true(result.largestTable <= result.maxEntries);
    for (const model of result.background) {
        t.true(model.known >= 0.99, `a model of ${model.providers} providers known by ${model.known}`);
        t.true(model.countMedian >= Math.min(model.providers, maxTrackedProviders), `a model of ${model.providers} providers counted ${model.countMedian}`);
    }
    t.true(result.largestFrameBytes <= MAX_GOSSIP_FRAME_BYTES);
    const perMinute = result.bytesPerNodePerRound.mean * 60_000 / intervalMs;
    const [largest] = result.background.slice(-1);
    t.log(`Model gossip over ${number(10_000)} simulated nodes (test/model-gossip-simulation.test.ts): 64 random neighbours each, 1% of`
        + ` the nodes replaced every round, each node pushing one frame to ${fanout} neighbours a round (${seconds(intervalMs)}),`
        + ` TTL ${seconds(ttlMs)}, ${result.background.length} other models in the network:`);
    t.log(`- a model announced by one node: known by 99% of the nodes after ${announced.roundsTo99} rounds (${seconds(announced.roundsTo99! * intervalMs)});`
        + ` its age in the tables then: median ${seconds(announced.settledAgeMs.median)}, 99th percentile ${seconds(announced.settledAgeMs.p99)},`
        + ` largest ${seconds(announced.settledAgeMs.max)}`);
    t.log(`- its sole provider gone: listed by at most 1% of the tables after ${announced.lingerRounds99} rounds, by none after`
        + ` ${announced.lingerRoundsAll} (${seconds(announced.lingerRoundsAll! * intervalMs)}; bound: the TTL and one round, ${announced.lingerBoundRounds} rounds)`);
    t.log(`- largest table: ${result.largestTable} models (bound ${number(result.maxEntries)}); a model of ${largest!.providers} providers counted`
        + ` ${largest!.countMedian} (median, the count's bound) and at least ${largest!.countP1} by 99% of the nodes`);
    t.log(`- gossip: ${number(result.bytesPerNodePerRound.mean)} bytes per node per round (most ${number(result.bytesPerNodePerRound.max)}),`
        + ` ${number(perMinute / 1_000)} kB per node per minute`);
    t.log(`(${result.rounds} rounds, ${number(result.nodesJoined)} nodes joined, ${seconds(result.wallMs)} to simulate)`);
});

test('a network with more models than a table holds: tables stay at their bound, the most-provided models are everywhere', (t) => {
    const maxEntries = 64;
    const popular = 20;
    const result = simulateModelGossip({seed: 27, nodes: 400, announce: false, warmupRounds: 25, gossip: {maxEntries},
        backgroundProviders: [...Array.from({length: popular}, () => 5), ...Array.from({length: 80}, () => 1)]});
    t.is(result.largestTable, maxEntries, 'tables filled up to their bound, never over it');
    const known = result.background.map((model) => model.known);
    const popularKnown = Math.min(...known.slice(0, popular));
    t.true(popularKnown >= 0.97, `the models of 5 providers known by ${popularKnown} at least`);
    t.true(known.slice(popular).every((share) => share > 0), 'a provider keeps its own model');
    t.true(result.largestFrameBytes <= MAX_GOSSIP_FRAME_BYTES);
    const singles = known.slice(popular).sort((a, b) => a - b);
    t.log(`More models than a table holds (${result.background.length} in a table of ${maxEntries}, 400 nodes): the ${popular} models of 5 providers are`
        + ` known by ${(100 * popularKnown).toFixed(1)}% of the nodes at least; a model of 1 provider by ${(100 * singles[singles.length >> 1]!).toFixed(0)}%`
        + ` (median). A full frame (32 models, up to 4 providers each) is ${number(result.largestFrameBytes)} bytes: at most`
        + ` ${number(result.largestFrameBytes * fanout / 1_000)} kB per node per round, ${number(result.largestFrameBytes * fanout * 60_000 / intervalMs / 1_000)} kB a minute`);
});

test('the simulation is deterministic: a seed gives the same figures', (t) => {
    const run = () => {
        const {wallMs, ...figures} = simulateModelGossip({seed: 5, nodes: 300, neighbours: 16, warmupRounds: 5});
        return figures;
    };
    const first = run();
    t.deepEqual(run(), first);
    t.not(first.announced!.roundsTo99, null);
});
