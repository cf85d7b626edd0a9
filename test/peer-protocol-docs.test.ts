import {readFile} from 'node:fs/promises';
import test from 'ava';
import {MAX_TEXT_FRAME_CHARS, MAX_TEXT_FRAME_TOKENS, JOBS_CHANNEL} from '../inference/remote/jobs/job-messages.js';
import {jobsProtocolDefaults} from '../inference/remote/jobs/jobs-protocol.js';
import {DATA_HEADER_BYTES, MAX_SHARD_DATA_BYTES, SHARD_CHANNEL} from '../inference/sharded/tunnel/shard-messages.js';
import {shardProtocolDefaults} from '../inference/sharded/tunnel/shard-protocol.js';
import type {RateLimit} from '../swarm/channel/channel-spec.js';
import {MAX_GOSSIP_AGE_MS, MAX_GOSSIP_ENTRIES, MAX_GOSSIP_PROVIDERS, MODEL_GOSSIP_CHANNEL} from '../swarm/gossip/gossip-messages.js';
import {modelGossipDefaults} from '../swarm/gossip/model-gossip.js';
import {modelGossipProtocolDefaults} from '../swarm/gossip/model-gossip-protocol.js';
import {MAX_OUTSTANDING_PINGS} from '../swarm/peer-connection.js';
import {CONTROL_CHANNEL, helloSchema, PROTOCOL_VERSION} from '../swarm/protocol/control-messages.js';
import {swarmTimingDefaults} from '../swarm/swarm-node.js';

/**
 * docs/peer-protocol.md states each channel's bounds and rates twice, in its section and in "Limits": both are
 * held to the channel specs, so that the document cannot drift from the code again. A rewording that drops a
 * statement fails here by name: say it again, or change what is checked.
 */

const doc = await readFile(new URL('../docs/peer-protocol.md', import.meta.url), 'utf8');

/** A `## ` section as written. */
function rawSection(title: string) {
    const start = doc.indexOf(`\n## ${title}\n`);
    if (start === -1)
        throw new Error(`docs/peer-protocol.md has no section "${title}"`);
    const end = doc.indexOf('\n## ', start + 1);
    return doc.slice(start, end === -1 ? undefined : end);
}

/** A section with its whitespace folded to single spaces, so that sentences read across line breaks. */
const section = (title: string) => rawSection(title).replace(/\s+/g, ' ');

function stated(text: string, pattern: RegExp, what: string) {
    const match = pattern.exec(text);
    if (match === null)
        throw new Error(`docs/peer-protocol.md no longer states ${what} (${pattern})`);
    return match.slice(1);
}

const units: Record<string, number> = {'': 1, KiB: 1024, MiB: 1024 ** 2, s: 1000, min: 60_000, h: 3_600_000};

/** "1,000", "256 KiB", "4 MiB", "30 s", "3 min", "24 h" (times as milliseconds). */
function quantity(text: string) {
    const match = /^([\d,.]+)\s*(KiB|MiB|s|min|h)?$/.exec(text.trim());
    if (match === null)
        throw new Error(`not a quantity: "${text}"`);
    return Number(match[1]!.replaceAll(',', '')) * units[match[2] ?? '']!;
}

/** "20/s, burst 100", "8 MiB/s, burst 16 MiB". */
function rate(text: string) {
    const [perSecond, burst] = stated(text, /^(.+)\/s, burst (.+)$/, `a rate in "${text}"`);
    return {perSecond: quantity(perSecond!), burst: quantity(burst!)};
}

const sustained = ({perSecond, burst}: RateLimit) => ({perSecond, burst});

/** "Limits": label → value. */
const limits = new Map(rawSection('Limits').split('\n').filter((line) => line.startsWith('| ')).map((line) => {
    const [label, value] = line.split('|').slice(1).map((cell) => cell.trim());
    return [label!, value!] as const;
}));

function limit(label: string) {
    const value = limits.get(label);
    if (value === undefined)
        throw new Error(`docs/peer-protocol.md's "Limits" has no row "${label}"`);
    return value;
}

