import test from 'ava';
import {decodeFrame, encodeFrame} from '../swarm/channel/frame-codec.js';
import {ProtocolViolation} from '../swarm/channel/errors.js';
import {checkGossipFrame, type GossipEntry, type GossipFrame, MAX_GOSSIP_AGE_MS, MAX_GOSSIP_ENTRIES, MAX_GOSSIP_FRAME_BYTES,
    MAX_GOSSIP_PROVIDERS, MODEL_GOSSIP_CHANNEL} from '../swarm/gossip/gossip-messages.js';
import {type LocalModel, localModelsFromOffers, ModelGossip, type ModelGossipOptions, modelGossipDefaults} from '../swarm/gossip/model-gossip.js';

const {ttlMs, hopAgeMs} = modelGossipDefaults;

/** A node id, or a model's hash: 64 hex digits from a number (and a prefix, so the two never meet). */
const nodeId = (n: number) => n.toString(16).padStart(64, '0');
const sha = (n: number) => `e${n.toString(16).padStart(63, '0')}`;
const model = (n: number, name = `model-${n}`): LocalModel => ({sha256: sha(n), name, sizeBytes: 1_000_000 + n, layers: 32, quantization: 'Q4_K_M'});
const entry = (n: number, providers: [id: string, ageMs: number][], name = `model-${n}`): GossipEntry =>
    ({...model(n, name), providers: providers.map(([id, ageMs]) => ({id, ageMs}))});

/** A node with a clock of its own, which a test moves. */
function node(id: number, options: Partial<ModelGossipOptions> = {}, start = 1_000_000) {
    const clock = {now: start};
    const gossip = new ModelGossip({selfId: nodeId(id), clock: () => clock.now, ...options});
    return {id: nodeId(id), gossip, clock, tick: (ms: number) => { clock.now += ms; }};
}

function violation(t: import('ava').ExecutionContext, fn: () => unknown, reason: RegExp) {
    const error = t.throws(fn, {instanceOf: ProtocolViolation});
    t.regex(error!.message, reason);
    return error!;
}

test('this node\'s offers are authoritative: listed first at age 0, never expired; unhashed offers are not gossiped', (t) => {
    const a = node(1);
    const offers = [
        {id: 'hashed', sha256: sha(1), sizeBytes: 5, quantization: 'F16', layers: 4, layerBytes: [1, 1, 1, 1], loaded: true},
        {id: 'hashing', sha256: null, sizeBytes: 7, quantization: 'F16', layers: 4, layerBytes: [], loaded: false}
    ];
    a.gossip.setLocalModels(localModelsFromOffers(offers));
    a.tick(10 * ttlMs);
    const [view, ...rest] = a.gossip.entries();
    t.deepEqual(rest, []);
    t.like(view, {sha256: sha(1), name: 'hashed', sizeBytes: 5, layers: 4, quantization: 'F16', local: true, providerCount: 1, providerCountCapped: false, ageMs: 0});
    t.deepEqual(view!.providers, [{id: a.id, ageMs: 0, self: true, direct: true}]);
    t.deepEqual(a.gossip.frame(), {entries: [{sha256: sha(1), name: 'hashed', sizeBytes: 5, layers: 4, quantization: 'F16', providers: [{id: a.id, ageMs: 0}]}]});
});

