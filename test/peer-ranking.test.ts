import test from 'ava';
import {explainNoPeer, peerScore, rankPeers, type PeerCandidate} from '../inference/remote/peer-ranking.js';
import {capabilitiesFixture} from './helpers/capabilities-fixture.js';

const offer = (loaded = true) => ({id: 'demo', sha256: null, sizeBytes: 1, quantization: 'F16', layers: 8, layerBytes: [], loaded});

function peer(id: string, {successRate = 0.5, rttMs = 10, active = 0, speed = null as number | null, price = null as number | null, loaded = true, model = true} = {}): PeerCandidate {
    return {
        id, successRate, rttMs,
        capabilities: capabilitiesFixture({
            models: model ? [offer(loaded)] : [],
            load: {active, queued: 0},
            compute: {measuredTflops: null, lookupTflops: null, generationTokensPerSecond: speed, memoryBandwidthGBs: null},
            pricePerMillionTokens: price
        })
    };
}

test('only peers with the model loaded, within budget and not yet tried, are ranked', (t) => {
    const peers = [peer('a'), peer('b', {loaded: false}), peer('c', {model: false}), peer('d', {price: 9}), peer('e')];
    t.deepEqual(rankPeers(peers, {model: 'demo', maxPrice: 5, exclude: new Set(['e'])}).map((candidate) => candidate.id), ['a']);
    t.deepEqual(rankPeers(peers, {model: 'demo'}).map((candidate) => candidate.id).sort(), ['a', 'd', 'e']);
});

test('reliable, fast, idle, near peers rank first', (t) => {
    const ranked = rankPeers([
        peer('flaky', {successRate: 0.2}),
        peer('busy', {active: 3}),
        peer('far', {rttMs: 200}),
        peer('fast', {speed: 100}),
        peer('plain')
    ], {model: 'demo'}).map((candidate) => candidate.id);
    t.is(ranked[0], 'fast');
    t.is(ranked[1], 'plain');
    t.deepEqual(ranked.slice(2).sort(), ['busy', 'far', 'flaky']);
});

test('equal scores prefer the cheaper peer', (t) => {
    t.deepEqual(rankPeers([peer('dear', {price: 3}), peer('cheap', {price: 1})], {model: 'demo'}).map((candidate) => candidate.id), ['cheap', 'dear']);
    t.is(peerScore(peer('x', {price: 3})), peerScore(peer('y', {price: 1})));
});

test('the reason no peer qualifies names the model and the cause', (t) => {
    t.like(explainNoPeer([peer('a', {price: 8}), peer('b', {price: 6})], {model: 'demo', maxPrice: 2}),
        {code: 'over_budget', message: "model 'demo' is served by 2 peer(s), the cheapest at 6 per million tokens, above the maximum price of 2"});
    const notLoaded = explainNoPeer([peer('a', {loaded: false})], {model: 'demo'});
    t.is(notLoaded.code, 'no_peer');
    t.regex(notLoaded.message, /none has it loaded/);
    t.regex(explainNoPeer([], {model: 'demo'}).message, /no connected peer can serve model 'demo'/);
});