test('the limits table states each channel\'s frame bounds', (t) => {
    t.is(quantity(limit('protocol version')), PROTOCOL_VERSION);
    t.is(quantity(limit('control frame, hello included')), CONTROL_CHANNEL.handshake!.maxBytes);
    t.is(quantity(limit('control frame, hello included')), CONTROL_CHANNEL.messages.control.maxBytes);
    t.deepEqual(stated(limit('hello `software` / `network`'), /^≤ (\d+) \/ ≤ (\d+) chars$/, 'the hello\'s bounds').map(Number),
        [helloSchema.shape.software.maxLength, helloSchema.shape.network.maxLength]);
    t.is(quantity(limit('outstanding pings')), MAX_OUTSTANDING_PINGS);
    t.is(quantity(limit('jobs frame')), JOBS_CHANNEL.messages.job.maxBytes);
    t.deepEqual(stated(limit('`text` frame'), /^1–([\d,]+) tokens, ≤ ([\d,]+) chars$/, 'the text frame\'s bounds').map(quantity),
        [MAX_TEXT_FRAME_TOKENS, MAX_TEXT_FRAME_CHARS]);
    t.is(quantity(limit('send backlog per peer')), jobsProtocolDefaults.maxSendBacklogBytes);
    t.is(quantity(limit('shard fetch frame')), SHARD_CHANNEL.messages.fetch.maxBytes);
    const [control, data] = limit('shard control frame / data frame payload').split(' / ').map(quantity);
    t.is(control, SHARD_CHANNEL.messages.control.maxBytes);
    t.is(data, MAX_SHARD_DATA_BYTES);
    for (const message of [SHARD_CHANNEL.messages.toHost, SHARD_CHANNEL.messages.toCoordinator])
        t.is(message.maxBytes, DATA_HEADER_BYTES + MAX_SHARD_DATA_BYTES);
    t.is(quantity(limit('model gossip frame')), MODEL_GOSSIP_CHANNEL.messages.models.maxBytes);
    t.deepEqual(limit('models / providers per gossip frame').split(' / ').map(quantity), [MAX_GOSSIP_ENTRIES, MAX_GOSSIP_PROVIDERS]);
});

test('the limits table states each channel\'s rates', (t) => {
    t.deepEqual(rate(limit('control frames per peer')), sustained(CONTROL_CHANNEL.rates.frames));
    t.deepEqual(rate(limit('job frames per peer, any kind')), sustained(JOBS_CHANNEL.rates.frames));
    t.deepEqual(rate(limit('job bytes per peer')), sustained(JOBS_CHANNEL.rates.bytes));
    t.deepEqual(rate(limit('job submissions per peer')), sustained(JOBS_CHANNEL.rates.submissions));
    t.deepEqual(rate(limit('shard control frames per peer')), sustained(SHARD_CHANNEL.rates.controlFrames));
    t.deepEqual(rate(limit('shard fetch frames per peer')), sustained(SHARD_CHANNEL.rates.fetchFrames));
    t.is(shardProtocolDefaults.controlFramesPerSecond, SHARD_CHANNEL.rates.controlFrames.perSecond);
    t.deepEqual(rate(limit('model gossip frames per peer')), sustained(MODEL_GOSSIP_CHANNEL.rates.frames));
});

test('the limits table states the swarm\'s and the shard protocol\'s timings and counts', (t) => {
    t.deepEqual(limit('ping interval / silence timeout / hello timeout').split(' / ').map(quantity),
        [swarmTimingDefaults.pingIntervalMs, swarmTimingDefaults.peerSilenceTimeoutMs, swarmTimingDefaults.helloTimeoutMs]);
    t.is(quantity(stated(limit('capability updates'), /^≤ 1 per (.+)$/, 'the capability updates\' interval')[0]!),
        swarmTimingDefaults.capabilityUpdateMinIntervalMs);
    t.deepEqual(limit('shard sessions per peer / streams per session').split(' / ').map(quantity),
        [shardProtocolDefaults.maxSessionsPerPeer, shardProtocolDefaults.maxStreamsPerSession]);
    t.is(quantity(limit('wait for a host\'s `ready`')), shardProtocolDefaults.openTimeoutMs);
    const [interval, jitter, fanout] = stated(limit('model gossip round / fan-out'), /^(.+), ± (\d+)% \/ (\d+) peers, and one frame to each new peer$/,
        'the gossip round');
    t.deepEqual([quantity(interval!), Number(jitter) / 100, Number(fanout)],
        [modelGossipProtocolDefaults.intervalMs, modelGossipProtocolDefaults.jitter, modelGossipProtocolDefaults.fanout]);
    t.deepEqual(limit('model gossip table: models / providers counted per model / provider TTL / age added per hop').split(' / ').map(quantity),
        [modelGossipDefaults.maxEntries, modelGossipDefaults.maxTrackedProviders, modelGossipDefaults.ttlMs, modelGossipDefaults.hopAgeMs]);
});

