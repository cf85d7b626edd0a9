import {setTimeout as sleep} from 'node:timers/promises';
import c from 'compact-encoding';
import HyperDHT from 'hyperdht';
import type {Testnet} from 'hyperdht/testnet.js';
import Hyperswarm, {type NoiseSecretStream} from 'hyperswarm';
import Protomux from 'protomux';
import test from 'ava';
import {Prng} from '../engine/demo/prng.js';
import {JOBS_PROTOCOL, type JobMessage} from '../inference/remote/jobs/job-messages.js';
import {networkTopic} from '../swarm/network-topic.js';
import {encodeFrame} from '../swarm/channel/frame-codec.js';
import {CONTROL_PROTOCOL, PROTOCOL_VERSION} from '../swarm/protocol/control-messages.js';
import {capabilitiesFixture} from '../harness/capabilities-fixture.js';
import {startDaemon, waitFor, type DaemonHandle} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {fetchStatus} from '../harness/node-status.js';
import {peersOf, startTestnet} from '../harness/swarm-fixture.js';

/**
 * Seeded hostile input, over HTTP and from a peer: whatever arrives, the node and its engine stay up (the engine's
 * pid never changes), every refusal is a JSON error object with a status that fits it, and a correct request
 * afterwards gets the same greedy text as before.
 */

const SEED = 20261125;
const HTTP_CASES = 300;
const PEER_JOBS = 150;

let testnet: Testnet;
let daemon: DaemonHandle;
let cleanup: () => Promise<void>;
let enginePid: number;
let reference: string;

const referenceRequest = {model: 'demo', prompt: 'The steady doge', max_tokens: 24, temperature: 0};

async function greedyText() {
    const response = await fetch(`${daemon.baseUrl}/completions`, {
        method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify(referenceRequest)
    });
    return ((await response.json()) as {choices: {text: string}[]}).choices[0]!.text;
}

test.before(async () => {
    ({testnet} = await startTestnet());
    const fixture = await createDataDirWithDemoModel({layers: 2, width: 64, headCount: 4, feedForwardLength: 64});
    cleanup = fixture.cleanup;
    daemon = await startDaemon(['--model', 'demo', '--data-dir', fixture.dataDir, '--threads', '1', '--context-size', '1024',
        '--bootstrap', testnet.bootstrap.map(({host, port}) => `${host}:${port}`).join(',')]);
    enginePid = (await fetchStatus(daemon, '/api/node')).engine.pid!;
    reference = await greedyText();
});

test.after.always(async () => {
    await daemon?.stop();
    await cleanup?.();
    await testnet?.destroy();
});

/** Values of every JSON kind, hostile ones often. */
function hostileValue(random: Prng, depth = 0): unknown {
    const pick = Math.floor(random.next() * 16);
    switch (pick) {
        case 0: return null;
        case 1: return random.next() < 0.5;
        case 2: return Math.floor(random.next() * 2 ** 53) * (random.next() < 0.5 ? -1 : 1);
        case 3: return [1e308, -1e308, 5e-324, -0, 0.5, 2 ** 31, 2 ** 32 + 1][Math.floor(random.next() * 7)];
        case 4: return '';
        case 5: return 'x'.repeat(Math.floor(random.next() * 5000));
        case 6: return '\u0000\ud800\uffff\u202e<script>%s%n{{}}';
        case 7: return '9'.repeat(400);
        case 8: return [];
        case 9: return {};
        case 10: return depth < 3 ? Array.from({length: 1 + Math.floor(random.next() * 4)}, () => hostileValue(random, depth + 1)) : 'deep';
        case 11: return JSON.parse('{"__proto__": {"polluted": true}, "a": 1}');
        case 12: return {constructor: {prototype: {polluted: true}}};
        case 13: return JSON.parse('['.repeat(2000) + ']'.repeat(2000));
        case 14: return {type: 'json_schema', json_schema: {name: 'x', schema: JSON.parse('{"a":'.repeat(300) + '1' + '}'.repeat(300))}};
        default: return 'demo';
    }
}

