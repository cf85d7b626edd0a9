import {randomBytes} from 'node:crypto';
import {mkdtemp, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import test, {type ExecutionContext} from 'ava';
import c from 'compact-encoding';
import HyperDHT from 'hyperdht';
import type {Testnet} from 'hyperdht/testnet.js';
import Hyperswarm, {type NoiseSecretStream} from 'hyperswarm';
import Protomux from 'protomux';
import {JOBS_PROTOCOL, type JobMessage} from '../inference/remote/jobs/job-messages.js';
import {networkTopic} from '../swarm/network-topic.js';
import {encodeFrame, MAX_FRAME_BYTES} from '../swarm/channel/frame-codec.js';
import {CONTROL_PROTOCOL, PROTOCOL_VERSION} from '../swarm/protocol/control-messages.js';
import {capabilitiesFixture} from '../harness/capabilities-fixture.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {waitFor, type DaemonHandle} from '../harness/cli-process.js';
import {nodeIdOf, peersOf, startSwarmDaemon, startTestnet, waitForPeers} from '../harness/swarm-fixture.js';

let testnet: Testnet;
let bootstrap: string;
let target: DaemonHandle;
let witness: DaemonHandle;
let targetId: string;
let witnessId: string;
const cleanups: (() => Promise<unknown>)[] = [];

async function daemon(extra: string[] = []) {
    const dataDir = await mkdtemp(join(tmpdir(), 'strongdoge-hostile-'));
    const handle = await startSwarmDaemon(bootstrap, dataDir, extra);
    cleanups.push(async () => {
        await handle.stop();
        await rm(dataDir, {recursive: true, force: true});
    });
    return handle;
}

test.before(async () => {
    ({testnet, bootstrap} = await startTestnet());
    target = await daemon();
    witness = await daemon();
    targetId = await nodeIdOf(target);
    witnessId = await nodeIdOf(witness);
    await waitForPeers(target, [witnessId]);
});

test.after.always(async () => {
    for (const cleanup of cleanups.reverse())
        await cleanup().catch(() => undefined);
    await testnet?.destroy();
});

/** A raw Hyperswarm peer in the test process that connects to the target and then does `attack` to it. */
async function hostilePeer(topic: Buffer, attack: (stream: NoiseSecretStream) => void, victimId = targetId) {
    const swarm = new Hyperswarm({dht: new HyperDHT({bootstrap: testnet.bootstrap, firewalled: false})});
    cleanups.push(() => swarm.destroy());
    const connections: NoiseSecretStream[] = [];
    swarm.on('connection', (stream) => {
        stream.on('error', () => undefined);
        if (stream.remotePublicKey.toString('hex') !== victimId) {
            stream.destroy();
            return;
        }
        connections.push(stream);
        attack(stream);
    });
    swarm.join(topic, {server: false, client: true});
    await waitFor(() => connections.length > 0, 20_000);
    return {id: swarm.keyPair.publicKey.toString('hex'), connections};
}

function openControlChannel(stream: NoiseSecretStream, onOpen: (send: (frame: Buffer) => void) => void, hello = encodeFrame({
    protocol: PROTOCOL_VERSION, software: '0.1.0', network: 'public', proof: null, capabilities: capabilitiesFixture()
})) {
    const channel = Protomux.from(stream).createChannel({protocol: CONTROL_PROTOCOL, handshake: c.raw, onopen: () => onOpen((frame) => message.send(frame))})!;
    const message = channel.addMessage({encoding: c.raw});
    channel.open(hello);
}

async function expectBanned(t: ExecutionContext, attackerId: string, reason: RegExp) {
    await waitFor(async () => (await peersOf(target)).banned.some((ban) => ban.peerId === attackerId), 20_000);
    const {peers, banned} = await peersOf(target);
    t.false(peers.some((peer) => peer.id === attackerId), 'the attacker is not a peer');
    t.true(reason.test(banned.find((ban) => ban.peerId === attackerId)!.reason), banned.find((ban) => ban.peerId === attackerId)!.reason);
    t.true(peers.some((peer) => peer.id === witnessId), 'the honest peer stays connected');
    t.is((await fetch(`${target.origin}/health`)).status, 200);
    t.is(target.process.exitCode, null);
}

test.serial('thousands of random, truncated and oversized frames get the sender banned', async (t) => {
    const attacker = await hostilePeer(networkTopic({name: 'public'}), (stream) => openControlChannel(stream, (send) => {
        for (let i = 0; i < 3000; i++) {
            const kind = i % 3;
            send(kind === 0 ? randomBytes(1 + (i % 200)) : kind === 1 ? encodeFrame({type: 'ping', nonce: i}).subarray(0, 7) : Buffer.alloc(MAX_FRAME_BYTES + 10, 0x7b));
        }
    }));
    await expectBanned(t, attacker.id, /not JSON|malformed|exceeds|flood/);
    await waitFor(() => attacker.connections.every((stream) => stream.destroyed), 10_000);
});

test.serial('a flood of valid pings gets the sender banned', async (t) => {
    const attacker = await hostilePeer(networkTopic({name: 'public'}), (stream) => openControlChannel(stream, (send) => {
        for (let i = 0; i < 2000; i++)
            send(encodeFrame({type: 'ping', nonce: i}));
    }));
    await expectBanned(t, attacker.id, /flood/);
});

test.serial('raw bytes that are not protomux at all get the sender banned', async (t) => {
    // Protomux drops a message addressed to a channel it does not know, which is what most random bytes decode as;
    // each message here starts with 0xff and eight 0xff bytes, a channel id no protomux can decode, so every one of
    // them is malformed (with plain random bytes about half the connections went unpunished, a flaky test).
    const attacker = await hostilePeer(networkTopic({name: 'public'}), (stream) => {
        for (let i = 0; i < 200; i++)
            stream.write(Buffer.concat([Buffer.alloc(9, 0xff), randomBytes(503)]));
    });
    await expectBanned(t, attacker.id, /stream error|not JSON|malformed/);
});

test.serial('a peer on a private network topic without the secret is banned, never listed', async (t) => {
    const secret = 'members only please';
    const privateNode = await daemon(['--network', 'club', '--network-secret', secret]);
    const privateId = await nodeIdOf(privateNode);
    const previousTarget = targetId;
    targetId = privateId;
    t.teardown(() => {
        targetId = previousTarget;
    });
    // It found the topic (say, the secret's hash leaked) but cannot prove the secret.
    const attacker = await hostilePeer(networkTopic({name: 'club', secret}), (stream) => openControlChannel(stream, () => undefined, encodeFrame({
        protocol: PROTOCOL_VERSION, software: '0.1.0', network: 'club', proof: 'ab'.repeat(32), capabilities: capabilitiesFixture()
    })));
    await waitFor(async () => (await peersOf(privateNode)).banned.some((ban) => ban.peerId === attacker.id), 20_000);
    const {peers, banned} = await peersOf(privateNode);
    t.deepEqual(peers, []);
    t.regex(banned[0]!.reason, /does not know the network secret/);
});

test.serial('a peer speaking another protocol version is disconnected with a clear log line, not banned', async (t) => {
    const attacker = await hostilePeer(networkTopic({name: 'public'}), (stream) => openControlChannel(stream, () => undefined, encodeFrame({
        protocol: PROTOCOL_VERSION + 1, software: '9.0.0', network: 'public', proof: null, capabilities: capabilitiesFixture()
    })));
    await waitFor(() => target.logs.some((record) => String(record.msg).includes(`incompatible peer: peer speaks protocol ${PROTOCOL_VERSION + 1}`)), 20_000);
    const {peers, banned} = await peersOf(target);
    t.false(peers.some((peer) => peer.id === attacker.id));
    t.false(banned.some((ban) => ban.peerId === attacker.id));
});

/** A hostile peer that announces `model` as loaded and answers jobs on the jobs channel with `reply`. */
function hostileProvider(model: string, reply: (message: JobMessage, send: (message: JobMessage) => void) => void,
    announced: {sha256: string | null, sizeBytes: number} = {sha256: null, sizeBytes: 1000}) {
    return (stream: NoiseSecretStream) => {
        openControlChannel(stream, () => undefined, encodeFrame({
            protocol: PROTOCOL_VERSION, software: '0.1.0', network: 'public', proof: null, capabilities: capabilitiesFixture({
                models: [{id: model, ...announced, quantization: 'F16', layers: 1, layerBytes: [announced.sizeBytes], loaded: true}]
            })
        }));
        const channel = Protomux.from(stream).createChannel({protocol: JOBS_PROTOCOL})!;
        const message = channel.addMessage({encoding: c.raw, onmessage: (frame) => reply(JSON.parse(Buffer.from(frame).toString('utf8')) as JobMessage,
            (answer) => message.send(encodeFrame(answer)))});
        channel.open();
    };
}

async function untilPeer(attackerId: string) {
    await waitFor(async () => (await peersOf(target)).peers.some((peer) => peer.id === attackerId), 20_000);
}

test.serial('a serving peer that streams far more than max_tokens is cut off at the limit, dropped and banned', async (t) => {
    const attacker = await hostilePeer(networkTopic({name: 'public'}), hostileProvider('shady', (message, send) => {
        if (message.type !== 'generate')
            return;
        for (let chunk = 0; chunk < 3001; chunk++)
            send({type: 'text', jobId: message.jobId, text: `chunk ${chunk} ${'x'.repeat(200)}`, tokens: [chunk % 500]});
    }));
    await untilPeer(attacker.id);
    const response = await fetch(`${target.baseUrl}/completions`, {
        method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify({model: 'shady', prompt: 'hello', max_tokens: 4, stream: true})
    });
    const body = await response.text();
    const chunks = body.split('\n\n').filter((event) => event.startsWith('data: {"id"'));
    t.true(chunks.length <= 4, `${chunks.length} chunks relayed`);
    t.true(body.length < 10_000, `${body.length} bytes relayed`);
    t.regex(body, /"error":\{"message":"no peer could complete the request/);
    await expectBanned(t, attacker.id, /more than the 4 token/);
});

test.serial('a serving peer whose result holds far more text than its tokens can stand for is dropped and banned', async (t) => {
    const attacker = await hostilePeer(networkTopic({name: 'public'}), hostileProvider('padded', (message, send) => {
        if (message.type === 'generate')
            send({type: 'generated', jobId: message.jobId, result: {text: 'x'.repeat(100_000), finishReason: 'stop', usage: {promptTokens: 2, completionTokens: 1},
                timings: {promptMs: 1, generationMs: 1, promptTokensPerSecond: 1, generationTokensPerSecond: 1}}});
    }));
    await untilPeer(attacker.id);
    const response = await fetch(`${target.baseUrl}/completions`, {
        method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify({model: 'padded', prompt: 'hello', max_tokens: 4})
    });
    t.is(response.status, 503);
    t.false((await response.text()).includes('xxxxxxxxxx'));
    await expectBanned(t, attacker.id, /result of 100000 bytes of text for 1 token/);
});

test.serial('a serving peer that reports more tokens than it streamed is banned and no receipt is signed; one that announces a huge model gets a receipt of what arrived, at the minimum weight', async (t) => {
    const timings = {promptMs: 1, generationMs: 1, promptTokensPerSecond: 1, generationTokensPerSecond: 1};
    let receiptsAsked = 0;
    const inflating = await hostilePeer(networkTopic({name: 'public'}), hostileProvider('inflating', (message, send) => {
        if (message.type === 'receipt')
            receiptsAsked++;
        if (message.type !== 'generate')
            return;
        for (let token = 0; token < 3; token++)
            send({type: 'text', jobId: message.jobId, text: ' wow', tokens: [token + 5]});
        send({type: 'generated', jobId: message.jobId, result: {text: ' wow wow wow', finishReason: 'length', usage: {promptTokens: 2, completionTokens: 2 ** 20}, timings}});
    }));
    await untilPeer(inflating.id);
    const inflated = await fetch(`${target.baseUrl}/completions`, {
        method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify({model: 'inflating', prompt: 'hello'})
    });
    t.is(inflated.status, 503);
    await expectBanned(t, inflating.id, /reported 1048576 tokens after sending 3/);
    t.is(receiptsAsked, 0, 'no receipt for a job whose provider lied');

    // An honest count of a model announced at 2^50 bytes: the receipt names the hash, and no size this node cannot vouch for.
    const receipts: JobMessage[] = [];
    const huge = await hostilePeer(networkTopic({name: 'public'}), hostileProvider('huge', (message, send) => {
        if (message.type === 'receipt')
            receipts.push(message);
        if (message.type !== 'generate')
            return;
        for (let token = 0; token < 3; token++)
            send({type: 'text', jobId: message.jobId, text: ' wow', tokens: [token + 5]});
        send({type: 'generated', jobId: message.jobId, result: {text: ' wow wow wow', finishReason: 'length', usage: {promptTokens: 2, completionTokens: 3}, timings}});
    }, {sha256: 'ab'.repeat(32), sizeBytes: 2 ** 50}));
    await untilPeer(huge.id);
    const served = await fetch(`${target.baseUrl}/completions`, {
        method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify({model: 'huge', prompt: 'hello', max_tokens: 3})
    });
    t.is(served.status, 200);
    await waitFor(() => receipts.length > 0, 10_000);
    const [first] = receipts;
    t.true(first?.type === 'receipt');
    t.like(first?.type === 'receipt' ? first.receipt.body : undefined, {completionTokens: 3, modelBytes: 0, modelSha256: 'ab'.repeat(32), provider: huge.id, requester: targetId});
});

test.serial('a requester that keeps back its receipts gets no more jobs from a serving daemon once it owes four; a job id it used before is refused', async (t) => {
    const fixture = await createDataDirWithDemoModel({layers: 1, width: 64, headCount: 4, feedForwardLength: 64});
    cleanups.push(fixture.cleanup);
    const provider = await startSwarmDaemon(bootstrap, fixture.dataDir, ['--model', 'demo']);
    cleanups.push(() => provider.stop());
    const providerId = await nodeIdOf(provider);
    const replies = new Map<string, JobMessage>();
    let submit: ((message: JobMessage) => void) | undefined;
    const requester = await hostilePeer(networkTopic({name: 'public'}), (stream) => {
        openControlChannel(stream, () => undefined);
        const channel = Protomux.from(stream).createChannel({protocol: JOBS_PROTOCOL})!;
        const message = channel.addMessage({encoding: c.raw, onmessage: (frame) => {
            const reply = JSON.parse(Buffer.from(frame).toString('utf8')) as JobMessage;
            if (reply.type === 'generated' || reply.type === 'failed')
                replies.set(reply.jobId, reply);
        }});
        channel.open();
        submit = (job) => message.send(encodeFrame(job));
    }, providerId);
    // Jobs go once the provider has read this peer's hello.
    await waitFor(async () => (await peersOf(provider)).peers.some((peer) => peer.id === requester.id), 20_000);
    const job = async (jobId: string) => {
        replies.delete(jobId);
        submit!({type: 'generate', jobId, request: {kind: 'completion', model: 'demo', prompt: 'hi', sampling: {temperature: 0, stop: [], maxTokens: 2, responseFormat: {type: 'text'}}}});
        await waitFor(() => replies.has(jobId), 30_000, 10);
        return replies.get(jobId)!;
    };
    for (let index = 0; index < 4; index++)
        t.is((await job(String(index).repeat(32))).type, 'generated');
    const again = await job('0'.repeat(32));
    t.true(again.type === 'failed' && /duplicate job id/.test(again.error.message), JSON.stringify(again));
    // Past the 10 s a receipt has to arrive, the four jobs are owed.
    await new Promise((resolve) => setTimeout(resolve, 10_500));
    const refused = await job('e'.repeat(32));
    t.true(refused.type === 'failed' && refused.error.code === 'limit' && /owes the receipts of 4 jobs/.test(refused.error.message), JSON.stringify(refused));
});

test.serial('a serving peer that claims a stop sequence the request did not ask for is dropped and banned', async (t) => {
    const attacker = await hostilePeer(networkTopic({name: 'public'}), hostileProvider('stopper', (message, send) => {
        if (message.type === 'generate')
            send({type: 'generated', jobId: message.jobId, result: {text: '', finishReason: 'stop', stopSequence: 'invented', usage: {promptTokens: 2, completionTokens: 1},
                timings: {promptMs: 1, generationMs: 1, promptTokensPerSecond: 1, generationTokensPerSecond: 1}}});
    }));
    await untilPeer(attacker.id);
    const response = await fetch(`${target.origin}/v1/messages`, {
        method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify({model: 'stopper', max_tokens: 4, stop_sequences: ['asked'], messages: [{role: 'user', content: 'hello'}]})
    });
    t.is(response.status, 529);
    t.like(await response.json(), {type: 'error', error: {type: 'overloaded_error'}});
    await expectBanned(t, attacker.id, /stop sequence the request did not ask for/);
});

test.serial('a serving peer that keeps a job alive with progress it never makes, or sends a call the request does not allow, is banned', async (t) => {
    // Progress must grow and stay within the budget: the same claim again is holding the job hostage.
    const stalling = await hostilePeer(networkTopic({name: 'public'}), hostileProvider('stalling', (message, send) => {
        if (message.type === 'generate')
            for (let frame = 0; frame < 5; frame++)
                send({type: 'progress', jobId: message.jobId, tokens: 2});
    }));
    await untilPeer(stalling.id);
    const tools = [{type: 'function', function: {name: 'get', parameters: {type: 'object', properties: {n: {type: 'integer', maximum: 9}}, required: ['n']}}}];
    const stalled = await fetch(`${target.baseUrl}/chat/completions`, {
        method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify({model: 'stalling', messages: [{role: 'user', content: 'hi'}], max_tokens: 50, tools, tool_choice: 'required'})
    });
    t.is(stalled.status, 503);
    await expectBanned(t, stalling.id, /claimed 2 token\(s\) of a call after claiming 2/);

    const lying = await hostilePeer(networkTopic({name: 'public'}), hostileProvider('lying', (message, send) => {
        if (message.type === 'generate')
            send({type: 'text', jobId: message.jobId, text: '', tokens: [1, 2, 3], toolCall: {name: 'get', arguments: '{"n": 99}'}});
    }));
    await untilPeer(lying.id);
    const lied = await fetch(`${target.baseUrl}/chat/completions`, {
        method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify({model: 'lying', messages: [{role: 'user', content: 'hi'}], max_tokens: 50, tools, tool_choice: 'required', stream: true})
    });
    const body = await lied.text();
    t.false(body.includes('"n": 99'), 'the invalid call never reaches the client');
    await expectBanned(t, lying.id, /arguments of 'get'/);
});

test.serial('frames for jobs a peer does not have get it banned: no flood of cancels or stray tokens', async (t) => {
    for (const [name, frame] of [
        ['cancel', {type: 'cancel', jobId: 'f'.repeat(32)}],
        ['text', {type: 'text', jobId: 'e'.repeat(32), text: 'stray', tokens: [1]}],
        ['generated', {type: 'generated', jobId: 'd'.repeat(32), result: {text: '', finishReason: 'stop', usage: {promptTokens: 1, completionTokens: 1},
            timings: {promptMs: 1, generationMs: 1, promptTokensPerSecond: 1, generationTokensPerSecond: 1}}}]
    ] as const) {
        const attacker = await hostilePeer(networkTopic({name: 'public'}), (stream) => {
            openControlChannel(stream, () => undefined);
            const channel = Protomux.from(stream).createChannel({protocol: JOBS_PROTOCOL, onopen: () => {
                for (let i = 0; i < 10_000; i++)
                    message.send(encodeFrame(frame));
            }})!;
            const message = channel.addMessage({encoding: c.raw});
            channel.open();
        });
        await expectBanned(t, attacker.id, /for a job (that does not exist|it never submitted)/);
        t.log(name, 'banned');
    }
});

test.serial('megabytes of job frames per second get the sender banned for flooding', async (t) => {
    const attacker = await hostilePeer(networkTopic({name: 'public'}), (stream) => {
        openControlChannel(stream, () => undefined);
        const channel = Protomux.from(stream).createChannel({protocol: JOBS_PROTOCOL, onopen: () => {
            const prompt = 'p'.repeat(3_900_000);
            for (let i = 0; i < 138; i++)
                message.send(encodeFrame({type: 'generate', jobId: i.toString(16).padStart(32, '0'), request: {
                    kind: 'completion', model: 'none', prompt, sampling: {temperature: 0, stop: [], responseFormat: {type: 'text'}}
                }}));
        }})!;
        const message = channel.addMessage({encoding: c.raw});
        channel.open();
    });
    await expectBanned(t, attacker.id, /flood/);
});