test('ages, never timestamps: a receiver dates a provider by its own clock, one hop older than the sender knew it', (t) => {
    const a = node(1);
    const b = node(2, {}, 5_000_000_000); // a clock far from a's: nothing depends on it
    a.gossip.setLocalModels([model(1)]);
    t.is(b.gossip.merge(a.gossip.frame(), a.id), 1, 'one model new to b');
    t.like(b.gossip.get(sha(1)), {local: false, providerCount: 1, ageMs: hopAgeMs});
    t.deepEqual(b.gossip.get(sha(1))!.providers, [{id: a.id, ageMs: hopAgeMs, self: false, direct: true}]);
    b.tick(10_000);
    t.is(b.gossip.get(sha(1))!.ageMs, hopAgeMs + 10_000);
    // relayed on: c hears it from b, older by b's age and one more hop, and second-hand
    const c = node(3, {}, 42);
    t.is(c.gossip.merge(b.gossip.frame(), b.id), 1);
    t.deepEqual(c.gossip.get(sha(1))!.providers, [{id: a.id, ageMs: 2 * hopAgeMs + 10_000, self: false, direct: false}]);
    // a fresher word replaces an older one, an older one changes nothing
    b.gossip.merge(a.gossip.frame(), a.id);
    t.is(b.gossip.get(sha(1))!.ageMs, hopAgeMs);
    b.gossip.merge({entries: [entry(1, [[a.id, 60_000]])]}, nodeId(9));
    t.deepEqual(b.gossip.get(sha(1))!.providers, [{id: a.id, ageMs: hopAgeMs, self: false, direct: true}]);
});

test('providers expire after the TTL unless refreshed, and a model with none left goes', (t) => {
    const a = node(1);
    const b = node(2);
    a.gossip.setLocalModels([model(1), model(2)]);
    b.gossip.merge(a.gossip.frame(), a.id);
    b.tick(ttlMs - hopAgeMs - 1);
    t.true(b.gossip.has(sha(1)));
    a.gossip.setLocalModels([model(1)]);
    b.gossip.merge(a.gossip.frame(), a.id);
    b.tick(1);
    t.false(b.gossip.has(sha(2)), 'model 2 was not refreshed: gone at the TTL');
    t.true(b.gossip.has(sha(1)));
    t.is(b.gossip.size, 2, 'an expired model counts in size until the next expiry');
    t.is(b.gossip.expire(), 1);
    t.deepEqual(b.gossip.entries().map((view) => view.sha256), [sha(1)]);
    b.tick(ttlMs);
    t.deepEqual(b.gossip.entries(), []);
    t.deepEqual(b.gossip.frame(), {entries: []});
    // an age already past the TTL brings nothing
    t.is(b.gossip.merge({entries: [entry(3, [[a.id, ttlMs - hopAgeMs]])]}, a.id), 0);
    t.is(b.gossip.size, 0);
});

test('a departed provider is gone from every table of a chain within the TTL of its last frame, and no hop dates it fresher', (t) => {
    const intervalMs = 5_000;
    const chain = Array.from({length: 8}, (_, index) => node(index + 1, {}, 777 * index));
    chain[0]!.gossip.setLocalModels([model(1)]);
    const lastWord = (rounds: number) => {
        for (let round = 0; round < rounds; round++) {
            for (const member of chain)
                member.tick(intervalMs);
            const frames = chain.map((member) => member.gossip.frame());
            for (let index = 1; index < chain.length; index++)
                chain[index]!.gossip.merge(frames[index - 1], chain[index - 1]!.id);
        }
    };
    lastWord(20);
    for (const [index, member] of chain.entries())
        if (index > 0)
            t.true(member.gossip.get(sha(1))!.ageMs >= index * (intervalMs + hopAgeMs) - intervalMs, `hop ${index} is at least its distance old`);
    // the provider leaves just after its frame of the last round
    chain[0]!.gossip.setLocalModels([]);
    let rounds = 0;
    while (chain.some((member) => member.gossip.has(sha(1)))) {
        lastWord(1);
        rounds++;
    }
    t.true(rounds * intervalMs <= ttlMs + intervalMs, `gone after ${rounds} rounds`);
    t.true(rounds * intervalMs >= ttlMs - chain.length * (intervalMs + hopAgeMs), 'not gone long before the TTL either');
});

