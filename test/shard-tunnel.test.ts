import {once} from 'node:events';
import {mkdir, mkdtemp, rm, writeFile} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import test from 'ava';
import crypto from 'hypercore-crypto';
import type {Testnet} from 'hyperdht/testnet.js';
import {prepareRpcServerDir} from '../engine/rpc/rpc-server-dir.js';
import {probeSandbox} from '../engine/rpc/rpc-sandbox.js';
import {ShardHost} from '../inference/sharded/shard-host.js';
import {GGML_OP_NAMES, GgmlType} from '../inference/sharded/tunnel/ggml/ggml-tables.js';
import {RPC_TENSOR_BYTES, type RpcTensor, writeRpcTensor} from '../inference/sharded/tunnel/ggml/rpc-tensor.js';
import {RpcCommand} from '../inference/sharded/tunnel/rpc-stream.js';
import {encodeData, type ShardControl} from '../inference/sharded/tunnel/shard-messages.js';
import {type SessionRequest, ShardProtocol, type ShardProtocolOptions, type CoordinatorSession} from '../inference/sharded/tunnel/shard-protocol.js';
import type {PeerProtocol} from '../swarm/peer-protocol.js';
import type {SwarmNode} from '../swarm/swarm-node.js';
import {waitFor} from '../harness/cli-process.js';
import {GraphBuilder, type LabBuffer, RpcLabClient} from '../harness/rpc-lab.js';
import {RawShardPeer} from '../harness/raw-shard-peer.js';
import {TEST_RPC_DIR, testRpcBinaries} from '../harness/rpc-binaries.js';
import {nodeIdentity, startTestnet, testSwarmNode} from '../harness/swarm-fixture.js';

/**
 * The shard tunnel between real swarm nodes and a real rpc server (docs/peer-protocol.md, "Shard channel"): what a
 * peer outside a session, or a hostile coordinator, can and cannot do to a host.
 */

let testnet: Testnet;
let host: ShardHost;
/** The host's log lines, as the node logs them. */
const hostLog: {message: string, fields: Record<string, unknown>}[] = [];
let cacheDir: string;
const nodes: SwarmNode[] = [];
/** The signing domain of every node here. */
const DOMAIN = {network: 'test', chainId: 31337};
/** Each protocol's node key: a shard protocol signs with its node's. */
const keys = new WeakMap<PeerProtocol, ReturnType<typeof crypto.keyPair>>();

/** A shard protocol for a node of its own, with its key. */
function shardProtocol(options: Omit<ShardProtocolOptions, 'identity' | 'domain'> = {}) {
    const keyPair = crypto.keyPair();
    const protocol = new ShardProtocol({identity: {id: keyPair.publicKey.toString('hex'), secretKey: keyPair.secretKey}, domain: DOMAIN, ...options});
    keys.set(protocol, keyPair);
    return protocol;
}

/** A session request of a 4-layer model. */
function request(layers: [number, number], bytes: number): SessionRequest {
    return {model: {id: 'demo', bytes: 1024, sha256: null}, layers, layerCount: 4, sequences: 1, bytes};
}

test.before(async () => {
    ({testnet} = await startTestnet());
    const files = await prepareRpcServerDir(await testRpcBinaries());
    cacheDir = await mkdtemp(join(tmpdir(), 'strongdoge-tensors-'));
    // As a node on the public network hosts: every server in the sandbox.
    const sandbox = await probeSandbox({launcherDir: TEST_RPC_DIR});
    if (!sandbox.available)
        throw new Error(`the sandbox does not work here: ${sandbox.reason}`);
    host = new ShardHost({runtime: () => ({binaries: files, sandbox}), maxBytes: 64 * 2 ** 20, threads: 1, cacheDir, cacheMaxBytes: 2 ** 30,
        onLog: (message, fields) => hostLog.push({message, fields})});
});

test.after.always(async () => {
    await host?.stop();
    await Promise.all(nodes.map((node) => node.stop()));
    await testnet?.destroy();
    await rm(cacheDir, {recursive: true, force: true});
});

function swarmNode(network: string, protocol: PeerProtocol) {
    const keyPair = keys.get(protocol) ?? crypto.keyPair();
    const node = testSwarmNode(testnet.bootstrap, network, {identity: nodeIdentity(keyPair)});
    node.use(protocol);
    nodes.push(node);
    return node;
}

