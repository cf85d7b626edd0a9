import {once} from 'node:events';
import test from 'ava';
import type {Testnet} from 'hyperdht/testnet.js';
import {jobProviderDefaults} from '../inference/remote/jobs/job-admission.js';
import {JobProvider, type JobExecutor} from '../inference/remote/jobs/job-provider.js';
import {JobRequester} from '../inference/remote/jobs/job-requester.js';
import {JobsProtocol} from '../inference/remote/jobs/jobs-protocol.js';
import {ShardProtocol} from '../inference/sharded/tunnel/shard-protocol.js';
import {peersStatusSchema} from '../node/node-status.js';
import {peersStatus} from '../node/status-documents.js';
import type {CloseReason} from '../swarm/channel/errors.js';
import {ConnectError, hyperswarmMaxPeers, pickEviction, topicDialTarget, type EvictionCandidate} from '../swarm/connection-limits.js';
import {PeerState} from '../swarm/peer-state.js';
import type {SwarmNode, SwarmNodeOptions} from '../swarm/swarm-node.js';
import {reasonCounts} from '../tui/panels/peers-panel.js';
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

/** Quick rounds: pings (and the idle check) every 200 ms, look-ups every second. */
function swarmNode(network: string, extra: Partial<SwarmNodeOptions> = {}) {
    const node = testSwarmNode(testnet.bootstrap, network,
        {...extra, timings: {pingIntervalMs: 200, discoveryRefreshMs: 1_000, earlyRefreshesMs: [300, 600], ...extra.timings}});
    nodes.push(node);
    return node;
}

/** Checks on every join and every 50 ms that `node` holds no more connections than its limit plus those in use. */
function watchLimit(node: SwarmNode) {
    const breaches: string[] = [];
    let most = 0;
    const check = () => {
        const {held, inUse, maxPeers} = node.connectionCounts();
        most = Math.max(most, held);
        if (held > maxPeers + inUse)
            breaches.push(`${held} held, ${inUse} in use, limit ${maxPeers}`);
    };
    node.on('peerJoined', check);
    const timer = setInterval(check, 50);
    return {breaches, most: () => most, stop: () => clearInterval(timer)};
}

const candidate = (peerId: string, extra: Partial<EvictionCandidate> = {}): EvictionCandidate =>
    ({peerId, origin: {kind: 'network'}, capabilities: capabilitiesFixture(), rttMs: 10, requestsSucceeded: 0, idleMs: 1_000, ...extra});

test('the connection closed to make room: an idle on-demand one first, then the least useful neighbour, the farthest of equals', (t) => {
    const serving = capabilitiesFixture({models: [{id: 'm', sha256: null, sizeBytes: 1, quantization: 'Q8_0', layers: 1, layerBytes: [1], loaded: true}]});
    t.is(pickEviction([candidate('a', {capabilities: serving}), candidate('b', {rttMs: 5}), candidate('c', {rttMs: 50})])?.peerId, 'c');
    t.is(pickEviction([candidate('a', {rttMs: 500}), candidate('b', {origin: {kind: 'on-demand', why: 'x'}, rttMs: 1})])?.peerId, 'b');
    t.is(pickEviction([candidate('a', {requestsSucceeded: 3, rttMs: 90}), candidate('b', {rttMs: 20})])?.peerId, 'b');
    t.is(pickEviction([]), undefined);
    // The topic is dialed short of the limit, leaving room for peers that connect here; Hyperswarm divides its budget
    // by a factor that grows with the peers joined by key, so the budget given to it is multiplied back.
    t.deepEqual([1, 2, 3, 6, 64].map(topicDialTarget), [1, 1, 2, 5, 56]);
    t.is(hyperswarmMaxPeers(56, 0), 56);
    t.is(hyperswarmMaxPeers(56, 1), 112);
    t.is(hyperswarmMaxPeers(5, 3), 15);
});

test('a peer is in use while a lease or a use holds it; idle time counts from the end of the last', async (t) => {
    const peer = new PeerState('p', '0.1.0', capabilitiesFixture());
    t.false(peer.inUse);
    const lease = peer.lease('on-demand:x');
    let running = true;
    peer.holdWhile('provider:m', () => running);
    t.deepEqual(peer.heldFor, ['on-demand:x', 'provider:m']);
    t.is(peer.idleMs(), 0);
    // A newer connection to the peer takes the uses over: the lease on the old one holds it.
    const replacement = new PeerState('p', '0.1.0', capabilitiesFixture());
    replacement.adoptUses(peer);
    t.deepEqual(replacement.heldFor, ['on-demand:x', 'provider:m']);
    lease.release();
    t.deepEqual(replacement.heldFor, ['provider:m']);
    lease.release();
    t.deepEqual(peer.heldFor, ['provider:m']);
    running = false;
    t.false(peer.inUse);
    await new Promise((resolve) => setTimeout(resolve, 30));
    t.true(peer.idleMs() >= 20);
});