test('a malformed frame is a protocol violation with its reason, and changes nothing', (t) => {
    const b = node(2);
    const a = nodeId(1);
    b.gossip.merge({entries: [entry(1, [[a, 0]])]}, a);
    const before = b.gossip.entries();
    const good = entry(2, [[a, 0]]);
    const cases: [string, unknown, RegExp][] = [
        ['not an object', 'models', /top level/],
        ['no entries', {}, /entries/],
        ['an unknown field', {entries: [], more: 1}, /more/],
        ['too many entries', {entries: Array.from({length: MAX_GOSSIP_ENTRIES + 1}, (_, index) => entry(index + 10, [[a, 0]]))}, /entries.*(big|many|<=)/i],
        ['a hash not hex', {entries: [good, {...good, sha256: 'A'.repeat(64)}]}, /entries\.1\.sha256.*hex/],
        ['a short hash', {entries: [{...good, sha256: 'ab'}]}, /sha256/],
        ['the same model twice', {entries: [good, {...good, name: 'again'}]}, new RegExp(`entries\\.1\\.sha256: model ${sha(2)} listed twice`)],
        ['no providers', {entries: [{...good, providers: []}]}, /providers: a model without providers/],
        ['too many providers', {entries: [entry(2, Array.from({length: MAX_GOSSIP_PROVIDERS + 1}, (_, index) => [nodeId(index + 20), 0]))]}, /providers/],
        ['the same provider twice', {entries: [entry(2, [[a, 0], [nodeId(3), 5], [a, 9]])]}, new RegExp(`providers\\.2\\.id: provider ${a} listed twice`)],
        ['a provider not a node id', {entries: [entry(2, [['me', 0]])]}, /providers\.0\.id: not 64 lowercase hex digits/],
        ['an age in the future', {entries: [entry(2, [[a, -1]])]}, /ageMs: an age in the future/],
        ['an age not whole', {entries: [entry(2, [[a, 1.5]])]}, /ageMs: an age in whole milliseconds/],
        ['an age past any TTL', {entries: [entry(2, [[a, MAX_GOSSIP_AGE_MS + 1]])]}, /ageMs: an age over/],
        ['an age not a number', {entries: [{...good, providers: [{id: a, ageMs: '5'}]}]}, /ageMs/],
        ['a name too long', {entries: [{...good, name: 'x'.repeat(129)}]}, /name/],
        ['too many layers', {entries: [{...good, layers: 4097}]}, /layers/],
        ['a negative size', {entries: [{...good, sizeBytes: -1}]}, /sizeBytes/],
        ['a provider with more to say', {entries: [{...good, providers: [{id: a, ageMs: 0, loaded: true}]}]}, /providers\.0/]
    ];
    for (const [what, frame, reason] of cases) {
        const error = violation(t, () => b.gossip.merge(frame, a), reason);
        t.is(error.code, 'FRAME_MALFORMED', what);
        t.regex(error.message, /^model gossip frame is malformed at /, what);
    }
    t.deepEqual(b.gossip.entries(), before, 'no case changed the table, not even a good entry before a bad one');
});

test('the channel spec bounds a frame and decodes it with the same schema', (t) => {
    const {models} = MODEL_GOSSIP_CHANNEL.messages;
    t.is(models.maxBytes, MAX_GOSSIP_FRAME_BYTES);
    t.deepEqual(models.rates, ['frames']);
    t.like(MODEL_GOSSIP_CHANNEL.rates.frames, {perSecond: 1, burst: 8});
    const twice = encodeFrame({entries: [entry(1, [[nodeId(1), 0]]), entry(1, [[nodeId(2), 0]])]});
    const error = t.throws(() => decodeFrame(twice, models.schema, models.what, models.maxBytes), {instanceOf: ProtocolViolation});
    t.is(error!.code, 'FRAME_MALFORMED');
    t.regex(error!.message, /listed twice/);
    t.throws(() => decodeFrame(Buffer.alloc(MAX_GOSSIP_FRAME_BYTES + 1, 32), models.schema, models.what, models.maxBytes), {message: /exceeds/});
});