const CHAT = '/v1/chat/completions';
const COMPLETIONS = '/v1/completions';
const EMBEDDINGS = '/v1/embeddings';
const valid: Record<string, Record<string, unknown>> = {
    [CHAT]: {model: 'demo', messages: [{role: 'user', content: 'hi'}], max_tokens: 2, temperature: 0},
    [COMPLETIONS]: {model: 'demo', prompt: 'hi', max_tokens: 2, temperature: 0},
    [EMBEDDINGS]: {model: 'demo', input: 'hi'}
};
const fields = ['model', 'messages', 'prompt', 'input', 'temperature', 'top_p', 'top_k', 'min_p', 'seed', 'stop', 'max_tokens',
    'presence_penalty', 'frequency_penalty', 'logit_bias', 'response_format', 'stream', 'stream_options', 'n', 'logprobs', 'tools',
    'encoding_format', 'dimensions', 'user', 'echo', 'suffix', 'best_of', 'max_completion_tokens'];

/** One hostile HTTP request: a valid body with fields deleted or replaced, raw garbage, or a broken encoding. */
function hostileRequest(random: Prng): {path: string, body: string | Buffer, headers: Record<string, string>} {
    const path = [CHAT, COMPLETIONS, EMBEDDINGS][Math.floor(random.next() * 3)]!;
    const headers: Record<string, string> = {'content-type': 'application/json'};
    const kind = random.next();
    if (kind < 0.1)
        return {path, headers, body: Buffer.from(Array.from({length: Math.floor(random.next() * 300)}, () => Math.floor(random.next() * 256)))};
    if (kind < 0.15)
        return {path, headers: {...headers, 'content-encoding': ['gzip', 'deflate', 'br', 'x-evil'][Math.floor(random.next() * 4)]!}, body: JSON.stringify(valid[path])};
    const body: Record<string, unknown> = {...valid[path]};
    const mutations = 1 + Math.floor(random.next() * 3);
    for (let mutation = 0; mutation < mutations; mutation++) {
        const field = fields[Math.floor(random.next() * fields.length)]!;
        if (random.next() < 0.2)
            delete body[field];
        else
            body[field] = hostileValue(random);
    }
    // A mutation may make a request valid; it must never make one long to serve.
    if (typeof body.max_tokens === 'number' && body.max_tokens > 8)
        body.max_tokens = 8;
    if (typeof body.max_completion_tokens === 'number' && body.max_completion_tokens > 8)
        body.max_completion_tokens = 8;
    const text = JSON.stringify(body);
    return {path, headers, body: kind < 0.2 ? text.slice(0, Math.floor(random.next() * text.length)) : text};
}

/** The OpenAI error type each status comes with. */
const typeOfStatus: Record<number, string> = {
    400: 'invalid_request_error', 402: 'invalid_request_error', 404: 'invalid_request_error', 413: 'invalid_request_error',
    415: 'invalid_request_error', 429: 'rate_limit_error'
};

test.serial(`${HTTP_CASES} seeded hostile HTTP requests: JSON errors with fitting statuses, the engine never restarts`, async (t) => {
    const random = new Prng(SEED);
    const statuses = new Map<number, number>();
    for (let index = 0; index < HTTP_CASES; index++) {
        const request = hostileRequest(random);
        const response = await fetch(daemon.origin + request.path, {method: 'POST', headers: request.headers, body: request.body});
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
        const text = await response.text();
        const what = `case ${index} (${request.path} ${String(request.body).slice(0, 120)}): ${response.status} ${text.slice(0, 200)}`;
        if (response.status === 200)
            continue; // a mutation that happened to be valid
        t.true(response.status in typeOfStatus, what);
        const body = JSON.parse(text) as {error: {message: unknown, type: unknown, param: unknown, code: unknown}};
        t.is(typeof body.error.message, 'string', what);
        t.is(body.error.type, typeOfStatus[response.status], what);
        t.true('param' in body.error && 'code' in body.error, what);
    }
    t.log(Object.fromEntries(statuses));
    t.true((statuses.get(400) ?? 0) > HTTP_CASES / 2, 'most cases are refused');
    const node = await fetchStatus(daemon, '/api/node');
    t.is(node.engine.pid, enginePid);
    t.is(node.engine.restarts, 0);
    t.is((await fetch(`${daemon.origin}/health`)).status, 200);
    t.is(await greedyText(), reference);
});

