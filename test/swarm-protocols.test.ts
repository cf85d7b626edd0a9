import {once} from 'node:events';
import test from 'ava';
import type {Testnet} from 'hyperdht/testnet.js';
import {InferenceError} from '../core/inference-error.js';
import {jobProviderDefaults, MAX_OWED_RECEIPTS} from '../inference/remote/jobs/job-admission.js';
import type {JobMessage} from '../inference/remote/jobs/job-messages.js';
import {JobProvider, type JobExecutor, type ServedJob} from '../inference/remote/jobs/job-provider.js';
import {JobRequester} from '../inference/remote/jobs/job-requester.js';
import {JobsProtocol} from '../inference/remote/jobs/jobs-protocol.js';
import {RECEIPT_VERSION, signReceiptBody, type Receipt, type ReceiptBody} from '../ledger/receipt.js';
import type {GenerationRequest} from '../core/inference-types.js';
import type {NodeIdentity} from '../swarm/node-identity.js';
import type {PeerConnection} from '../swarm/peer-connection.js';
import type {PeerProtocol} from '../swarm/peer-protocol.js';
import type {SwarmNode, SwarmNodeOptions} from '../swarm/swarm-node.js';
import {capabilitiesFixture} from '../harness/capabilities-fixture.js';
import {waitFor} from '../harness/cli-process.js';
import {DEFAULT_DOMAIN} from '../harness/ledger-fixture.js';
import {nodeIdentity, startTestnet, testSwarmNode} from '../harness/swarm-fixture.js';

let testnet: Testnet;
const nodes: SwarmNode[] = [];

test.before(async () => {
    ({testnet} = await startTestnet());
});

test.after.always(async () => {
    await Promise.all(nodes.map((node) => node.stop()));
    await testnet?.destroy();
});

function swarmNode(network: string, extra: Partial<SwarmNodeOptions> = {}) {
    const node = testSwarmNode(testnet.bootstrap, network, extra);
    nodes.push(node);
    return node;
}

