import {mkdtemp, rm, writeFile} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import test from 'ava';
import {BanList} from '../swarm/ban-list.js';
import {ProtocolViolation} from '../swarm/channel/errors.js';
import {decodeFrame, encodeFrame, MAX_FRAME_BYTES} from '../swarm/channel/frame-codec.js';
import {MessageRateLimiter} from '../swarm/channel/message-rate-limiter.js';
import {buildNetworkModelTable} from '../swarm/network-models.js';
import {networkTopic, secretProof, verifySecretProof} from '../swarm/network-topic.js';
import {IdentityError, loadOrCreateIdentity} from '../swarm/node-identity.js';
import {PeerState} from '../swarm/peer-state.js';
import {controlMessageSchema, helloSchema, PROTOCOL_VERSION} from '../swarm/protocol/control-messages.js';
import {RttEstimator} from '../swarm/rtt-estimator.js';
import {capabilitiesFixture} from '../harness/capabilities-fixture.js';

test('bans grow with repeat offences and expire', (t) => {
    const bans = new BanList();
    const first = bans.ban('p', 'garbage', 0);
    t.true(bans.isBanned('p', 1));
    t.false(bans.isBanned('p', first.until));
    const second = bans.ban('p', 'garbage', first.until + 1);
    t.is(second.offences, 2);
    t.true(second.until - second.bannedAt > first.until - first.bannedAt);
    t.false(bans.isBanned('other', 1));
    t.deepEqual(bans.active(first.until + 2).map((record) => record.peerId), ['p']);
});

test('the rate limiter allows a burst, then the sustained rate', (t) => {
    const limiter = new MessageRateLimiter(10, 5, 0);
    t.is([...Array(8)].filter(() => limiter.take(1, 0)).length, 5);
    t.false(limiter.take(1, 50));
    t.true(limiter.take(1, 100)); // 100 ms at 10/s earns one message
    t.false(limiter.take(1, 100));
});

test('RTT is smoothed', (t) => {
    const rtt = new RttEstimator();
    t.is(rtt.smoothedMs, undefined);
    rtt.addSample(80);
    t.is(rtt.smoothedMs, 80);
    rtt.addSample(160);
    t.is(rtt.smoothedMs, 90);
    t.is(rtt.latestMs, 160);
});

test('success rate starts neutral and follows outcomes', (t) => {
    const peer = new PeerState('p', '0.1.0', capabilitiesFixture());
    t.is(peer.successRate, 0.5);
    for (let i = 0; i < 8; i++)
        peer.recordRequest(true);
    peer.recordRequest(false);
    t.is(peer.successRate, 9 / 11);
    t.like(peer.toJSON(), {id: 'p', requests: {sent: 9, succeeded: 8}});
});

test('network topics separate names and secrets', (t) => {
    const topics = [
        networkTopic({name: 'public'}), networkTopic({name: 'home'}),
        networkTopic({name: 'home', secret: 'one secret'}), networkTopic({name: 'home', secret: 'two secret'})
    ].map((topic) => topic.toString('hex'));
    t.is(new Set(topics).size, 4);
    t.is(networkTopic({name: 'home'}).length, 32);
    t.deepEqual(networkTopic({name: 'home', secret: 'x'.repeat(9)}), networkTopic({name: 'home', secret: 'x'.repeat(9)}));
});

test('a secret proof binds the secret, the session and the prover', (t) => {
    const session = Buffer.alloc(64, 1);
    const prover = Buffer.alloc(32, 2);
    const proof = secretProof('sesame-street', session, prover);
    t.true(verifySecretProof('sesame-street', session, prover, proof));
    t.false(verifySecretProof('wrong-secret', session, prover, proof));
    t.false(verifySecretProof('sesame-street', Buffer.alloc(64, 3), prover, proof), 'replayed on another session');
    t.false(verifySecretProof('sesame-street', session, Buffer.alloc(32, 4), proof), 'reflected by another key');
    t.false(verifySecretProof('sesame-street', session, prover, proof.subarray(0, 16)));
});

const hello = {protocol: PROTOCOL_VERSION, software: '0.1.0', network: 'public', proof: null, capabilities: capabilitiesFixture()};

test('control frames round-trip', (t) => {
    t.deepEqual(decodeFrame(encodeFrame(hello), helloSchema, 'hello'), hello);
    t.deepEqual(decodeFrame(encodeFrame({type: 'ping', nonce: 3}), controlMessageSchema, 'msg'), {type: 'ping', nonce: 3});
});

