import {once} from 'node:events';
import test from 'ava';
import crypto from 'hypercore-crypto';
import type {Testnet} from 'hyperdht/testnet.js';
import {InferenceError} from '../core/inference-error.js';
import {jobProviderDefaults} from '../inference/remote/jobs/job-admission.js';
import {JobProvider, type JobExecutor, type ServedJob} from '../inference/remote/jobs/job-provider.js';
import {JobRequester} from '../inference/remote/jobs/job-requester.js';
import {JobsProtocol} from '../inference/remote/jobs/jobs-protocol.js';
import {RECEIPT_VERSION, signReceiptBody, type ReceiptBody} from '../ledger/receipt.js';
import {shortNodeId} from '../swarm/node-identity.js';
import type {PeerConnection} from '../swarm/peer-connection.js';
import type {PeerProtocol} from '../swarm/peer-protocol.js';
import {SwarmNode, type SwarmNodeOptions} from '../swarm/swarm-node.js';
import {capabilitiesFixture} from '../harness/capabilities-fixture.js';
import {waitFor} from '../harness/cli-process.js';
import {startTestnet} from '../harness/swarm-fixture.js';

let testnet: Testnet;
const nodes: SwarmNode[] = [];

test.before(async () => {
    ({testnet} = await startTestnet());
});

test.after.always(async () => {
    await Promise.all(nodes.map((node) => node.stop()));
    await testnet?.destroy();
});

function identity() {
    const keyPair = crypto.keyPair();
    return {...keyPair, id: keyPair.publicKey.toString('hex'), shortId: shortNodeId(keyPair.publicKey)};
}

function swarmNode(network: string, extra: Partial<SwarmNodeOptions> = {}) {
    const node = new SwarmNode({
        identity: identity(), network: {name: network}, software: '0.1.0', bootstrap: testnet.bootstrap,
        capabilities: () => capabilitiesFixture(), ...extra
    });
    nodes.push(node);
    return node;
}

/** Two nodes of one network, each with its protocols attached before it starts, connected to each other. */
async function connectedPair(network: string, protocolsA: PeerProtocol[], protocolsB: PeerProtocol[]) {
    const a = swarmNode(network);
    const b = swarmNode(network);
    for (const protocol of protocolsA)
        a.use(protocol);
    for (const protocol of protocolsB)
        b.use(protocol);
    const joined = Promise.all([once(a, 'peerJoined'), once(b, 'peerJoined')]);
    await Promise.all([a.start(), b.start()]);
    await joined;
    return [a, b] as const;
}

/** Records every connection a protocol is attached to. */
class RecordingProtocol {
    readonly peers: PeerConnection[] = [];
    attach(peer: PeerConnection) {
        this.peers.push(peer);
    }
}

test('a protocol gets every peer once its hello completes, whether attached before or after', async (t) => {
    const early = new RecordingProtocol();
    const late = new RecordingProtocol();
    const [a, b] = await connectedPair('attach', [early], []);
    t.is(early.peers.length, 1);
    t.is(early.peers[0]!.peerId, b.id);
    t.true(early.peers[0]!.ready);
    a.use(late);
    t.deepEqual(late.peers, early.peers, 'a protocol attached later gets the peers already there');
});

test('an update held back by the capability interval reaches the peers connected before, even when another peer joins meanwhile', async (t) => {
    let price = 1;
    // An interval long enough that the third peer surely joins while the update waits, however busy the machine.
    const a = swarmNode('capability-updates', {
        capabilities: () => capabilitiesFixture({pricePerMillionTokens: price}), timings: {capabilityUpdateMinIntervalMs: 8_000}
    });
    const b = swarmNode('capability-updates');
    const joined = Promise.all([once(a, 'peerJoined'), once(b, 'peerJoined')]);
    await Promise.all([a.start(), b.start()]);
    await joined;
    price = 2;
    a.capabilitiesChanged(); // sent at once
    await waitFor(() => b.peer(a.id)?.capabilities.pricePerMillionTokens === 2, 10_000);
    price = 3;
    a.capabilitiesChanged(); // held back by the interval
    // A third peer joins while the update waits: its hello already carries price 3.
    const c = swarmNode('capability-updates');
    const cJoined = once(c, 'peerJoined');
    await c.start();
    await cJoined;
    await waitFor(() => c.peer(a.id)?.capabilities.pricePerMillionTokens === 3, 10_000);
    await waitFor(() => b.peer(a.id)?.capabilities.pricePerMillionTokens === 3, 30_000);
    t.is(b.peer(a.id)!.capabilities.pricePerMillionTokens, 3);
});

test('leaving the swarm is bounded even when the DHT cannot say goodbye', async (t) => {
    // Nothing listens on the discard port: the DHT's own destroy() waits seconds for its bootstrap nodes.
    const node = new SwarmNode({
        identity: identity(), network: {name: 'lonely'}, software: '0.1.0', bootstrap: [{host: '127.0.0.1', port: 9}],
        capabilities: () => capabilitiesFixture(), timings: {leaveTimeoutMs: 300}
    });
    await node.start();
    const startedAt = performance.now();
    await node.stop();
    t.true(performance.now() - startedAt < 3_000, `stop took ${Math.round(performance.now() - startedAt)} ms`);
});