/** Two nodes of one network, each with its protocols attached before it starts (and the identity given), connected to each other. */
async function connectedPair(network: string, protocolsA: PeerProtocol[], protocolsB: PeerProtocol[], identities: [NodeIdentity?, NodeIdentity?] = []) {
    const a = swarmNode(network, identities[0] && {identity: identities[0]});
    const b = swarmNode(network, identities[1] && {identity: identities[1]});
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
    const node = testSwarmNode([{host: '127.0.0.1', port: 9}], 'lonely', {timings: {leaveTimeoutMs: 300}});
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
        modelSha256: () => null,
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
    const provider = new JobProvider({jobs: providerJobs, identity: nodeIdentity(), executor, domain: DEFAULT_DOMAIN, limits: {...jobProviderDefaults, maxConcurrentJobs: 1}});
    const requester = new JobRequester({jobs: requesterJobs, identity: nodeIdentity(), domain: DEFAULT_DOMAIN});
    const [providerNode] = await connectedPair('backlog',
        [providerJobs, {attach: (peer) => providerSide = peer}], [requesterJobs, {attach: (peer) => requesterSide = peer}]);

    const served = once(provider, 'served') as Promise<[ServedJob]>;
    let received = 0;
    const job = requester.generate(providerNode.id, {kind: 'completion', model: 'm', prompt: 'go', sampling: {temperature: 0, stop: [], responseFormat: {type: 'text'}}}, {
        // The requester's own stall detector is kept out of the way (its floor follows the first chunk's pace down to
        // 1.5 s, and it would cancel the job first when the network's buffers take longer than that to fill).
        deadlines: {firstTokenMs: 30_000, tokenMs: 30_000, stall: {floorMs: 30_000}}, model: {sha256: null, vouchedBytes: 0}, tokenCap: 1_000_000,
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
    const requesterIdentity = nodeIdentity();
    const provider = new JobProvider({
        jobs: providerJobs, identity: nodeIdentity(), limits: jobProviderDefaults, domain: DEFAULT_DOMAIN,
        executor: {canServe: () => false, modelBytes: () => 0, modelSha256: () => null, generate: () => Promise.reject(new Error('unused')), embed: () => Promise.reject(new Error('unused'))}
    });
    const [providerNode, requesterNode] = await connectedPair('receipts', [providerJobs], [requesterJobs]);
    const jobId = 'e'.repeat(32);
    const body: ReceiptBody = {
        version: RECEIPT_VERSION, ...DEFAULT_DOMAIN, kind: 'generate', jobId, model: 'm', modelSha256: null, modelBytes: 1000, promptTokens: 1,
        completionTokens: 1_000_000, promptMs: 1, generationMs: 1,
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

/** A provider and a requester over a real connection; the provider's engine streams `tokens` tokens and reports `usage`. */
async function jobsPair(name: string, options: {
    streamed?: number, reported?: number, modelBytes?: number, keepReceipt?: (receipt: Receipt) => Promise<void>,
    loggedJobId?: (jobId: string) => boolean, receiptGraceMs?: number,
    /** No JobRequester on the requester's side: the test sends the frames itself. */
    raw?: boolean
} = {}) {
    const providerJobs = new JobsProtocol();
    const requesterJobs = new JobsProtocol();
    const streamed = options.streamed ?? 3;
    const executor: JobExecutor = {
        canServe: () => true,
        modelBytes: () => options.modelBytes ?? 1000,
        modelSha256: () => MODEL_SHA256,
        embed: async (_model, inputs) => ({vectors: inputs.map(() => [0.5, 0.25]), promptTokens: inputs.length * 3}),
        generate: async (_request, {onText}) => {
            for (let token = 0; token < streamed; token++)
                onText('wow ', [token + 10]);
            return {text: 'wow '.repeat(streamed), finishReason: 'length', usage: {promptTokens: 7, completionTokens: options.reported ?? streamed},
                timings: {promptMs: 1, generationMs: 2, promptTokensPerSecond: 7000, generationTokensPerSecond: 1000}};
        }
    };
    // Each side signs with its swarm identity, as a node does.
    const providerIdentity = nodeIdentity();
    const requesterIdentity = nodeIdentity();
    const provider = new JobProvider({jobs: providerJobs, identity: providerIdentity, executor, domain: DEFAULT_DOMAIN, limits: jobProviderDefaults,
        ...(options.keepReceipt && {keepReceipt: options.keepReceipt}), ...(options.loggedJobId && {loggedJobId: options.loggedJobId}),
        ...(options.receiptGraceMs !== undefined && {receiptGraceMs: options.receiptGraceMs})});
    const requester = options.raw === true ? undefined! : new JobRequester({jobs: requesterJobs, identity: requesterIdentity, domain: DEFAULT_DOMAIN});
    const [providerNode] = await connectedPair(name, [providerJobs], [requesterJobs], [providerIdentity, requesterIdentity]);
    return {provider, requester, providerJobs, requesterJobs, providerId: providerNode.id};
}

const MODEL_SHA256 = 'ab'.repeat(32);
const completionRequest = (maxTokens?: number): GenerationRequest => ({
    kind: 'completion', model: 'm', prompt: 'such wow', sampling: {temperature: 0, stop: [], responseFormat: {type: 'text'}, ...(maxTokens !== undefined && {maxTokens})}
});
const jobDeadlines = {firstTokenMs: 10_000, tokenMs: 10_000};

test('a provider that reports more tokens than it streamed is a violator, and no receipt is signed for its job', async (t) => {
    const {provider, requester, providerId} = await jobsPair('inflated', {streamed: 3, reported: 2 ** 20});
    let receipts = 0;
    provider.on('receiptRejected', () => receipts++);
    provider.on('receipt', () => receipts++);
    const error = await t.throwsAsync(requester.generate(providerId, completionRequest(), {
        deadlines: jobDeadlines, model: {sha256: MODEL_SHA256, vouchedBytes: 0}, tokenCap: 2 ** 20, onText: () => undefined
    }));
    t.regex(error!.message, /reported 1048576 tokens after sending 3/);
    await new Promise((resolve) => setTimeout(resolve, 300));
    t.is(receipts, 0, 'the requester sent no receipt to countersign');
});

test('the receipt states what the requester measured: the tokens it received, the model size only if it can vouch for it', async (t) => {
    const {requester, provider, providerId} = await jobsPair('measured', {streamed: 3, modelBytes: 2 ** 50});
    const run = (vouchedBytes: number) => requester.generate(providerId, completionRequest(8), {
        deadlines: jobDeadlines, model: {sha256: MODEL_SHA256, vouchedBytes}, tokenCap: 100, onText: () => undefined
    });
    const received = once(requester, 'receipt') as Promise<[Receipt]>;
    await run(0);
    const [receipt] = await received;
    t.like(receipt.body, {kind: 'generate', completionTokens: 3, promptTokens: 7, modelBytes: 0, modelSha256: MODEL_SHA256, ...DEFAULT_DOMAIN});
    t.not(receipt.providerSignature, null);
    // A requester that holds the same file vouches for its size; one that names another size gets no countersignature.
    const vouched = once(requester, 'receipt') as Promise<[Receipt]>;
    await run(2 ** 50);
    t.is((await vouched)[0].body.modelBytes, 2 ** 50);
    const rejected = once(provider, 'receiptRejected') as Promise<[string, string, string]>;
    await run(999);
    t.regex((await rejected)[2], /another model size/);
});

test('a receipt is sent again until it is countersigned, and countersigned only once the provider kept it', async (t) => {
    const kept: Receipt[] = [];
    let tries = 0;
    const {requester, providerId} = await jobsPair('resend', {keepReceipt: async (receipt) => {
        // The first time the provider's disk fails: it must not acknowledge what it did not keep.
        if (++tries === 1)
            throw new Error('disk full');
        kept.push(receipt);
    }});
    const countersigned = once(requester, 'receipt') as Promise<[Receipt]>;
    await requester.generate(providerId, completionRequest(8), {deadlines: jobDeadlines, model: {sha256: MODEL_SHA256, vouchedBytes: 0}, tokenCap: 100, onText: () => undefined});
    const [receipt] = await countersigned;
    t.is(tries, 2);
    t.deepEqual(kept.map((entry) => entry.body.jobId), [receipt.body.jobId]);
});

test('a job id used before is refused; a requester that keeps back its receipts gets no more jobs; embeddings get receipts', async (t) => {
    const {requesterJobs, providerId} = await jobsPair('owed', {raw: true, receiptGraceMs: 50, loggedJobId: (jobId) => jobId === 'c'.repeat(32)});
    const replies = new Map<string, JobMessage>();
    requesterJobs.on('message', (_peerId, message) => {
        if (message.type === 'generated' || message.type === 'failed')
            replies.set(message.jobId, message);
    });
    // Raw submissions: this requester never sends receipts.
    const submit = async (jobId: string) => {
        replies.delete(jobId);
        await requesterJobs.send(providerId, {type: 'generate', jobId, request: completionRequest(4)});
        await waitFor(() => replies.has(jobId), 10_000, 5);
        return replies.get(jobId)!;
    };
    const logged = await submit('c'.repeat(32));
    t.true(logged.type === 'failed' && /duplicate job id/.test(logged.error.message), JSON.stringify(logged));
    for (let job = 0; job < MAX_OWED_RECEIPTS; job++)
        t.is((await submit(String(job).repeat(32))).type, 'generated');
    t.is((await submit('0'.repeat(32))).type, 'failed', 'the same id again');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const refused = await submit('f'.repeat(32));
    t.true(refused.type === 'failed' && /owes the receipts of 4 jobs/.test(refused.error.message), JSON.stringify(refused));

    const fresh = await jobsPair('embed-receipts');
    const freshReceipt = once(fresh.requester, 'receipt') as Promise<[Receipt]>;
    await fresh.requester.embed(fresh.providerId, 'm', ['one', 'two'], {deadlines: jobDeadlines, model: {sha256: MODEL_SHA256, vouchedBytes: 0}});
    t.like((await freshReceipt)[0].body, {kind: 'embed', promptTokens: 6, completionTokens: 0});
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
