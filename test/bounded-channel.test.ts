import {Duplex} from 'node:stream';
import {setImmediate as tick} from 'node:timers/promises';
import test from 'ava';
import Protomux from 'protomux';
import {z} from 'zod';
import {BoundedChannel, type ChannelPeer} from '../swarm/channel/bounded-channel.js';
import {defineChannel} from '../swarm/channel/channel-spec.js';
import {ProtocolViolation, type CloseReason} from '../swarm/channel/errors.js';
import {PeerState} from '../swarm/peer-state.js';
import {capabilitiesFixture} from '../harness/capabilities-fixture.js';

const SPEC = defineChannel({
    protocol: 'test/bounded',
    rates: {
        frames: {perSecond: 1, burst: 5},
        bytes: {perSecond: 1, burst: 1024, unit: 'byte'},
        asks: {perSecond: 1, burst: 2, types: ['ask']}
    },
    messages: {
        json: {what: 'test message', maxBytes: 64, rates: ['frames', 'bytes', 'asks'],
            schema: z.discriminatedUnion('type', [z.object({type: z.literal('ask'), n: z.number()}), z.object({type: z.literal('tell'), n: z.number()})])},
        raw: {what: 'raw frame', maxBytes: 4, rates: [], decode: (frame: Uint8Array) => {
            if (frame.byteLength === 0)
                throw new ProtocolViolation('empty raw frame', 'FRAME_MALFORMED');
            return frame[0]!;
        }}
    }
});

/** Two ends of a connection that keeps frames whole, as a Noise stream does. */
function streamPair() {
    const ends: Duplex[] = [];
    for (let i = 0; i < 2; i++)
        ends.push(new Duplex({objectMode: true, read() {}, write(chunk, _encoding, done) {
            ends[1 - i]!.push(chunk);
            done();
        }}));
    return ends as [Duplex, Duplex];
}

type TestPeer = ChannelPeer & {state: PeerState, closes: CloseReason[]};

/** Both ends of a connection, each recording how it was closed. */
function peers() {
    return streamPair().map((stream): TestPeer => {
        const closes: CloseReason[] = [];
        return {mux: Protomux.from(stream), state: new PeerState('peer', '0.1.0', capabilitiesFixture()), closes, close: (reason) => closes.push(reason)};
    }) as [TestPeer, TestPeer];
}

const ignore = {messages: {json: () => undefined, raw: () => undefined}};

async function open() {
    const [a, b] = peers();
    const received: unknown[] = [];
    const sender = new BoundedChannel(a, SPEC, ignore);
    const receiver = new BoundedChannel(b, SPEC, {messages: {json: (message) => received.push(message), raw: (byte) => received.push(byte)}});
    if (!await sender.opened || !await receiver.opened)
        throw new Error('the channel did not open');
    return {sender, a, b, received};
}

test('checked frames reach their handlers, decoded, and count in and out', async (t) => {
    const {sender, a, b, received} = await open();
    t.true(sender.send('json', {type: 'tell', n: 1}));
    sender.send('raw', Uint8Array.of(7));
    await tick();
    t.deepEqual(received, [{type: 'tell', n: 1}, 7]);
    t.is(a.state.bytesOut, JSON.stringify({type: 'tell', n: 1}).length + 1);
    t.is(b.state.bytesIn, a.state.bytesOut);
    t.deepEqual(b.closes, []);
});

for (const [name, frame, message] of [
    ['an oversized JSON frame', 'json', /test message of 70 bytes exceeds 64/],
    ['an oversized binary frame', 'raw', /raw frame of 65 bytes exceeds 4/],
    ['a malformed JSON frame', 'malformed', /test message is malformed/],
    ['an empty binary frame', 'empty', /empty raw frame/]
] as const) {
    test(`${name} closes the connection as a violation, before any handler sees it`, async (t) => {
        const {sender, b, received} = await open();
        if (frame === 'json')
            sender.send('json', {type: 'tell', n: 1, pad: 'x'.repeat(40)} as never);
        else if (frame === 'malformed')
            sender.send('json', {type: 'tell'} as never);
        else
            sender.send('raw', frame === 'raw' ? new Uint8Array(65) : new Uint8Array(0));
        await tick();
        t.deepEqual(received, []);
        t.is(b.closes.length, 1);
        t.is(b.closes[0]!.kind, 'violation');
        t.regex(b.closes[0]!.message, message);
    });
}

test('a flood is a violation; a limit by type counts only its types', async (t) => {
    const {sender, b, received} = await open();
    sender.send('json', {type: 'ask', n: 1});
    sender.send('json', {type: 'tell', n: 2});
    sender.send('json', {type: 'ask', n: 3});
    await tick();
    t.is(received.length, 3);
    t.deepEqual(b.closes, []);
    sender.send('json', {type: 'ask', n: 4});
    await tick();
    t.is(received.length, 3);
    t.like(b.closes[0], {kind: 'violation', message: 'flood: test messages over the asks limit of test/bounded (1/s, burst 2)'});
});

test('a handler\'s own errors close the connection: a ProtocolViolation as a violation, others as local', async (t) => {
    const [a, b] = peers();
    const errors = [new ProtocolViolation('told twice'), new Error('disk full')];
    const sender = new BoundedChannel(a, SPEC, ignore);
    sender.send('raw', Uint8Array.of(1));
    sender.send('raw', Uint8Array.of(2));
    const receiver = new BoundedChannel(b, SPEC, {messages: {json: () => undefined, raw: () => {
        throw errors.shift();
    }}});
    await receiver.opened;
    await tick();
    t.deepEqual(b.closes, [{kind: 'violation', message: 'told twice'}, {kind: 'local', message: 'disk full'}]);
});

test('a second channel of one protocol on a connection is refused', (t) => {
    const [a] = peers();
    new BoundedChannel(a, SPEC, ignore);
    t.throws(() => new BoundedChannel(a, SPEC, ignore), {message: /duplicate test\/bounded channel/});
});

test('a spec whose limits cannot hold is refused where it is defined, or where a setting overrides it', (t) => {
    const message = {what: 'm', maxBytes: 100, rates: ['bytes'] as const, schema: z.object({})};
    t.throws(() => defineChannel({protocol: 'p', rates: {bytes: {perSecond: 10, burst: 99, unit: 'byte'}}, messages: {message}}),
        {message: /burst is less than one largest frame/});
    t.throws(() => defineChannel({protocol: 'p', rates: {bytes: {perSecond: 0, burst: 100}}, messages: {message}}), {message: /lets nothing through/});
    t.throws(() => defineChannel({protocol: 'p', rates: {bytes: {perSecond: 1, burst: 100}}, messages: {message: {...message, maxBytes: 0}}}),
        {message: /maxBytes/});
    const [a] = peers();
    t.throws(() => new BoundedChannel(a, SPEC, ignore, {rates: {bytes: {perSecond: 1, burst: 10, unit: 'byte'}}}),
        {message: /burst is less than one largest frame/});
});