/** A raw peer of this test's domain, its node signing with its key. */
function rawShardPeer() {
    const peer = new RawShardPeer(DOMAIN);
    keys.set(peer, peer.keyPair);
    return peer;
}

/** ggml-rpc's HELLO: command 14, an 8-byte size, then 24 bytes of transport capabilities. */
function hello() {
    const frame = Buffer.alloc(1 + 8 + 24);
    frame[0] = RpcCommand.HELLO;
    frame.writeBigUInt64LE(24n, 1);
    return frame;
}

/** Sends a HELLO through a coordinator's session and resolves with the server's reply (8-byte size, then 28 bytes). */
async function helloThrough(session: CoordinatorSession) {
    const stream = session.connect();
    const reply: Buffer[] = [];
    const complete = new Promise<Buffer>((resolve, reject) => {
        stream.on('data', (bytes) => {
            reply.push(bytes);
            const all = Buffer.concat(reply);
            if (all.length >= 8 + 28)
                resolve(all);
        });
        stream.on('close', (reason) => reject(new Error(`stream closed: ${reason}`)));
    });
    stream.write(hello());
    const bytes = await complete;
    stream.close('done');
    return bytes;
}

async function connected(network: string, hosting: PeerProtocol, ...others: PeerProtocol[]) {
    const hostNode = swarmNode(network, hosting);
    const peers = others.map((protocol) => swarmNode(network, protocol));
    const joined = Promise.all(peers.map((peer) => once(peer, 'peerJoined')));
    await Promise.all([hostNode, ...peers].map((node) => node.start()));
    await joined;
    await waitFor(async () => hostNode.peers().length === peers.length, 10_000, 20);
    return {hostNode, peers};
}

test.serial('a coordinator reaches its session\'s rpc server through the tunnel; a peer outside the session cannot', async (t) => {
    const outsider = rawShardPeer();
    const coordinatorProtocol = shardProtocol();
    const {hostNode, peers: [coordinatorNode]} = await connected('tunnel-outsider', shardProtocol({host}), coordinatorProtocol, outsider);
    const session = await coordinatorProtocol.openSession(hostNode.id, request([0, 3], 1024));
    t.is(host.sessionCount, 1);

    const reply = await helloThrough(session);
    t.is(reply.readBigUInt64LE(0), 28n, 'a HELLO reply of 28 bytes');
    t.is(reply[8], 6, 'protocol major version 6');

    // The outsider names the coordinator's session and stream ids on its own channel: nothing serves them.
    await outsider.attached();
    outsider.send({type: 'connect', session: session.id, stream: 1});
    outsider.sendData(encodeData(1, hello()));
    await waitFor(async () => outsider.received.length > 0, 5_000, 20);
    t.deepEqual(outsider.received[0], {type: 'closed', stream: 1, reason: 'no such session'});
    t.is(outsider.data.length, 0, 'no byte of the rpc server reached the outsider');

    // The coordinator's session is untouched.
    t.is((await helloThrough(session))[8], 6);
    t.truthy(coordinatorNode);
    session.end('done');
    await waitFor(async () => host.sessionCount === 0, 5_000, 20);
});

test.serial('a hostile coordinator sending garbage ends only its own session; the host and other sessions carry on', async (t) => {
    const hostile = rawShardPeer();
    const honestProtocol = shardProtocol();
    const {hostNode} = await connected('tunnel-hostile', shardProtocol({host}), honestProtocol, hostile);
    const honest = await honestProtocol.openSession(hostNode.id, request([0, 1], 1024));

    await hostile.attached();
    hostile.open(7, hostNode.id, request([0, 1], 1024));
    await waitFor(async () => hostile.received.some((message) => message.type === 'ready'), 10_000, 20);
    t.is(host.sessionCount, 2);
    hostile.send({type: 'connect', session: 7, stream: 1});
    // Not a HELLO: an unknown command byte, then junk.
    hostile.sendData(encodeData(1, Buffer.from([0xee, ...Buffer.alloc(64, 0x41)])));
    await waitFor(async () => hostile.received.some((message) => message.type === 'ended'), 10_000, 20);
    const ended = hostile.received.find((message) => message.type === 'ended') as Extract<ShardControl, {type: 'ended'}>;
    t.is(ended.session, 7);
    t.regex(ended.reason, /RPC stream broke the protocol/);
    await waitFor(async () => host.sessionCount === 1, 5_000, 20);

    // The honest session, and the host, carry on.
    t.is((await helloThrough(honest))[8], 6);
    honest.end('done');
});