const hostileFrames: [string, Buffer, typeof helloSchema | typeof controlMessageSchema][] = [
    ['empty', Buffer.alloc(0), controlMessageSchema],
    ['random bytes', Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x00, 0xff]), controlMessageSchema],
    ['truncated JSON', encodeFrame({type: 'ping', nonce: 1}).subarray(0, 10), controlMessageSchema],
    ['oversized', Buffer.alloc(MAX_FRAME_BYTES + 1, 0x20), controlMessageSchema],
    ['JSON but not an object', Buffer.from('[1,2,3]'), controlMessageSchema],
    ['unknown type', Buffer.from('{"type":"rm -rf"}'), controlMessageSchema],
    ['negative nonce', Buffer.from('{"type":"ping","nonce":-1}'), controlMessageSchema],
    ['nonce as string', Buffer.from('{"type":"pong","nonce":"1"}'), controlMessageSchema],
    ['capabilities with a huge model list', encodeFrame({type: 'capabilities', capabilities: capabilitiesFixture({
        models: Array.from({length: 300}, (_, i) => ({id: `m${i}`, sha256: null, sizeBytes: 1, quantization: 'Q4', layers: 1, layerBytes: [1], loaded: false}))
    })}), controlMessageSchema],
    ['capabilities with negative VRAM', encodeFrame({type: 'capabilities', capabilities: capabilitiesFixture({
        device: {backend: false, gpuNames: [], vramTotalBytes: -1, vramFreeBytes: 0, ramFreeBytes: 0, cpuThreads: 1}
    })}), controlMessageSchema],
    ['hello without capabilities', Buffer.from(JSON.stringify({...hello, capabilities: undefined})), helloSchema],
    ['hello with a malformed proof', Buffer.from(JSON.stringify({...hello, proof: 'xyz'})), helloSchema],
    ['hello with an absurd software string', Buffer.from(JSON.stringify({...hello, software: 'x'.repeat(5000)})), helloSchema]
];

for (const [name, frame, schema] of hostileFrames) {
    test(`hostile frame is a ProtocolViolation: ${name}`, (t) => {
        t.throws(() => decodeFrame(frame, schema as never, 'frame'), {instanceOf: ProtocolViolation});
    });
}

test('the network model table groups holders by file hash and keeps prices', (t) => {
    const offer = {id: 'llama', sha256: 'a'.repeat(64), sizeBytes: 1000, quantization: 'Q4_K_M', layers: 2, layerBytes: [400, 400], loaded: true};
    const table = buildNetworkModelTable([
        {id: 'self', self: true, capabilities: capabilitiesFixture({models: [offer]})},
        {id: 'peer1', self: false, capabilities: capabilitiesFixture({models: [{...offer, loaded: false}], pricePerMillionTokens: 2})},
        {id: 'peer2', self: false, capabilities: capabilitiesFixture({models: [{...offer, id: 'llama-renamed'}]})},
        {id: 'peer3', self: false, capabilities: capabilitiesFixture({shards: [{model: 'llama', firstLayer: 0, lastLayer: 0}]})},
        {id: 'peer4', self: false, capabilities: capabilitiesFixture({models: [{...offer, sha256: null, id: 'other'}]})}
    ]);
    t.deepEqual(table.map((model) => model.id), ['llama', 'other']);
    const llama = table[0]!;
    t.deepEqual(llama.holders.map((holder) => [holder.nodeId, holder.whole, holder.loaded]),
        [['self', true, true], ['peer1', true, false], ['peer2', true, true], ['peer3', false, false]]);
    t.deepEqual(llama.holders[3]!.layers, [{first: 0, last: 0}]);
    t.is(llama.holders[1]!.pricePerMillionTokens, 2);
    t.deepEqual(llama.resources, {wholeModelBytes: 1000, perLayerBytes: [400, 400]});
});

test('identity: a damaged file is an error, never replaced', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'strongdoge-id-'));
    t.teardown(() => rm(dir, {recursive: true, force: true}));
    const {identity, created} = await loadOrCreateIdentity(dir);
    t.true(created);
    t.is(identity.id.length, 64);
    t.regex(identity.shortId, /^[a-z0-9]{8}$/);
    const again = await loadOrCreateIdentity(dir);
    t.false(again.created);
    t.is(again.identity.id, identity.id);

    const other = JSON.parse(JSON.stringify({publicKey: 'b'.repeat(64), secretKey: identity.secretKey.toString('hex')}));
    await writeFile(join(dir, 'identity.json'), JSON.stringify(other));
    await t.throwsAsync(loadOrCreateIdentity(dir), {instanceOf: IdentityError, message: /does not belong/});
    await writeFile(join(dir, 'identity.json'), '{{');
    await t.throwsAsync(loadOrCreateIdentity(dir), {instanceOf: IdentityError, message: /not valid JSON/});
    for (const json of ['null', '[]', '7', '"keys"', '{}']) {
        await writeFile(join(dir, 'identity.json'), json);
        await t.throwsAsync(loadOrCreateIdentity(dir), {instanceOf: IdentityError, message: /identity\.json: (must hold a JSON object|missing or malformed keys)/}, json);
    }
});