test('a peer counts once as a provider of its own, and for at most providersPerEntry more however it lies', (t) => {
    const b = node(2);
    const liar = nodeId(66);
    let fake = 1_000;
    for (let frame = 0; frame < 20; frame++) {
        b.tick(1_000);
        // the liar names itself and four new "providers" each time, all brand new
        b.gossip.merge({entries: [entry(1, [[liar, 0], [nodeId(fake++), 0], [nodeId(fake++), 0], [nodeId(fake++), 0]]),
            entry(2, [[nodeId(fake++), 0], [nodeId(fake++), 0], [nodeId(fake++), 0], [nodeId(fake++), 0]])]}, liar);
    }
    t.is(b.gossip.get(sha(1))!.providerCount, 1 + MAX_GOSSIP_PROVIDERS, 'itself and the four it named last');
    t.is(b.gossip.get(sha(2))!.providerCount, MAX_GOSSIP_PROVIDERS, 'the four it named last');
    // it cannot take over providers that others told of either: freshening one counts against its share
    const honest = nodeId(67);
    b.gossip.merge({entries: [entry(2, [[honest, 0], [nodeId(5), 0], [nodeId(6), 0], [nodeId(7), 0]])]}, honest);
    t.is(b.gossip.get(sha(2))!.providerCount, 8);
    b.tick(1_000);
    b.gossip.merge({entries: [entry(2, [[nodeId(5), 0], [nodeId(6), 0], [nodeId(7), 0], [nodeId(fake++), 0]])]}, liar);
    const providers = b.gossip.get(sha(2))!.providers;
    t.is(b.gossip.get(sha(2))!.providerCount, 5, 'honest, and the liar\'s four, three of them freshened from the honest one\'s');
    t.true(providers.every((provider) => !provider.self));
    // a peer is direct when it names itself, second-hand otherwise
    t.deepEqual(b.gossip.get(sha(1))!.providers.filter((provider) => provider.direct).map((provider) => provider.id), [liar]);
});

test('a model\'s providers are counted up to maxTrackedProviders: the freshest stay, and the count says it is capped', (t) => {
    const b = node(2);
    for (let peer = 100; peer < 130; peer++) {
        b.tick(1_000);
        b.gossip.merge({entries: [entry(1, [[nodeId(peer), 0]])]}, nodeId(peer));
    }
    const view = b.gossip.get(sha(1))!;
    t.like(view, {providerCount: modelGossipDefaults.maxTrackedProviders, providerCountCapped: true, ageMs: hopAgeMs});
    t.deepEqual(view.providers.map((provider) => provider.id), [129, 128, 127, 126].map(nodeId), 'the freshest first');
    t.true(view.providers.every((provider) => provider.direct));
    // a stale word of yet another provider does not push out fresher ones
    b.gossip.merge({entries: [entry(1, [[nodeId(200), 60_000]])]}, nodeId(129));
    t.false(b.gossip.get(sha(1))!.providers.some((provider) => provider.id === nodeId(200)));
    t.is(b.gossip.get(sha(1))!.providerCount, modelGossipDefaults.maxTrackedProviders);
});

test('a peer\'s word about this node is ignored: this node alone says what it serves', (t) => {
    const b = node(2);
    const a = nodeId(1);
    t.is(b.gossip.merge({entries: [entry(1, [[b.id, 0]])]}, a), 0, 'no model of which this node is the only provider');
    t.is(b.gossip.size, 0);
    b.gossip.setLocalModels([model(2)]);
    b.gossip.merge({entries: [entry(2, [[a, 0], [b.id, 50_000]])]}, a);
    t.deepEqual(b.gossip.get(sha(2))!.providers.map((provider) => [provider.id, provider.ageMs]), [[b.id, 0], [a, hopAgeMs]]);
    // no longer served here: the entry stays while others provide it, without this node
    b.gossip.setLocalModels([]);
    t.like(b.gossip.get(sha(2)), {local: false, providerCount: 1});
    b.tick(ttlMs);
    t.deepEqual(b.gossip.entries(), []);
});

