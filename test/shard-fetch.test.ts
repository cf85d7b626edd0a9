import {createHash, randomBytes} from 'node:crypto';
import {once} from 'node:events';
import {mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {dirname, join} from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import test, {type ExecutionContext} from 'ava';
import crypto from 'hypercore-crypto';
import type {Testnet} from 'hyperdht/testnet.js';
import type {TensorDigest} from '../core/tensor-digest.js';
import {probeSandbox} from '../engine/rpc/rpc-sandbox.js';
import {prepareRpcServerDir} from '../engine/rpc/rpc-server-dir.js';
import {Fnv1a64, HASH_THRESHOLD_BYTES} from '../engine/rpc/tensor-cache-seed.js';
import {FETCHED_SUBDIR, ShardHost, type ShardHostOptions, type ShardHostRuntime} from '../inference/sharded/shard-host.js';
import {MAX_FETCH_TENSORS} from '../inference/sharded/tunnel/layer-fetch-messages.js';
import type {ShardControl} from '../inference/sharded/tunnel/shard-messages.js';
import {
    type FetchOutcome, type FetchProgress, type FetchRequest, type SessionRequest, ShardProtocol, type ShardProtocolOptions, ShardSessionError
} from '../inference/sharded/tunnel/shard-protocol.js';
import type {PeerProtocol} from '../swarm/peer-protocol.js';
import type {SwarmNode} from '../swarm/swarm-node.js';
import {waitFor} from '../harness/cli-process.js';
import {serveFile} from '../harness/file-server.js';
import {RawShardPeer} from '../harness/raw-shard-peer.js';
import {TEST_RPC_DIR, testRpcBinaries} from '../harness/rpc-binaries.js';
import {nodeIdentity, startTestnet, testSwarmNode} from '../harness/swarm-fixture.js';

/**
 * A host's handling of the shard channel's `fetch` (docs/peer-protocol.md, "Shard channel"), between real swarm nodes,
 * a real ShardHost with sandboxed rpc servers and a local stand-in for Hugging Face: everything a peer sends is hostile
 * until checked. Bad input gets a clear answer and ends only what it came on; nothing is lost; the process stays up.
 */

const MiB = 2 ** 20;
/** The signing domain of every node here. */
const DOMAIN = {network: 'test', chainId: 31337};
/** Just over ggml-rpc's hash threshold: the smallest tensor a host downloads. */
const TENSOR_BYTES = HASH_THRESHOLD_BYTES + MiB / 2;

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
const bytesOf = (file: Buffer, tensor: TensorDigest) => file.subarray(tensor.offset, tensor.offset + tensor.bytes);

/** A stand-in model file: random bytes with three "tensors" over the threshold at unaligned offsets. */
const model = randomBytes(36 * MiB);
const MODEL_SHA = sha256(model);
const digestOf = (name: string, offset: number, bytes: number): TensorDigest => ({name, offset, bytes, sha256: sha256(model.subarray(offset, offset + bytes))});
const tensors = [4_096, 11 * MiB + 3, 22 * MiB + 77].map((offset, index) => digestOf(`blk.${index}.ffn_up.weight`, offset, TENSOR_BYTES));
const TOTAL = tensors.length * TENSOR_BYTES;
/** The name ggml-rpc's server looks each tensor up by, and the store's name of its file. */
const fnvs = tensors.map((tensor) => new Fnv1a64().update(bytesOf(model, tensor)).hex());
const storeNames = tensors.map((tensor, index) => `${tensor.sha256}.${fnvs[index]}`);
const rangeOf = (tensor: TensorDigest, from = 0) => `bytes=${tensor.offset + from}-${tensor.offset + tensor.bytes - 1}`;

/** Where `hf:doge-lab/fetch-GGUF/model.gguf` resolves under HF_ENDPOINT. */
const HF_PATH = 'doge-lab/fetch-GGUF/resolve/main/model.gguf';
const SOURCE = 'hf:doge-lab/fetch-GGUF/model.gguf';
const FETCH: FetchRequest = {model: MODEL_SHA, source: SOURCE, layers: [0, 2], tensors};
/** A stage of 48 MiB: room for the three tensors, not for six. */
const SESSION: SessionRequest = {model: {id: 'fetch-model', bytes: model.length, sha256: MODEL_SHA}, layers: [0, 2], layerCount: 4, sequences: 1, bytes: 48 * MiB};

let testnet: Testnet;
let runtime: ShardHostRuntime;
/** The host resolves hf: references against this process's endpoint: each test points it at its own source. */
const savedEnv = {HF_ENDPOINT: process.env.HF_ENDPOINT, MODEL_ENDPOINT: process.env.MODEL_ENDPOINT};
/** Each protocol's node key: a coordinator signs its session requests with its node's. */
const keys = new WeakMap<PeerProtocol, ReturnType<typeof crypto.keyPair>>();

test.before(async () => {
    ({testnet} = await startTestnet());
    const binaries = await prepareRpcServerDir(await testRpcBinaries());
    // As a node on the public network hosts: every server in the sandbox, and no fetch from a private address.
    const sandbox = await probeSandbox({launcherDir: TEST_RPC_DIR});
    if (!sandbox.available)
        throw new Error(`the sandbox does not work here: ${sandbox.reason}`);
    runtime = {binaries, sandbox};
    delete process.env.MODEL_ENDPOINT;
});

test.after.always(async () => {
    await testnet?.destroy();
    for (const [name, value] of Object.entries(savedEnv)) {
        if (value === undefined)
            delete process.env[name];
        else
            process.env[name] = value;
    }
});

function shardProtocol(options: Omit<ShardProtocolOptions, 'identity' | 'domain'> = {}) {
    const keyPair = crypto.keyPair();
    const protocol = new ShardProtocol({identity: {id: keyPair.publicKey.toString('hex'), secretKey: keyPair.secretKey}, domain: DOMAIN, ...options});
    keys.set(protocol, keyPair);
    return protocol;
}

/** A file server standing in for Hugging Face, serving `file` at HF_PATH; HF_ENDPOINT points at it. */
async function serveSource(t: ExecutionContext, file = model) {
    const server = await serveFile(HF_PATH, file);
    t.teardown(() => server.close());
    process.env.HF_ENDPOINT = server.origin;
    return server;
}

interface Fixture {
    host: ShardHost,
    hostNode: SwarmNode,
    cacheDir: string,
    /** `<cacheDir>/fetched`: the downloads, by SHA-256. */
    storeDir: string,
    /** Peers the host banned, with why. */
    banned: {peerId: string, reason: string}[]
}

/** The tensor cache's limit of a host here, unless a test says otherwise. */
const CACHE_MAX_BYTES = 2 ** 30;

/**
 * A host of its own (fresh cache) with the default fetch settings (160 MiB offered) unless `options` says otherwise,
 * and `peers` connected to it, on network `network`.
 */
async function hosting(t: ExecutionContext, network: string, peers: PeerProtocol[],
    options: Partial<Pick<ShardHostOptions, 'maxBytes' | 'fetch'>> = {}): Promise<Fixture> {
    const cacheDir = await mkdtemp(join(tmpdir(), 'strongdoge-fetch-'));
    const host = new ShardHost({runtime: () => runtime, maxBytes: 160 * MiB, threads: 1, cacheDir, cacheMaxBytes: CACHE_MAX_BYTES, ...options});
    const hostNode = swarmNode(network, shardProtocol({host}));
    const peerNodes = peers.map((protocol) => swarmNode(network, protocol));
    t.teardown(async () => {
        await Promise.all([hostNode, ...peerNodes].map((node) => node.stop()));
        await host.stop();
        await rm(cacheDir, {recursive: true, force: true});
    });
    const banned: Fixture['banned'] = [];
    hostNode.on('peerBanned', (peerId, reason) => banned.push({peerId, reason}));
    const joined = Promise.all(peerNodes.map((node) => once(node, 'peerJoined')));
    await Promise.all([hostNode, ...peerNodes].map((node) => node.start()));
    await joined;
    await waitFor(() => hostNode.peers().length === peers.length, 10_000, 20);
    await Promise.all(peers.map((peer) => peer instanceof RawShardPeer ? peer.attached() : undefined));
    return {host, hostNode, cacheDir, storeDir: join(cacheDir, FETCHED_SUBDIR), banned};
}

function swarmNode(network: string, protocol: PeerProtocol) {
    const keyPair = protocol instanceof RawShardPeer ? protocol.keyPair : keys.get(protocol) ?? crypto.keyPair();
    const node = testSwarmNode(testnet.bootstrap, network, {identity: nodeIdentity(keyPair)});
    node.use(protocol);
    return node;
}

async function names(dir: string) {
    return (await readdir(dir).catch(() => [] as string[])).sort();
}

/** Bytes of the files in `dir`. */
async function bytesIn(dir: string) {
    const sizes = await Promise.all((await names(dir)).map(async (name) => (await stat(join(dir, name))).size));
    return sizes.reduce((sum, bytes) => sum + bytes, 0);
}

const exists = (path: string) => stat(path).then(() => true, () => false);
const inode = async (path: string) => (await stat(path)).ino;
const viewsOf = (fixture: Fixture) => names(join(fixture.cacheDir, 'sessions'));

/**
 * Opens a session and finds its view of the tensor cache (`<cacheDir>/sessions/<pid>-<random>`, the one made by
 * this open); returns the view's `rpc/`, which the session's server reads.
 */
async function openSession(fixture: Fixture, coordinator: ShardProtocol, request = SESSION) {
    const before = new Set(await viewsOf(fixture));
    const session = await coordinator.openSession(fixture.hostNode.id, request);
    const made = (await viewsOf(fixture)).filter((name) => !before.has(name));
    if (made.length !== 1)
        throw new Error(`expected one new view, found ${made.join(', ') || 'none'}`);
    return {session, view: join(fixture.cacheDir, 'sessions', made[0]!, 'rpc')};
}

/** A fetch that asked nothing of the source: every tensor is the coordinator's to send. */
function notFetched(count: number, reason: RegExp) {
    return (t: ExecutionContext, outcome: FetchOutcome) => {
        t.like(outcome, {stored: 0, failed: count, downloadedBytes: 0, bytesPerSecond: null});
        t.regex(outcome.reason ?? '', reason);
    };
}

const isReady = (session: number) => (message: ShardControl): message is Extract<ShardControl, {type: 'ready'}> =>
    message.type === 'ready' && message.session === session;

test.serial('an honest fetch stores each tensor once, as <sha256>.<fnv>, and links it into that session\'s view only', async (t) => {
    const source = await serveSource(t);
    const coordinator = shardProtocol();
    const other = shardProtocol();
    const fixture = await hosting(t, 'fetch-honest', [coordinator, other]);
    const {session, view} = await openSession(fixture, coordinator);
    const {session: otherSession, view: otherView} = await openSession(fixture, other);

    const outcome = await session.fetch(FETCH);
    t.like(outcome, {stored: 3, failed: 0, downloadedBytes: TOTAL});
    t.is(outcome.reason, undefined);
    t.true(outcome.bytesPerSecond! > 0);
    t.deepEqual(source.requests.map((request) => request.range).sort(), tensors.map((tensor) => rangeOf(tensor)).sort(), 'each range asked once');

    t.deepEqual(await names(fixture.storeDir), [...storeNames].sort());
    t.deepEqual(await names(view), [...fnvs].sort(), 'the session\'s view holds the three, under the names the server looks up');
    for (const [index, fnv] of fnvs.entries())
        t.is(await inode(join(view, fnv)), await inode(join(fixture.storeDir, storeNames[index]!)), `${tensors[index]!.name}: a hard link to the store's file`);
    t.is(sha256(await readFile(join(view, fnvs[1]!))), tensors[1]!.sha256);
    t.deepEqual(await names(otherView), [], 'another coordinator\'s session on the same host links none of them');
    t.deepEqual(await names(join(fixture.cacheDir, 'rpc')), [], 'nor does the shared cache of seeded tensors');

    session.end('done');
    await waitFor(async () => !await exists(dirname(view)), 10_000, 20);
    t.deepEqual(await names(fixture.storeDir), [...storeNames].sort(), 'the store keeps them for later sessions');
    t.true(await exists(otherView), 'the other session\'s view stays');
    otherSession.end('done');
});

test.serial('the coordinator hears the fetch\'s progress, growing, before it ends', async (t) => {
    const source = await serveSource(t);
    const coordinator = shardProtocol();
    const fixture = await hosting(t, 'fetch-progress', [coordinator]);
    const {session} = await openSession(fixture, coordinator);
    source.hold(true);
    const progress: FetchProgress[] = [];
    const fetching = session.fetch(FETCH, (report) => progress.push(report));
    await waitFor(() => progress.length >= 1 && source.requests.length === 3, 10_000, 20);
    // The host reports at most every 500 ms (shard-protocol.ts): the bytes arrive after that window.
    await sleep(600);
    source.hold(false);
    const outcome = await fetching;
    t.like(outcome, {stored: 3, failed: 0, downloadedBytes: TOTAL});
    t.true(progress.length >= 2, `reports: ${JSON.stringify(progress)}`);
    t.is(progress[0]!.doneBytes, 0);
    t.true(progress.every((report) => report.totalBytes === TOTAL));
    t.true(progress.every((report, index) => index === 0 || report.doneBytes >= progress[index - 1]!.doneBytes), 'never shrinks');
    t.true(progress.at(-1)!.doneBytes > 0);
    t.true(progress.every((report) => report.doneBytes <= TOTAL));
});

test.serial('fetches the host must refuse are answered "not fetched" with the reason; the session and the connection carry on', async (t) => {
    const source = await serveSource(t);
    const coordinator = shardProtocol();
    const raw = new RawShardPeer(DOMAIN);
    const fixture = await hosting(t, 'fetch-refusals', [coordinator, raw]);
    const {session, view} = await openSession(fixture, coordinator);
    const small = digestOf('blk.2.attn_q.weight', 30 * MiB, HASH_THRESHOLD_BYTES);
    const refusals: [string, FetchRequest, ReturnType<typeof notFetched>][] = [
        ['another model than the session\'s', {...FETCH, model: sha256(Buffer.from('another model'))},
            notFetched(3, /^the fetch names another model file than the session$/)],
        ['more bytes than the session holds', {...FETCH, tensors: [...tensors, ...tensors]},
            notFetched(6, new RegExp(`^the session's fetches ask for ${6 * TENSOR_BYTES} bytes; it holds at most ${SESSION.bytes}$`))],
        ['a tensor of 10 MiB, which ggml-rpc sends whole', {...FETCH, tensors: [...tensors, small]},
            notFetched(4, /^tensors of 10485760 bytes or less are sent whole by ggml-rpc/)],
        ['a plain URL on a private address', {...FETCH, source: source.url},
            notFetched(3, /^3 tensor\(s\) not fetched: blk\.\d\.ffn_up\.weight: 127\.0\.0\.1 is a private address: refused/)]
    ];
    for (const [what, request, check] of refusals) {
        check(t, await session.fetch(request));
        t.is(source.requests.length, 0, `${what}: nothing was asked of the source`);
        t.deepEqual(await names(view), [], `${what}: nothing linked`);
    }

    // Five at once from one peer, a spare's among them: the fifth is refused while the others wait on the source.
    source.hold(true);
    const running = [session.fetch(FETCH), session.fetch(FETCH), coordinator.prefetch(fixture.hostNode.id, FETCH), session.fetch(FETCH)];
    notFetched(3, /^at most 4 fetches per peer at once$/)(t, await session.fetch(FETCH));
    await waitFor(() => source.requests.length === 3, 10_000, 20);
    source.hold(false);
    const outcomes = await Promise.all(running);
    t.true(outcomes.every((outcome) => outcome.stored === 3 && outcome.failed === 0), JSON.stringify(outcomes));
    t.is(outcomes.reduce((sum, outcome) => sum + outcome.downloadedBytes, 0), TOTAL, 'each tensor downloaded once, the others found it stored');
    t.is(source.requests.length, 3);
    t.deepEqual(await names(view), [...fnvs].sort());

    // A fetch naming a session of another peer's connection, or none at all: nothing of this peer runs it.
    raw.sendFetch({...FETCH, fetch: 1, session: session.id});
    raw.sendFetch({...FETCH, fetch: 2, session: 99});
    for (const id of [1, 2])
        t.like(await raw.fetched(id), {stored: 0, failed: 3, downloadedBytes: 0, bytesPerSecond: null, reason: 'no such session'});
    // The raw peer stays connected, and its own session's fetch runs: the store had the tensors, and links them.
    raw.open(5, fixture.hostNode.id, SESSION);
    await raw.next(isReady(5));
    raw.sendFetch({...FETCH, fetch: 3, session: 5});
    t.like(await raw.fetched(3), {stored: 3, failed: 0, downloadedBytes: 0});
    t.is(fixture.hostNode.peers().length, 2);
    t.deepEqual(fixture.banned, []);

    // The coordinator's session and connection carry on too: another fetch, another session.
    t.like(await session.fetch(FETCH), {stored: 3, failed: 0, downloadedBytes: 0});
    const {session: second, view: secondView} = await openSession(fixture, coordinator);
    t.like(await second.fetch(FETCH), {stored: 3, failed: 0, downloadedBytes: 0});
    t.deepEqual(await names(secondView), [...fnvs].sort());
    t.is(source.requests.length, 3, 'nothing downloaded twice');
    session.end('done');
    second.end('done');
});

test.serial('a fetch id reused while it runs is a violation: that peer is cut off and its sessions end; the host and other peers\' sessions carry on', async (t) => {
    const source = await serveSource(t);
    const honest = shardProtocol();
    const raw = new RawShardPeer(DOMAIN);
    const fixture = await hosting(t, 'fetch-reused-id', [honest, raw]);
    const {session, view} = await openSession(fixture, honest);
    const before = new Set(await viewsOf(fixture));
    raw.open(7, fixture.hostNode.id, SESSION);
    raw.open(8, fixture.hostNode.id, SESSION);
    await raw.next(isReady(7));
    await raw.next(isReady(8));
    const rawViews = (await viewsOf(fixture)).filter((name) => !before.has(name));
    t.is(rawViews.length, 2);
    t.is(fixture.host.sessionCount, 3);

    source.hold(true);
    raw.sendFetch({...FETCH, fetch: 1, session: 7});
    await waitFor(() => source.requests.length === 3, 10_000, 20);
    raw.sendFetch({...FETCH, fetch: 1, session: 8});
    await waitFor(() => fixture.banned.length > 0, 10_000, 20);
    t.deepEqual(fixture.banned.map(({peerId}) => peerId), [raw.id]);
    t.regex(fixture.banned[0]!.reason, /layer fetch 1 sent twice/);
    t.false(fixture.hostNode.peers().some((peer) => peer.id === raw.id), 'the raw peer is disconnected');
    t.false(raw.received.some((message) => message.type === 'fetched'), 'neither fetch was answered');
    await waitFor(() => fixture.host.sessionCount === 1, 10_000, 20);
    await waitFor(async () => !(await Promise.all(rawViews.map((name) => exists(join(fixture.cacheDir, 'sessions', name))))).some(Boolean), 10_000, 20);

    // Its fetch was cut with it: nothing of it is kept (no byte had come), and the honest session fetches everything.
    source.hold(false);
    t.like(await session.fetch(FETCH), {stored: 3, failed: 0, downloadedBytes: TOTAL});
    t.deepEqual(await names(view), [...fnvs].sort());
    t.deepEqual(await names(fixture.storeDir), [...storeNames].sort());
    t.is(fixture.host.sessionCount, 1);
    session.end('done');
});

// One session's fetches of ever other ranges must not fill the host's disk: they are counted together.
test.serial('a session\'s fetches together stay within the bytes it asked for', async (t) => {
    await serveSource(t);
    const coordinator = shardProtocol();
    const fixture = await hosting(t, 'fetch-cumulative', [coordinator]);
    const {session, view} = await openSession(fixture, coordinator);
    t.like(await session.fetch(FETCH), {stored: 3, failed: 0});
    // The same ranges one byte on: to the host, three other tensors; a coordinator can name as many as it likes.
    const refused = await session.fetch({...FETCH, tensors: tensors.map((tensor) => digestOf(tensor.name, tensor.offset + 1, TENSOR_BYTES))});
    t.like(refused, {stored: 0, failed: 3, downloadedBytes: 0});
    t.regex(refused.reason ?? '', /the session's fetches ask for \d+ bytes; it holds at most \d+/);
    // Asking again for the tensors it has is no new cost.
    t.like(await session.fetch(FETCH), {stored: 3, failed: 0, downloadedBytes: 0});
    const linked = await bytesIn(view);
    t.true(linked <= SESSION.bytes, `the session's view holds ${linked} bytes`);
    t.true(await bytesIn(fixture.storeDir) <= SESSION.bytes, `the store holds ${await bytesIn(fixture.storeDir)} bytes`);
    session.end('done');
});

test.serial('a corrupted range is discarded: that tensor is named as failed and is neither stored nor linked', async (t) => {
    const source = await serveSource(t);
    const coordinator = shardProtocol();
    const fixture = await hosting(t, 'fetch-corrupt', [coordinator]);
    const {session, view} = await openSession(fixture, coordinator);
    const bad = tensors[1]!;
    source.corrupt(bad.offset + 1_000, bad.offset + 1_000);
    const outcome = await session.fetch(FETCH);
    t.like(outcome, {stored: 2, failed: 1, downloadedBytes: TOTAL});
    t.regex(outcome.reason ?? '', /^1 tensor\(s\) not fetched: blk\.1\.ffn_up\.weight: .*the source's bytes have SHA-256 [0-9a-f]{64}, not [0-9a-f]{64}/);
    t.deepEqual(await names(fixture.storeDir), [storeNames[0]!, storeNames[2]!].sort(), 'no file of the bad one, not even a partial');
    t.deepEqual(await names(view), [fnvs[0]!, fnvs[2]!].sort());
    session.end('done');
});

test.serial('a spare\'s prefetch fills the store without a session; a later session links those tensors with no download', async (t) => {
    const source = await serveSource(t);
    const coordinator = shardProtocol();
    const fixture = await hosting(t, 'fetch-spare', [coordinator]);
    const outcome = await coordinator.prefetch(fixture.hostNode.id, FETCH);
    t.like(outcome, {stored: 3, failed: 0, downloadedBytes: TOTAL});
    t.deepEqual(await names(fixture.storeDir), [...storeNames].sort());
    t.deepEqual(await viewsOf(fixture), [], 'no session, no view');
    t.is(fixture.host.sessionCount, 0);

    const {session, view} = await openSession(fixture, coordinator);
    t.deepEqual(await session.fetch(FETCH), {stored: 3, failed: 0, downloadedBytes: 0, bytesPerSecond: null});
    t.is(source.requests.length, 3, 'nothing asked of the source again');
    for (const [index, fnv] of fnvs.entries())
        t.is(await inode(join(view, fnv)), await inode(join(fixture.storeDir, storeNames[index]!)));
    session.end('done');
});

test.serial('a session that ends while its fetch runs stops it: requests end, the partial is kept, and a later fetch resumes it', async (t) => {
    const source = await serveSource(t);
    const coordinator = shardProtocol();
    const fixture = await hosting(t, 'fetch-abort', [coordinator]);
    const {session, view} = await openSession(fixture, coordinator);
    // The source hangs halfway through the first tensor; the other two get no byte.
    const [first] = tensors;
    const half = 5 * MiB;
    source.stallAt(first!.offset + half);
    const fetching = session.fetch(FETCH);
    const partial = join(fixture.storeDir, `.part-${first!.sha256}`);
    await waitFor(async () => (await stat(partial)).size === half, 10_000, 20);
    t.is(source.requests.length, 3);

    session.end('the stage is no longer needed');
    const error = await t.throwsAsync(fetching, {instanceOf: ShardSessionError});
    t.is(error.code, 'ended');
    // The host's download saw the abort: the other two partials held nothing and are gone, the first's half stays.
    const kept = [`.part-${first!.sha256}`, `.part-${first!.sha256}.owner`];
    await waitFor(async () => (await names(fixture.storeDir)).length === kept.length, 10_000, 20);
    t.deepEqual(await names(fixture.storeDir), kept);
    t.is((await stat(partial)).size, half);
    await waitFor(async () => !await exists(dirname(view)), 10_000, 20);
    t.is(fixture.host.sessionCount, 0);

    // Nothing more was asked meanwhile (the session's open takes a while); the next fetch resumes from the half.
    source.stallAt(undefined);
    const {session: again, view: againView} = await openSession(fixture, coordinator);
    t.is(source.requests.length, 3, 'the host stopped requesting');
    t.like(await again.fetch(FETCH), {stored: 3, failed: 0, downloadedBytes: TOTAL - half});
    t.deepEqual(source.requests.slice(3).map((request) => request.range).sort(),
        [rangeOf(first!, half), rangeOf(tensors[1]!), rangeOf(tensors[2]!)].sort());
    t.deepEqual(await names(fixture.storeDir), [...storeNames].sort());
    t.deepEqual(await names(againView), [...fnvs].sort());
    again.end('done');
});

test.serial('a hostile coordinator\'s blob for the same model, tensor name and offset reaches only its own session\'s view', async (t) => {
    const source = await serveSource(t);
    // Coordinator B says the model is A's, but its blk.0 is other bytes, served from its own source.
    const blob = randomBytes(TENSOR_BYTES);
    const hostileModel = Buffer.from(model);
    blob.copy(hostileModel, tensors[0]!.offset);
    const hostileSource = await serveFile(HF_PATH, hostileModel);
    t.teardown(() => hostileSource.close());
    const blobTensor = {...tensors[0]!, sha256: sha256(blob)};
    const blobFnv = new Fnv1a64().update(blob).hex();

    const a = shardProtocol();
    const b = shardProtocol();
    const fixture = await hosting(t, 'fetch-fnv', [a, b]);
    const {session: sessionA, view: viewA} = await openSession(fixture, a);
    t.like(await sessionA.fetch(FETCH), {stored: 3, failed: 0});
    const {session: sessionB, view: viewB} = await openSession(fixture, b);

    process.env.HF_ENDPOINT = hostileSource.origin;
    // A SHA-256 its source's bytes do not have: discarded.
    const unverified = await sessionB.fetch({...FETCH, tensors: [{...tensors[0]!, sha256: sha256(Buffer.from('other bytes'))}]});
    t.like(unverified, {stored: 0, failed: 1});
    t.regex(unverified.reason ?? '', /blk\.0\.ffn_up\.weight: .*SHA-256/);
    t.deepEqual(await names(viewB), []);
    // Its blob's own SHA-256: B gets what it vouched for, in its view only.
    t.like(await sessionB.fetch({...FETCH, tensors: [blobTensor]}), {stored: 1, failed: 0, downloadedBytes: TENSOR_BYTES});
    process.env.HF_ENDPOINT = source.origin;
    t.deepEqual(await names(viewB), [blobFnv]);
    const blobFile = join(fixture.storeDir, `${blobTensor.sha256}.${blobFnv}`);
    t.is(await inode(join(viewB, blobFnv)), await inode(blobFile));
    t.deepEqual(await names(viewA), [...fnvs].sort(), 'A\'s view is untouched');
    const inodesA = await Promise.all(fnvs.map((fnv) => inode(join(viewA, fnv))));
    t.false(inodesA.includes(await inode(blobFile)));

    // A crafted FNV-1a collision (a file in the store under A's hash with other bytes, as one would be once
    // downloaded) reaches B's view under that hash, and never A's or a later session's: views link by SHA-256.
    const colliding = randomBytes(TENSOR_BYTES);
    const collidingFile = join(fixture.storeDir, `${sha256(colliding)}.${fnvs[0]}`);
    await writeFile(collidingFile, colliding);
    t.like(await sessionB.fetch({...FETCH, tensors: [{...tensors[0]!, sha256: sha256(colliding)}]}), {stored: 1, failed: 0, downloadedBytes: 0});
    t.is(await inode(join(viewB, fnvs[0]!)), await inode(collidingFile));
    t.is(await inode(join(viewA, fnvs[0]!)), inodesA[0]!);
    t.is(sha256(await readFile(join(viewA, fnvs[0]!))), tensors[0]!.sha256);
    const {session: laterA, view: laterView} = await openSession(fixture, a);
    t.like(await laterA.fetch(FETCH), {stored: 3, failed: 0, downloadedBytes: 0});
    t.deepEqual(await Promise.all(fnvs.map((fnv) => inode(join(laterView, fnv)))), inodesA);
    t.is(hostileSource.requests.length, 2, 'B\'s source served its two fetches');
    for (const session of [sessionA, sessionB, laterA])
        session.end('done');
});

/**
 * `count` tensors already in the store, as verified downloads are named (`<sha256>.<fnv>`), each a sparse file of
 * `TENSOR_BYTES`: a fetch naming them downloads nothing, and only links them. Their digests, for that fetch.
 */
async function storedStandIns(storeDir: string, count: number) {
    await mkdir(storeDir, {recursive: true});
    const digests: TensorDigest[] = [];
    for (let index = 0; index < count; index++) {
        const digest = {name: `blk.${index}.ffn_up.weight`, offset: 0, bytes: TENSOR_BYTES, sha256: randomBytes(32).toString('hex')};
        const file = await open(join(storeDir, `${digest.sha256}.${randomBytes(8).toString('hex')}`), 'w');
        await file.truncate(TENSOR_BYTES);
        await file.close();
        digests.push(digest);
    }
    return digests;
}

// A session ended while its tensors were being linked into its view once crashed the host: the view's removal met
// the links still being made (ENOTEMPTY, unhandled). The view now waits for them, and its removal never throws.
test.serial('a session that ends while its fetch\'s tensors are being linked goes cleanly: no unhandled rejection, its view is removed, the host serves on', async (t) => {
    const source = await serveSource(t);
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown) => rejections.push(reason);
    process.on('unhandledRejection', onRejection);
    t.teardown(() => process.off('unhandledRejection', onRejection));
    const coordinator = shardProtocol();
    // As many tensors as one fetch may name, all in the store already: the fetch is one link after another.
    const bytes = MAX_FETCH_TENSORS * TENSOR_BYTES;
    const fixture = await hosting(t, 'fetch-end-linking', [coordinator], {maxBytes: bytes});
    const {session, view} = await openSession(fixture, coordinator, {...SESSION, bytes});
    // Put there after the open, whose pruning would have taken them.
    const present = await storedStandIns(fixture.storeDir, MAX_FETCH_TENSORS);

    const fetching = session.fetch({...FETCH, tensors: present});
    await waitFor(async () => (await names(view)).length > 0, 30_000, 1);
    session.end('the stage is no longer needed');
    const error = await t.throwsAsync(fetching, {instanceOf: ShardSessionError});
    t.is(error.code, 'ended');
    await waitFor(async () => !await exists(dirname(view)), 30_000, 20);
    // The host's fetch went on to its end: the store, pruned after it, is back within the cache's limit.
    await waitFor(async () => await bytesIn(fixture.storeDir) <= CACHE_MAX_BYTES, 30_000, 100);
    t.deepEqual(rejections, []);
    t.deepEqual(await viewsOf(fixture), [], 'no view is left behind');
    t.is(fixture.host.sessionCount, 0);
    t.is(source.requests.length, 0, 'nothing was downloaded');

    // The host serves on: a new session downloads and links its tensors.
    const {session: next, view: nextView} = await openSession(fixture, coordinator);
    t.like(await next.fetch(FETCH), {stored: 3, failed: 0, downloadedBytes: TOTAL});
    t.deepEqual(await names(nextView), [...fnvs].sort());
    t.deepEqual(rejections, []);
    next.end('done');
});

test.serial('a peer that had a host download twice the room it offers within the hour is refused with the reason; another peer is still served', async (t) => {
    const source = await serveSource(t);
    const greedy = shardProtocol();
    const other = shardProtocol();
    // Room for two tensors: a peer may have four downloaded in the hour, all peers together eight.
    const room = 2 * TENSOR_BYTES;
    const fixture = await hosting(t, 'fetch-peer-budget', [greedy, other], {maxBytes: room});
    // Six other tensors of the file, in pairs: a spare's fetch of each pair fills the room.
    const pairs = [0, 1, 2].map((pair) => [0, 1].map((index) => {
        const tensor = 2 * pair + index;
        return digestOf(`blk.${tensor}.ffn_gate.weight`, tensor * 3 * MiB + 5, TENSOR_BYTES);
    }));
    for (const pair of pairs.slice(0, 2))
        t.like(await greedy.prefetch(fixture.hostNode.id, {...FETCH, tensors: pair}), {stored: 2, failed: 0, downloadedBytes: room});
    t.is(source.requests.length, 4);

    const refused = await greedy.prefetch(fixture.hostNode.id, {...FETCH, tensors: pairs[2]!});
    notFetched(2, new RegExp(`^this node downloaded ${2 * room} bytes for this peer and ${2 * room} for all in the last hour: no more for now$`))(t, refused);
    t.is(source.requests.length, 4, 'nothing was asked of the source for it');

    // Another peer has its own share (and all peers' together is not reached): the same tensors are downloaded for it.
    t.like(await other.prefetch(fixture.hostNode.id, {...FETCH, tensors: pairs[2]!}), {stored: 2, failed: 0, downloadedBytes: room});
    t.deepEqual(source.requests.slice(4).map((request) => request.range).sort(), pairs[2]!.map((tensor) => rangeOf(tensor)).sort());
    t.is(fixture.hostNode.peers().length, 2, 'a refusal is no violation: both peers stay connected');
    t.deepEqual(fixture.banned, []);
});

test.serial('a tensor that failed its SHA-256 is not asked of the same source again for a while: it is reported as failed lately', async (t) => {
    const source = await serveSource(t);
    const coordinator = shardProtocol();
    const other = shardProtocol();
    const fixture = await hosting(t, 'fetch-failed-lately', [coordinator, other]);
    const {session, view} = await openSession(fixture, coordinator);
    const bad = tensors[1]!;
    source.corrupt(bad.offset + 1_000, bad.offset + 1_000);
    t.like(await session.fetch(FETCH), {stored: 2, failed: 1, downloadedBytes: TOTAL});
    t.is(source.requests.length, 3);

    const failedLately = /^1 tensor\(s\) not fetched: blk\.1\.ffn_up\.weight: failed lately, not tried again for now \(blk\.1\.ffn_up\.weight: .*the source's bytes have SHA-256 [0-9a-f]{64}, not [0-9a-f]{64}.*\)$/;
    const again = await session.fetch(FETCH);
    t.like(again, {stored: 2, failed: 1, downloadedBytes: 0});
    t.regex(again.reason ?? '', failedLately);
    // The host remembers it for every peer: another peer's spare fetch of it is not tried either.
    const spare = await other.prefetch(fixture.hostNode.id, {...FETCH, tensors: [bad]});
    t.like(spare, {stored: 0, failed: 1, downloadedBytes: 0, bytesPerSecond: null});
    t.regex(spare.reason ?? '', failedLately);
    t.is(source.requests.length, 3, 'the source saw no second request');
    t.is(source.requests.filter((request) => request.range === rangeOf(bad)).length, 1);
    t.deepEqual(await names(view), [fnvs[0]!, fnvs[2]!].sort());

    // What is remembered is that source's failure: the tensor named with another source is tried (and fails again here).
    const elsewhere = await session.fetch({...FETCH, source: `${SOURCE}#main`, tensors: [bad]});
    t.like(elsewhere, {stored: 0, failed: 1, downloadedBytes: TENSOR_BYTES});
    t.regex(elsewhere.reason ?? '', /blk\.1\.ffn_up\.weight: .*the source's bytes have SHA-256/);
    t.notRegex(elsewhere.reason ?? '', /failed lately/);
    t.is(source.requests.length, 4);
    session.end('done');
});

test.serial('a host that does not fetch layers (--fetch-layers off) answers every fetch "not fetched" and offers no downloads', async (t) => {
    const source = await serveSource(t);
    const coordinator = shardProtocol();
    const fixture = await hosting(t, 'fetch-off', [coordinator], {fetch: false});
    t.is(fixture.host.fetchOffer, undefined, 'coordinators are told it does not download');
    const {session, view} = await openSession(fixture, coordinator);
    const off = notFetched(3, /^this node does not download layers from models' sources$/);
    off(t, await session.fetch(FETCH));
    off(t, await coordinator.prefetch(fixture.hostNode.id, FETCH));
    t.is(source.requests.length, 0);
    t.deepEqual(await names(view), []);
    t.deepEqual(await names(fixture.storeDir), []);
    t.is(fixture.host.sessionCount, 1, 'the session carries on: its weights come from the coordinator');
    t.deepEqual(fixture.banned, []);
    session.end('done');
});