test('with --max-peers 2 among 5 nodes, none holds more than 2 connections (plus those in use), and each finds peers', async (t) => {
    const limits = {maxPeers: 2, idleTimeoutMs: 0};
    const five = Array.from({length: 5}, () => swarmNode('limit-five', {limits, timings: {newConnectionGraceMs: 500}}));
    const watches = five.map(watchLimit);
    await Promise.all(five.map((node) => node.start()));
    await waitFor(() => five.every((node) => node.peers().length >= 1), 30_000);
    // A few more rounds of look-ups, dials and replacements.
    await new Promise((resolve) => setTimeout(resolve, 4_000));
    for (const watch of watches)
        watch.stop();
    t.deepEqual(watches.flatMap((watch) => watch.breaches), []);
    t.true(watches.every((watch) => watch.most() <= 2), `most held: ${watches.map((watch) => watch.most()).join(', ')}`);
    for (const node of five)
        t.true(node.peers().every((peer) => node.usage().get(peer.id)?.reasons.includes('network')));
});

test('connectTo is refused when every connection is in use, makes room by closing an idle one, and its connection closes once idle', async (t) => {
    // The grace outlasts the idle timeout: the on-demand connection, once released, can only close as idle.
    const grace = 2_000;
    const a = swarmNode('on-demand', {limits: {maxPeers: 2, idleTimeoutMs: 400}, timings: {newConnectionGraceMs: grace}});
    const others = Array.from({length: 4}, () => swarmNode('on-demand'));
    const watch = watchLimit(a);
    const left = new Map<string, CloseReason>();
    a.on('peerLeft', (peerId, reason) => left.set(peerId, reason));
    await Promise.all([a, ...others].map((node) => node.start()));
    await waitFor(() => a.peers().length === 2, 30_000);
    // Both neighbours carry work: the others' dials are refused from now on, and nothing closes these two.
    const [busy, freed] = a.peers();
    const work = busy!.lease('test-work');
    const freedWork = freed!.lease('test-work');
    const unconnected = () => others.filter((node) => a.peer(node.id) === undefined);
    const refused = await t.throwsAsync(a.connectTo(unconnected()[0]!.id, 'more'), {instanceOf: ConnectError});
    t.is(refused!.code, 'peer_limit');
    t.regex(refused!.message, /--max-peers 2: all 2 connections are in use/);
    t.deepEqual(a.usage().get(busy!.id)?.reasons, ['network', 'test-work']);

    // Once one is idle and past its grace, it makes room for an on-demand connection.
    await waitFor(() => Date.now() - freed!.connectedAt > grace + 100, 10_000);
    freedWork.release();
    const target = unconnected()[0]!;
    const lease = await a.connectTo(target.id, 'test');
    t.truthy(a.peer(target.id));
    t.truthy(a.peer(busy!.id), 'the neighbour carrying work stays');
    t.regex(left.get(freed!.id)?.message ?? '', /make room .*--max-peers 2/);
    t.deepEqual(a.usage().get(target.id)?.reasons, ['on-demand:test']);

    // Released, the on-demand connection closes once idle for the timeout; the one carrying work does not.
    lease.release();
    await waitFor(() => left.has(target.id), 10_000);
    t.regex(left.get(target.id)!.message, /idle for 0\.4 s \(--idle-peer-timeout\)/);
    t.truthy(a.peer(busy!.id));
    work.release();
    watch.stop();
    t.deepEqual(watch.breaches, []);
    t.true(watch.most() <= 2);
});

test('connectTo dials again at once a peer whose on-demand connections kept closing within seconds (Hyperswarm would count them as failures and give up)', async (t) => {
    // B is everyone's only topic neighbour (joined by key, --max-peers 2): R meets P on demand only.
    const b = swarmNode('redial');
    await b.start();
    const line = {limits: {maxPeers: 2, idleTimeoutMs: 300}, relay: {through: [b.id]}, timings: {connectTimeoutMs: 5_000}};
    const p = swarmNode('redial', line);
    const r = swarmNode('redial', line);
    await Promise.all([p.start(), r.start()]);
    await waitFor(() => r.peer(b.id) !== undefined && p.peer(b.id) !== undefined, 30_000);
    for (let round = 0; round < 7; round++) {
        const lease = await r.connectTo(p.id, 'test');
        t.truthy(r.peer(p.id), `round ${round}`);
        lease.release();
        // Closed as idle after 0.3 s: far within the 15 s Hyperswarm needs to count a connection as a success.
        await waitFor(() => r.peer(p.id) === undefined, 10_000);
    }
});