test.serial('a host that does not host layers refuses sessions with its reason', async (t) => {
    const coordinatorProtocol = shardProtocol();
    const {hostNode} = await connected('tunnel-refusing', shardProtocol(), coordinatorProtocol);
    const error = await t.throwsAsync(coordinatorProtocol.openSession(hostNode.id, request([0, 1], 1)));
    t.regex(error.message, /does not host layers/);
});

test.serial('a session asking more memory than the host offers is refused', async (t) => {
    const coordinatorProtocol = shardProtocol();
    const {hostNode} = await connected('tunnel-too-big', shardProtocol({host}), coordinatorProtocol);
    const error = await t.throwsAsync(coordinatorProtocol.openSession(hostNode.id, request([0, 1], 2 ** 40)));
    t.regex(error.message, /offers/);
});

test.serial('a message larger than the session said it would hold ends the session before the server reads it', async (t) => {
    const hostile = rawShardPeer();
    const {hostNode} = await connected('tunnel-oversized', shardProtocol({host}), hostile);
    await hostile.attached();
    hostile.open(3, hostNode.id, request([0, 1], 1024));
    await waitFor(async () => hostile.received.some((message) => message.type === 'ready'), 10_000, 20);
    hostile.send({type: 'connect', session: 3, stream: 1});
    // A SET_TENSOR announcing 1 GiB: the server would allocate it all before reading a byte of it.
    const header = Buffer.alloc(9);
    header[0] = RpcCommand.SET_TENSOR;
    header.writeBigUInt64LE(2n ** 30n, 1);
    hostile.sendData(encodeData(1, Buffer.concat([hello(), header])));
    await waitFor(async () => hostile.received.some((message) => message.type === 'ended'), 10_000, 20);
    const ended = hostile.received.find((message) => message.type === 'ended') as Extract<ShardControl, {type: 'ended'}>;
    t.regex(ended.reason, /RPC stream broke the protocol/);
    t.true(hostNode.peers().length === 1, 'the peer stays connected: only its session ended');
    await waitFor(async () => host.sessionCount === 0, 5_000, 20);
});

// A hostile coordinator (docs/peer-protocol.md, "Graph checks"): each attack in a session of its own, beside an honest
// session of another peer on the same host. The attack ends its session, with a log line naming the rule; the
// host, its other session and the attacker's connection carry on.

const MiB = 2 ** 20;
const SESSION = request([0, 1], 16 * MiB);

interface Attack {
    name: string,
    /** The rule the host's log line names; undefined when the server itself ends the session. */
    rule?: string,
    ended: RegExp,
    send(client: RpcLabClient, buffer: LabBuffer): Promise<unknown>
}

function graphOf(buffer: LabBuffer, build: (g: GraphBuilder) => RpcTensor[]) {
    const g = new GraphBuilder(buffer);
    return g.graph(build(g));
}

/** A node of `op` on a small f32 input, op_params as given. */
function opNode(op: string, params: number[] = []) {
    return (g: GraphBuilder) => {
        const x = g.tensor({type: GgmlType.F32, ne: [64, 4]});
        const node = g.tensor({type: GgmlType.F32, ne: [64, 4], src: [x], params});
        node.op = GGML_OP_NAMES.indexOf(op as typeof GGML_OP_NAMES[number]);
        node.flags = 16;
        return [node];
    };
}

