import test from 'ava';
import {DeliveryPace, MIN_TOKENS_FOR_PACE} from '../inference/remote/delivery-pace.js';
import {explainNoPeer, peerScore, rankPeers, type PeerCandidate} from '../inference/remote/peer-ranking.js';
import {capabilitiesFixture} from '../harness/capabilities-fixture.js';

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

test('what a peer\'s answers delivered here outranks what it announces: a relayed or slow route counts', (t) => {
    const announcedFast = {...peer('relayed', {speed: 100}), deliveredTokensPerSecond: 20};
    const plain = {...peer('direct', {speed: 60}), deliveredTokensPerSecond: 55};
    t.deepEqual(rankPeers([announcedFast, plain], {model: 'demo'}).map((candidate) => candidate.id), ['direct', 'relayed']);
    t.is(peerScore({...peer('x', {speed: 100}), deliveredTokensPerSecond: null}), peerScore(peer('x', {speed: 100})), 'nothing delivered yet: the announced speed');
});

test('the delivered pace counts tokens after the first over the time since it, and needs a few to tell', (t) => {
    const pace = new DeliveryPace();
    t.is(pace.tokensPerSecond(), null);
    pace.received(1, 1_000); // the first token, after the prompt: not counted
    for (let i = 1; i <= 10; i++)
        pace.received(2, 1_000 + i * 100);
    t.is(pace.tokensPerSecond(), 20);
    const short = new DeliveryPace();
    for (let i = 0; i <= MIN_TOKENS_FOR_PACE - 1; i++)
        short.received(1, i * 10);
    t.is(short.tokensPerSecond(), null, 'too few tokens');
    const burst = new DeliveryPace();
    burst.received(1, 5);
    burst.received(50, 5);
    t.is(burst.tokensPerSecond(), null, 'no time elapsed');
    // A peer decoding speculatively sends each pass's tokens together: the pace is still tokens over time.
    const speculative = new DeliveryPace();
    speculative.received(1, 0);
    for (let pass = 1; pass <= 5; pass++)
        for (let frame = 0; frame < 4; frame++)
            speculative.received(1, pass * 100 + frame * 0.1);
    t.is(Math.round(speculative.tokensPerSecond()!), 40, '20 tokens in 500 ms');
});