test('a requester that stops reading loses its job; the provider never buffers more than its bound for it', async (t) => {
    const maxSendBacklogBytes = 256 * 1024;
    const chunk = 'x'.repeat(32 * 1024);
    // As many tokens as such a chunk of text can honestly stand for.
    const chunkTokens = Array.from({length: 128}, () => 1);
    const providerJobs = new JobsProtocol({maxSendBacklogBytes});
    const requesterJobs = new JobsProtocol();
    let providerSide: PeerConnection | undefined;
    let requesterSide: PeerConnection | undefined;
    // An engine that streams as fast as it can until it is stopped: the provider must not outrun a requester.
    let largestBacklog = 0;
    const executor: JobExecutor = {
        canServe: () => true,
        modelBytes: () => 1000,
        embed: () => Promise.reject(new Error('unused')),
        generate: async (_request, {onText, signal}) => {
            while (!signal.aborted) {
                largestBacklog = Math.max(largestBacklog, providerSide?.backlogBytes ?? 0);
                onText(chunk, chunkTokens);
                await new Promise((resolve) => setImmediate(resolve));
            }
            throw InferenceError.cancelled();
        }
    };
    const provider = new JobProvider({jobs: providerJobs, identity: identity(), executor, limits: {...jobProviderDefaults, maxConcurrentJobs: 1}});
    const requester = new JobRequester({jobs: requesterJobs, identity: identity()});
    const [providerNode] = await connectedPair('backlog',
        [providerJobs, {attach: (peer) => providerSide = peer}], [requesterJobs, {attach: (peer) => requesterSide = peer}]);

    const served = once(provider, 'served') as Promise<[ServedJob]>;
    let received = 0;
    const job = requester.generate(providerNode.id, {kind: 'completion', model: 'm', prompt: 'go', sampling: {temperature: 0, stop: [], responseFormat: {type: 'text'}}}, {
        // The requester's own stall detector is kept out of the way (its floor follows the first chunk's pace down to
        // 1.5 s, and it would cancel the job first when the network's buffers take longer than that to fill).
        deadlines: {firstTokenMs: 30_000, tokenMs: 30_000, stall: {floorMs: 30_000}}, modelBytes: 1000, tokenCap: 1_000_000,
        onText: () => {
            // The requester's process stops reading from the network after the first chunk (frozen, or swamped).
            if (++received === 1)
                requesterSide!.stream.pause();
        }
    });
    job.catch(() => undefined);
    const [record] = await served;
    t.is(record.outcome, 'failed');
    t.is(record.error, 'requester_backlogged');
    t.true(largestBacklog <= maxSendBacklogBytes + 2 * chunk.length, `backlog reached ${largestBacklog} bytes`);
    t.is(provider.activeJobs, 0);
});

test('a receipt for a job that was never served is rejected with an event, not swallowed', async (t) => {
    const providerJobs = new JobsProtocol();
    const requesterJobs = new JobsProtocol();
    const requesterIdentity = identity();
    const provider = new JobProvider({
        jobs: providerJobs, identity: identity(), limits: jobProviderDefaults,
        executor: {canServe: () => false, modelBytes: () => 0, generate: () => Promise.reject(new Error('unused')), embed: () => Promise.reject(new Error('unused'))}
    });
    const [providerNode, requesterNode] = await connectedPair('receipts', [providerJobs], [requesterJobs]);
    const jobId = 'e'.repeat(32);
    const body: ReceiptBody = {
        version: RECEIPT_VERSION, jobId, model: 'm', modelBytes: 1000, promptTokens: 1, completionTokens: 1_000_000, promptMs: 1, generationMs: 1,
        provider: providerNode.id, requester: requesterIdentity.id, completedAt: new Date().toISOString()
    };
    const rejected = once(provider, 'receiptRejected') as Promise<[string, string, string]>;
    t.is(await requesterJobs.send(providerNode.id, {type: 'receipt', jobId, receipt: {
        body, requesterSignature: signReceiptBody(body, requesterIdentity.secretKey), providerSignature: null
    }}), 'sent');
    const [peerId, rejectedJobId, reason] = await rejected;
    t.is(peerId, requesterNode.id);
    t.is(rejectedJobId, jobId);
    t.regex(reason, /no job served/);
});

test('a node alone warns with its NAT; a reachable node announces its relay to peers (auto), one with --relay off does not', async (t) => {
    const lonely = swarmNode('isolated', {timings: {pingIntervalMs: 100, isolationWarningMs: 300}});
    const isolated = once(lonely, 'isolated');
    await lonely.start();
    const [nat, failures] = await isolated;
    t.like(nat, {type: 'open', reachable: true}, 'every node of a loopback testnet is reachable');
    t.deepEqual(failures, []);

    const relaying = swarmNode('relays', {timings: {pingIntervalMs: 100}});
    const quiet = swarmNode('relays', {relay: {mode: 'off'}, timings: {pingIntervalMs: 100}});
    const offered = once(relaying, 'relayOffer');
    await Promise.all([relaying.start(), quiet.start()]);
    t.deepEqual(await offered, [true]);
    const key = relaying.relayStatus().key;
    await waitFor(() => quiet.peer(relaying.id)?.capabilities.relay?.key === key, 30_000);
    await waitFor(() => relaying.peer(quiet.id) !== undefined, 30_000);
    t.is(relaying.peer(quiet.id)!.capabilities.relay, null);
    t.like(quiet.relayStatus(), {mode: 'off', offering: false});
    t.deepEqual(quiet.route(relaying.id), {kind: 'direct', relay: null, relayKey: null});
});