const POINTER = [0x41414141, 0x4141];
const attacks: Attack[] = [
    {name: 'a GGML_OP_CUSTOM node with a pointer in op_params', rule: 'op', ended: /op CUSTOM, which a host never runs/,
        send: (client, buffer) => client.graphCompute(graphOf(buffer, opNode('CUSTOM', POINTER)))},
    ...['MAP_CUSTOM1', 'MAP_CUSTOM2', 'MAP_CUSTOM3'].map((op): Attack => ({name: `a ${op} node with a pointer in op_params`, rule: 'op',
        ended: new RegExp(`op ${op}, which a host never runs`), send: (client, buffer) => client.graphCompute(graphOf(buffer, opNode(op, POINTER)))})),
    ...['OPT_STEP_ADAMW', 'CROSS_ENTROPY_LOSS', 'CONV_TRANSPOSE_2D'].map((op): Attack => ({name: `an op outside the allowlist (${op})`, rule: 'op',
        ended: new RegExp(`op ${op}, which a host never runs`), send: (client, buffer) => client.graphCompute(graphOf(buffer, opNode(op)))})),
    {name: 'an op number ggml does not have', rule: 'op', ended: /op 200, which a host never runs/,
        send: (client, buffer) => client.graphCompute(graphOf(buffer, (g) => {
            const [node] = opNode('ADD')(g);
            node!.op = 200;
            return [node!];
        }))},
    {name: 'a GRAPH_COMPUTE larger than any graph the checks allow (it would be held whole)', rule: 'size', ended: /GRAPH_COMPUTE of 52428800 bytes, more than a graph of 65536 nodes/,
        send: async (client) => {
            const header = Buffer.alloc(9);
            header[0] = RpcCommand.GRAPH_COMPUTE;
            header.writeBigUInt64LE(50n * BigInt(MiB), 1);
            client.stream.write(header);
        }},
    {name: 'a source outside the graph', rule: 'sources', ended: /source 1 is not an earlier tensor/,
        send: (client, buffer) => client.graphCompute(graphOf(buffer, (g) => {
            const x = g.tensor({type: GgmlType.F32, ne: [64, 4]});
            const node = g.tensor({type: GgmlType.F32, ne: [64, 4], op: 'ADD', src: [x, x]});
            node.src[1] = 0x4242n;
            return [node];
        }))},
    {name: 'a view reaching beyond its source', rule: 'view', ended: /reaches beyond its view source/,
        send: (client, buffer) => client.graphCompute(graphOf(buffer, (g) => {
            const x = g.tensor({type: GgmlType.F32, ne: [64, 4]});
            g.tensor({type: GgmlType.F32, ne: [1024]}); // bytes after x, in the same buffer
            const view = g.tensor({type: GgmlType.F32, ne: [64, 8], op: 'VIEW', src: [x], view: {of: x}});
            return [view];
        }))},
    {name: 'a tensor whose bytes lie outside its buffer', rule: 'bounds', ended: /reach outside its buffer/,
        send: (client, buffer) => client.graphCompute(graphOf(buffer, (g) => {
            const [node] = opNode('SQR')(g);
            node!.data = buffer.base + buffer.size - 16n;
            return [node!];
        }))},
    {name: 'a buffer of another session', rule: 'buffer', ended: /names a buffer this session did not allocate/,
        send: async (client, buffer) => client.graphCompute(graphOf({...buffer, handle: otherSessionBuffer!.handle, base: otherSessionBuffer!.base}, opNode('SQR')))},
    {name: 'an ALLOC_BUFFER beyond the session\'s bytes (64 GiB of a 16 MiB session)', rule: 'budget', ended: /ALLOC_BUFFER of 68719476736 bytes/,
        send: (client) => client.allocBuffer(64n * 2n ** 30n)},
    {name: 'ALLOC_BUFFERs that together exceed the session\'s bytes', rule: 'budget', ended: /the session has \d+ of its \d+ left/,
        send: async (client) => {
            for (let index = 0; index < 8; index++)
                await client.allocBuffer(8n * BigInt(MiB));
        }},
    {name: 'GRAPH_RECOMPUTE before any accepted graph', rule: 'recompute', ended: /GRAPH_RECOMPUTE without an accepted graph/,
        send: (client) => client.graphRecompute()},
    {name: 'GRAPH_RECOMPUTE after a buffer of the accepted graph was freed', rule: 'recompute', ended: /GRAPH_RECOMPUTE without an accepted graph/,
        send: async (client, buffer) => {
            const scratch = await client.buffer(BigInt(MiB));
            await client.graphCompute(graphOf(scratch, opNode('SQR')));
            await client.freeBuffer(scratch.handle);
            await client.graphRecompute();
            return buffer;
        }},
    {name: 'a SET_TENSOR_HASH of a cached tensor larger than the tensor it is loaded into', rule: 'bounds',
        ended: /SET_TENSOR_HASH reaches outside its tensor's 256 bytes \(65536 bytes at offset 0\)/,
        send: async (client, buffer) => {
            const g = new GraphBuilder(buffer);
            const small = g.tensor({type: GgmlType.F32, ne: [64]});
            const payload = Buffer.alloc(RPC_TENSOR_BYTES + 16);
            writeRpcTensor(small, payload);
            payload.writeBigUInt64LE(CACHED_HASH, RPC_TENSOR_BYTES + 8);
            return client.request(RpcCommand.SET_TENSOR_HASH, payload, 1);
        }},
    {name: 'hostile tensor contents: row indices out of range for GET_ROWS (the kernel\'s own check aborts the server)', ended: /the rpc server exited \(SIGABRT\)/,
        send: async (client, buffer) => {
            const g = new GraphBuilder(buffer);
            const rows = g.tensor({type: GgmlType.F32, ne: [64, 4]});
            const indices = g.tensor({type: GgmlType.I32, ne: [2]});
            const picked = g.tensor({type: GgmlType.F32, ne: [64, 2], op: 'GET_ROWS', src: [rows, indices]});
            await client.setTensor(indices, Buffer.from(new Int32Array([1, 1_000_000]).buffer));
            return client.graphCompute(g.graph([picked]));
        }}
];