test('a model is described by this node\'s own offer, else by a provider itself, else by the first relay', (t) => {
    const b = node(2);
    const provider = nodeId(1);
    const relay = nodeId(3);
    b.gossip.merge({entries: [entry(1, [[provider, 5_000]], 'relayed name')]}, relay);
    t.is(b.gossip.get(sha(1))!.name, 'relayed name');
    b.gossip.merge({entries: [entry(1, [[provider, 5_000]], 'another relay')]}, nodeId(4));
    t.is(b.gossip.get(sha(1))!.name, 'relayed name');
    b.gossip.merge({entries: [{...entry(1, [[provider, 0]], 'its own name'), layers: 40}]}, provider);
    t.like(b.gossip.get(sha(1)), {name: 'its own name', layers: 40});
    b.gossip.merge({entries: [entry(1, [[relay, 0]], 'a later provider')]}, relay);
    t.is(b.gossip.get(sha(1))!.name, 'its own name', 'the first provider\'s word stands');
    b.gossip.setLocalModels([model(1, 'my file')]);
    b.gossip.merge({entries: [entry(1, [[provider, 0]], 'its own name')]}, provider);
    t.like(b.gossip.get(sha(1)), {name: 'my file', layers: 32, local: true, providerCount: 3});
});

test('frames are bounded: this node\'s models and news first, then every model in turn', (t) => {
    const b = node(2);
    b.gossip.setLocalModels([model(1), model(2)]);
    for (let batch = 0; batch < 4; batch++)
        b.gossip.merge({entries: Array.from({length: 25}, (_, index) => entry(100 + batch * 25 + index, [[nodeId(50 + index), 1_000]]))}, nodeId(9));
    t.is(b.gossip.size, 102);
    const seen = new Set<string>();
    const first = b.gossip.frame();
    t.is(first.entries.length, MAX_GOSSIP_ENTRIES);
    t.deepEqual(first.entries.slice(0, 2).map((value) => value.sha256), [sha(1), sha(2)], 'this node\'s own first');
    for (const value of first.entries)
        seen.add(value.sha256);
    for (let frame = 1; frame < Math.ceil(102 / MAX_GOSSIP_ENTRIES) + 1; frame++)
        for (const value of b.gossip.frame().entries)
            seen.add(value.sha256);
    t.is(seen.size, 102, 'every model went out within a few frames');
    // news goes before the rest: a new model, and a model with a new provider
    b.gossip.merge({entries: [entry(500, [[nodeId(7), 0]]), entry(150, [[nodeId(8), 0]])]}, nodeId(7));
    const next = b.gossip.frame().entries.map((value) => value.sha256);
    t.deepEqual(next.slice(0, 4).sort(), [sha(1), sha(2), sha(150), sha(500)].sort());
    const entry150 = b.gossip.get(sha(150))!;
    t.is(entry150.providers.length, 2);
    t.is(entry150.providers[0]!.id, nodeId(8), 'the freshest provider first');
});

test('news cannot starve the other models: each goes out within size / (entriesPerFrame / 2) frames', (t) => {
    const b = node(2);
    b.gossip.merge({entries: Array.from({length: 32}, (_, index) => entry(index, [[nodeId(9), 0]]))}, nodeId(9));
    b.gossip.merge({entries: Array.from({length: 32}, (_, index) => entry(32 + index, [[nodeId(9), 0]]))}, nodeId(9));
    b.gossip.frame();
    b.gossip.frame();
    // all 64 went out once; now each must go out again however much news comes
    const waiting = new Set(b.gossip.entries().map((view) => view.sha256));
    let next = 1_000;
    let frames = 0;
    while (waiting.size > 0 && frames < 100) {
        // 20 new models before every frame: more news than a frame takes
        b.gossip.merge({entries: Array.from({length: 20}, () => entry(next++, [[nodeId(10), 0]]))}, nodeId(10));
        for (const value of b.gossip.frame().entries)
            waiting.delete(value.sha256);
        frames++;
    }
    t.true(frames <= Math.ceil(64 / (MAX_GOSSIP_ENTRIES / 2)), `${frames} frames`);
});