test('the control channel\'s section states its protocol, bound and rate', (t) => {
    const text = section('Control channel');
    t.is(stated(text, /^ ## Control channel Channel `([^`]+)`/, 'the control channel\'s name')[0], CONTROL_CHANNEL.protocol);
    t.is(quantity(stated(text, /frames over ([\d,]+ KiB)/, 'the control frame\'s bound')[0]!), CONTROL_CHANNEL.messages.control.maxBytes);
    const [perSecond, burst] = stated(text, /Limits: ([\d,]+) frames\/s sustained, burst ([\d,]+)/, 'the control channel\'s rate');
    t.deepEqual({perSecond: quantity(perSecond!), burst: quantity(burst!)}, sustained(CONTROL_CHANNEL.rates.frames));
    t.deepEqual(CONTROL_CHANNEL.handshake!.rates, CONTROL_CHANNEL.messages.control.rates, 'hello and messages share one bucket');
});

test('the jobs channel\'s section states its protocol, bound and rates', (t) => {
    const text = section('Jobs channel');
    const {rates} = JOBS_CHANNEL;
    t.is(stated(text, /^ ## Jobs channel Channel `([^`]+)`/, 'the jobs channel\'s name')[0], JOBS_CHANNEL.protocol);
    t.is(quantity(stated(text, /up to ([\d,]+ MiB)/, 'the jobs frame\'s bound')[0]!), JOBS_CHANNEL.messages.job.maxBytes);
    const [frames, frameBurst, bytes, byteBurst] = stated(text,
        /checked before it is decoded: ([\d,]+) frames\/s with a burst of ([\d,]+)[^,]*, and ([\d,]+ [KM]iB)\/s with a burst of ([\d,]+ [KM]iB)/,
        'the jobs channel\'s frame and byte rates').map(quantity);
    t.deepEqual({perSecond: frames, burst: frameBurst}, sustained(rates.frames));
    t.deepEqual({perSecond: bytes, burst: byteBurst}, sustained(rates.bytes));
    t.is(rates.bytes.unit, 'byte');
    const [types, perSecond, burst] = stated(text, /((?:`\w+`(?:, | and ))+`\w+`) frames are also submissions, limited to ([\d,]+)\/s with a burst of ([\d,]+)/,
        'the jobs channel\'s submissions');
    t.deepEqual(types!.match(/\w+/g)!.filter((word) => word !== 'and').sort(), [...rates.submissions.types!].sort());
    t.deepEqual({perSecond: quantity(perSecond!), burst: quantity(burst!)}, sustained(rates.submissions));
    t.is(quantity(stated(text, /over ([\d,]+ MiB) the send fails as `backlogged`/, 'the send backlog')[0]!), jobsProtocolDefaults.maxSendBacklogBytes);
});

test('the shard channel\'s section states its protocol, messages in wire order, bounds and rates', (t) => {
    const text = section('Shard channel');
    t.is(stated(text, /^ ## Shard channel Channel `([^`]+)`/, 'the shard channel\'s name')[0], SHARD_CHANNEL.protocol);
    const names = {'control': 'control', 'data to the host': 'toHost', 'data to the coordinator': 'toCoordinator', 'fetch': 'fetch'};
    const order = Object.keys(SHARD_CHANNEL.messages);
    for (const [name, key] of Object.entries(names))
        t.is(Number(stated(text, new RegExp(`\\| (\\d), ${name} \\|`), `the shard channel's ${name} message`)[0]), order.indexOf(key), name);
    t.is(order.length, Object.keys(names).length);
    t.is(quantity(stated(text, /\| 0, control \| [^|]*≤ ([\d,]+ KiB) \|/, 'the shard control frame\'s bound')[0]!), SHARD_CHANNEL.messages.control.maxBytes);
    const [header, payload] = stated(text, /a (\d+)-byte stream id \(big-endian\), then 1–([\d,]+ KiB)/, 'the shard data frame\'s layout');
    t.is(Number(header), DATA_HEADER_BYTES);
    t.is(quantity(payload!), MAX_SHARD_DATA_BYTES);
    const [perSecond, burst] = stated(text, /more than ([\d,]+) control frames per second \(burst ([\d,]+)\)/, 'the shard control rate');
    t.deepEqual({perSecond: quantity(perSecond!), burst: quantity(burst!)}, sustained(SHARD_CHANNEL.rates.controlFrames));
    t.deepEqual([SHARD_CHANNEL.messages.toHost.rates, SHARD_CHANNEL.messages.toCoordinator.rates], [[], []], 'shard data passes no rate limit');
    t.regex(text, /Shard data does not pass the jobs channel's rate limiters/);
    const [sessions, streams] = stated(text, /A host allows (\d+) sessions per peer and (\d+) streams per session/, 'the host\'s session limits');
    t.deepEqual([Number(sessions), Number(streams)], [shardProtocolDefaults.maxSessionsPerPeer, shardProtocolDefaults.maxStreamsPerSession]);
    t.is(quantity(stated(text, /waits (\d+ s) for `ready`/, 'the wait for ready')[0]!), shardProtocolDefaults.openTimeoutMs);
});

test('the model gossip channel\'s section states its protocol, bounds, rate, round and table', (t) => {
    const text = section('Model gossip channel');
    t.is(stated(text, /^ ## Model gossip channel Channel `([^`]+)`/, 'the gossip channel\'s name')[0], MODEL_GOSSIP_CHANNEL.protocol);
    t.deepEqual(Object.keys(MODEL_GOSSIP_CHANNEL.messages), ['models']);
    t.is(quantity(stated(text, /up to ([\d,]+ KiB)/, 'the gossip frame\'s bound')[0]!), MODEL_GOSSIP_CHANNEL.messages.models.maxBytes);
    const [entries, providers] = stated(text, /at most (\d+) models, each .* `providers`: 1–(\d+) of `\{id, ageMs\}`/, 'a frame\'s models and providers');
    t.deepEqual([Number(entries), Number(providers)], [MAX_GOSSIP_ENTRIES, MAX_GOSSIP_PROVIDERS]);
    t.is(quantity(stated(text, /in whole milliseconds, 0 to (\d+ h)/, 'the largest age')[0]!), MAX_GOSSIP_AGE_MS);
    const [fanout, interval, jitter] = stated(text, /pushes a frame of it to (\d+) random connected peers every ([\d,]+ s) \(each round (\d+)% longer or shorter/,
        'the gossip round');
    t.deepEqual([Number(fanout), quantity(interval!), Number(jitter) / 100],
        [modelGossipProtocolDefaults.fanout, modelGossipProtocolDefaults.intervalMs, modelGossipProtocolDefaults.jitter]);
    t.is(quantity(stated(text, /by its own clock, ([\d,]+ s) older than it was told/, 'the age added per hop')[0]!), modelGossipDefaults.hopAgeMs);
    t.is(quantity(stated(text, /A provider not heard of for (\d+ min) is dropped/, 'the TTL')[0]!), modelGossipDefaults.ttlMs);
    const [perSecond, burst] = stated(text, /more than (\d+) frame per second \(burst (\d+)\), is a violation/, 'the gossip rate');
    t.deepEqual({perSecond: quantity(perSecond!), burst: quantity(burst!)}, sustained(MODEL_GOSSIP_CHANNEL.rates.frames));
    t.deepEqual(stated(text,
        /counts at most (\d+) providers of a model and names (\d+), holds at most ([\d,]+) models .* at most by (\d+) \(itself and \d+ it names/,
        'the table\'s bounds').map(quantity),
        [modelGossipDefaults.maxTrackedProviders, modelGossipDefaults.providersPerEntry, modelGossipDefaults.maxEntries, modelGossipDefaults.providersPerEntry + 1]);
});

test('"Adding a protocol" names every protocol and no plan that has happened', (t) => {
    const text = section('Adding a protocol');
    for (const name of ['JobsProtocol', 'ShardProtocol', 'ModelGossipProtocol', 'NodeLedger', 'defineChannel', 'BoundedChannel'])
        t.regex(text, new RegExp(`\`[^\`]*\\b${name}\\b`), name);
    t.notRegex(text, /planned/);
});