/** A peer in the test process that opens the control and jobs channels to the daemon and hands `send` to `act`. */
async function hostileRequester(act: (send: (message: JobMessage) => void, replies: JobMessage[]) => void) {
    const swarm = new Hyperswarm({dht: new HyperDHT({bootstrap: testnet.bootstrap, firewalled: false})});
    const replies: JobMessage[] = [];
    const daemonId = (await fetchStatus(daemon, '/api/node')).id;
    swarm.on('connection', (stream: NoiseSecretStream) => {
        stream.on('error', () => undefined);
        if (stream.remotePublicKey.toString('hex') !== daemonId)
            return stream.destroy();
        const mux = Protomux.from(stream);
        const control = mux.createChannel({protocol: CONTROL_PROTOCOL, handshake: c.raw})!;
        control.addMessage({encoding: c.raw});
        control.open(encodeFrame({protocol: PROTOCOL_VERSION, software: '0.1.0', network: 'public', proof: null, capabilities: capabilitiesFixture()}));
        const jobs = mux.createChannel({protocol: JOBS_PROTOCOL, onopen: () => act((message) => frames.send(encodeFrame(message)), replies)})!;
        const frames = jobs.addMessage({encoding: c.raw, onmessage: (frame) => {
            replies.push(JSON.parse(Buffer.from(frame).toString('utf8')) as JobMessage);
        }});
        jobs.open();
    });
    swarm.join(networkTopic({name: 'public'}), {server: false, client: true});
    return {id: swarm.keyPair.publicKey.toString('hex'), replies, destroy: () => swarm.destroy()};
}

/** A generation job that is well-formed on the wire, with contents a hostile peer would choose. */
function hostileJob(random: Prng, index: number): JobMessage {
    const sampling: Record<string, unknown> = {temperature: 0, stop: [], maxTokens: 2, responseFormat: {type: 'text'}};
    const request: Record<string, unknown> = {kind: 'completion', model: 'demo', prompt: 'hi', sampling};
    const pick = Math.floor(random.next() * 8);
    if (pick === 0)
        request.continuation = {tokens: Array.from({length: 4}, () => Math.floor(random.next() * 2 ** 31))}; // ids outside the vocabulary
    else if (pick === 1)
        sampling.logitBias = {[String(Math.floor(random.next() * 2 ** 31))]: -100};
    else if (pick === 2)
        sampling.responseFormat = {type: 'json_schema', schema: JSON.parse('{"type":"object","properties":{"a":'.repeat(80) + '{"type":"string"}' + '}}'.repeat(80))};
    else if (pick === 3)
        sampling.responseFormat = {type: 'json_schema', schema: {$defs: {loop: {$ref: '#/$defs/loop'}}, $ref: '#/$defs/loop'}};
    else if (pick === 4)
        request.prompt = 'wow such '.repeat(2000); // longer than the context
    else if (pick === 5)
        sampling.maxTokens = 1_000_000;
    else if (pick === 6)
        request.model = `no-such-model-${Math.floor(random.next() * 1e9)}`;
    else
        sampling.stop = ['\u0000', '\ud800'];
    return {type: 'generate', jobId: (index + 1).toString(16).padStart(32, '0'), request} as unknown as JobMessage;
}

test.serial(`${PEER_JOBS} seeded hostile jobs from a peer: each refused or answered, the engine never restarts`, async (t) => {
    const random = new Prng(SEED + 1);
    const jobs = Array.from({length: PEER_JOBS}, (_, index) => hostileJob(random, index));
    // Sent at a pace the jobs channel allows (20 new jobs a second): the point is what each job does, not a flood.
    const peer = await hostileRequester(async (send) => {
        for (const job of jobs) {
            send(job);
            await sleep(60);
        }
    });
    t.teardown(() => peer.destroy());
    const answered = () => new Set(peer.replies.filter((reply) => reply.type === 'failed' || reply.type === 'generated').map((reply) => reply.jobId));
    await waitFor(() => answered().size === PEER_JOBS, 60_000, 100);
    const codes = peer.replies.flatMap((reply) => reply.type === 'failed' ? [reply.error.code] : []);
    t.log({answered: answered().size, codes: [...new Set(codes)]});
    t.true(codes.every((code) => ['invalid_request', 'context_length_exceeded', 'limit', 'model_unavailable', 'busy'].includes(code)), codes.join());
    t.false((await peersOf(daemon)).banned.some((ban) => ban.peerId === peer.id), 'well-formed jobs are no violation');
    const node = await fetchStatus(daemon, '/api/node');
    t.is(node.engine.pid, enginePid);
    t.is(node.engine.restarts, 0);
    t.is((await fetch(`${daemon.origin}/health`)).status, 200);
    t.is(await greedyText(), reference);
});