test('a largest frame passes its own schema and fits the frame bound', (t) => {
    const b = node(2);
    const name = '\u0001'.repeat(128); // escaped to 6 bytes a character
    b.gossip.setLocalModels(Array.from({length: 40}, (_, index) => ({...model(index), name, quantization: name, sizeBytes: 2 ** 60, layers: 4096})));
    // three other providers of each, as old as a live provider gets: the longest ages
    for (let peer = 0; peer < 3; peer++)
        b.gossip.merge({entries: Array.from({length: 32}, (_, index) => entry(index, [[nodeId(100 + peer), ttlMs - 2 * hopAgeMs]]))}, nodeId(100 + peer));
    const frame: GossipFrame = b.gossip.frame();
    t.is(frame.entries.length, MAX_GOSSIP_ENTRIES);
    t.true(frame.entries.every((value) => value.providers.length === MAX_GOSSIP_PROVIDERS));
    const bytes = encodeFrame(frame).byteLength;
    t.true(bytes <= MAX_GOSSIP_FRAME_BYTES, `${bytes} bytes`);
    t.deepEqual(checkGossipFrame(JSON.parse(encodeFrame(frame).toString('utf8'))), frame);
});

test('the table is bounded: on overflow the models with the fewest providers go, the stalest first; this node\'s stay', (t) => {
    const b = node(2);
    b.gossip.setLocalModels([model(1), model(2), model(3)]);
    // 1,280 models from 40 peers, 32 at a time; every fifth has two providers, the rest one
    let next = 1_000;
    for (let peer = 0; peer < 40; peer++) {
        b.tick(1_000);
        const entries = Array.from({length: MAX_GOSSIP_ENTRIES}, () => {
            const n = next++;
            return entry(n, n % 5 === 0 ? [[nodeId(peer + 10), 0], [nodeId(peer + 500), 0]] : [[nodeId(peer + 10), 0]]);
        });
        b.gossip.merge({entries}, nodeId(peer + 10));
        t.true(b.gossip.size <= modelGossipDefaults.maxEntries);
    }
    const models = b.gossip.entries();
    t.is(models.length, modelGossipDefaults.maxEntries);
    t.deepEqual(models.filter((view) => view.local).map((view) => view.sha256), [sha(1), sha(2), sha(3)]);
    const twoProviders = models.filter((view) => view.providerCount === 2).length;
    t.is(twoProviders, 1_280 / 5, 'every model with two providers kept');
    const kept = new Set(models.map((view) => view.sha256));
    // of the single-provider models, the freshest are kept: the oldest peers' were dropped
    const singles = Array.from({length: 1_280}, (_, index) => 1_000 + index).filter((n) => n % 5 !== 0);
    const keptSingles = singles.filter((n) => kept.has(sha(n)));
    t.is(keptSingles.length, modelGossipDefaults.maxEntries - 3 - 256);
    t.deepEqual(keptSingles, singles.slice(singles.length - keptSingles.length), 'the newest singles');
    // a newcomer with one provider does not push out a fresher one
    b.gossip.merge({entries: [entry(9_999, [[nodeId(3), 35_000]])]}, nodeId(3));
    t.false(b.gossip.has(sha(9_999)));
    t.is(b.gossip.size, modelGossipDefaults.maxEntries);
});

test('options are checked', (t) => {
    t.throws(() => new ModelGossip({selfId: 'me'}), {message: /selfId/});
    t.throws(() => new ModelGossip({selfId: nodeId(1), entriesPerFrame: MAX_GOSSIP_ENTRIES + 1}), {message: /per frame/});
    t.throws(() => new ModelGossip({selfId: nodeId(1), providersPerEntry: 0}), {message: /per frame/});
    t.throws(() => new ModelGossip({selfId: nodeId(1), maxTrackedProviders: 2}), {message: /maxTrackedProviders/});
    t.throws(() => new ModelGossip({selfId: nodeId(1), ttlMs: MAX_GOSSIP_AGE_MS + 1}), {message: /TTL/});
    t.throws(() => new ModelGossip({selfId: nodeId(1)}).setLocalModels([{...model(1), sha256: 'x'}]), {message: /SHA-256/});
    t.throws(() => new ModelGossip({selfId: nodeId(1)}).merge({entries: []}, 'peer'), {message: /node id/});
});