/** A tensor this host's cache holds (as if seeded from its own copy of a model): 64 KiB. */
const CACHED_HASH = 0x0123456789abcdefn;

/** A buffer the honest session allocated: the one attack names it from another session. */
let otherSessionBuffer: LabBuffer | undefined;

test.serial('a hostile coordinator\'s graphs and buffers end only its own session, each with a log line naming the rule', async (t) => {
    const hostileProtocol = shardProtocol();
    const honestProtocol = shardProtocol();
    await mkdir(join(cacheDir, 'rpc'), {recursive: true});
    await writeFile(join(cacheDir, 'rpc', CACHED_HASH.toString(16).padStart(16, '0')), Buffer.alloc(65_536));
    const {hostNode} = await connected('tunnel-hostile-graphs', shardProtocol({host}), honestProtocol, hostileProtocol);
    const honest = await honestProtocol.openSession(hostNode.id, SESSION);
    const honestClient = new RpcLabClient(honest.connect());
    t.is(await honestClient.hello(), 6);
    otherSessionBuffer = await honestClient.buffer(BigInt(MiB));
    for (const attack of attacks) {
        const session = await hostileProtocol.openSession(hostNode.id, SESSION);
        const ended = new Promise<string>((resolve) => session.once('ended', resolve));
        const client = new RpcLabClient(session.connect());
        t.is(await client.hello(), 6, attack.name);
        const buffer = await client.buffer(BigInt(MiB));
        const logged = hostLog.length;
        await attack.send(client, buffer).catch(() => undefined);
        const reason = await Promise.race([ended, new Promise<string>((resolve) => setTimeout(() => resolve('(not ended)'), 10_000))]);
        t.regex(reason, attack.ended, attack.name);
        if (attack.rule !== undefined) {
            const line = hostLog.slice(logged).find((entry) => entry.message.includes('broke the RPC protocol'));
            t.is(line?.fields.rule, attack.rule, `${attack.name}: the host's log line names the rule`);
        }
        // Only that session ended: the honest one answers, the attacker stays connected, the host hosts.
        t.true(await honestClient.alive(), `${attack.name}: the other session carries on`);
        t.is(hostNode.peers().length, 2, `${attack.name}: the attacker stays connected`);
        await waitFor(async () => host.sessionCount === 1, 5_000, 20);
    }
    t.true(hostLog.some((entry) => entry.message === 'hosting layers for a peer' && entry.fields.sandbox === 'bubblewrap'), 'the servers ran in the sandbox');
    honest.end('done');
    await waitFor(async () => host.sessionCount === 0, 5_000, 20);
});