test('a job in flight holds the connection on both sides, with its model, and /api/peers and the dashboard say why', async (t) => {
    const providerJobs = new JobsProtocol();
    const requesterJobs = new JobsProtocol();
    let finish!: () => void;
    const finished = new Promise<void>((resolve) => finish = resolve);
    const executor: JobExecutor = {
        canServe: () => true, modelBytes: () => 1000, modelSha256: () => null,
        embed: () => Promise.reject(new Error('unused')),
        generate: async (_request, {onText}) => {
            onText('wow ', [10]);
            await finished;
            return {text: 'wow ', finishReason: 'length', usage: {promptTokens: 2, completionTokens: 1},
                timings: {promptMs: 1, generationMs: 1, promptTokensPerSecond: 2000, generationTokensPerSecond: 1000}};
        }
    };
    const providerIdentity = nodeIdentity();
    const requesterIdentity = nodeIdentity();
    new JobProvider({jobs: providerJobs, identity: providerIdentity, executor, domain: DEFAULT_DOMAIN, limits: jobProviderDefaults});
    const requester = new JobRequester({jobs: requesterJobs, identity: requesterIdentity, domain: DEFAULT_DOMAIN});
    const provider = swarmNode('job-uses', {identity: providerIdentity});
    const client = swarmNode('job-uses', {identity: requesterIdentity});
    provider.use(providerJobs);
    client.use(requesterJobs);
    const joined = Promise.all([once(provider, 'peerJoined'), once(client, 'peerJoined')]);
    await Promise.all([provider.start(), client.start()]);
    await joined;

    let streamed = 0;
    const job = requester.generate(provider.id, {kind: 'completion', model: 'm', prompt: 'go', sampling: {temperature: 0, stop: [], responseFormat: {type: 'text'}}}, {
        deadlines: {firstTokenMs: 10_000, tokenMs: 10_000}, model: {sha256: null, vouchedBytes: 0}, tokenCap: 8, onText: () => streamed++
    });
    await waitFor(() => streamed === 1, 10_000);
    t.deepEqual(client.usage().get(provider.id), {reasons: ['network', 'provider:m'], inUse: true, idleMs: 0});
    t.deepEqual(provider.usage().get(client.id)?.reasons, ['network', 'requester:m']);
    t.is(client.connectionCounts().inUse, 1);

    const document = peersStatusSchema.parse(peersStatus(client));
    t.like(document.peers[0], {id: provider.id, reasons: ['network', 'provider:m'], inUse: true, idleSeconds: 0});
    t.like(document.connections, {held: 1, inUse: 1, maxPeers: 64, idleTimeoutSeconds: 300});
    t.is(reasonCounts(document.peers.map((peer) => ({...peer, tflops: null, backend: false, vramTotalBytes: 0, models: [], successRate: 1,
        requestsSent: 0, relayed: false}))), 'network 1 · provider 1');

    finish();
    await job;
    // Once its receipt is countersigned, nothing runs over the connection on the requester's side.
    await waitFor(() => client.usage().get(provider.id)?.inUse === false, 10_000);
    t.deepEqual(client.usage().get(provider.id)?.reasons, ['network']);
});

test('a shard session holds the connection on both sides until it ends', async (t) => {
    const hostIdentity = nodeIdentity();
    const coordinatorIdentity = nodeIdentity();
    const ended: string[] = [];
    // A host whose sessions serve nothing: the test is about the connection, not the tunnel.
    const hostProtocol = new ShardProtocol({identity: hostIdentity, domain: DEFAULT_DOMAIN, host: {
        open: async () => ({connect: () => undefined, end: (reason) => ended.push(reason), graphComputes: () => 0, graphTokens: () => 0})
    }});
    const coordinatorProtocol = new ShardProtocol({identity: coordinatorIdentity, domain: DEFAULT_DOMAIN});
    const host = swarmNode('shard-uses', {identity: hostIdentity});
    const coordinator = swarmNode('shard-uses', {identity: coordinatorIdentity});
    host.use(hostProtocol);
    coordinator.use(coordinatorProtocol);
    const joined = Promise.all([once(host, 'peerJoined'), once(coordinator, 'peerJoined')]);
    await Promise.all([host.start(), coordinator.start()]);
    await joined;

    const session = await coordinatorProtocol.openSession(host.id, {model: {id: 'demo', bytes: 1024, sha256: null}, layers: [0, 1], layerCount: 4,
        sequences: 1, bytes: 1024});
    t.deepEqual(coordinator.usage().get(host.id)?.reasons, ['network', 'shard-host:demo']);
    t.deepEqual(host.usage().get(coordinator.id)?.reasons, ['network', 'shard-coordinator:demo']);
    session.end('done');
    await waitFor(() => ended.length === 1, 10_000);
    t.like(coordinator.usage().get(host.id), {reasons: ['network'], inUse: false});
    t.like(host.usage().get(coordinator.id), {reasons: ['network'], inUse: false});
});
