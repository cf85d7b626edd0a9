import test, {type ExecutionContext} from 'ava';
import {Prng} from '../engine/demo/prng.js';
import {
    DEFAULT_MAX_PAYLOAD_BYTES, type DeviceMemory, RPC_CONN_CAPS_BYTES, RPC_PROTO_MAJOR_VERSION, RPC_TENSOR_BYTES, RpcCommand,
    type RpcCommandName, RpcSession, type RpcSessionOptions, RpcViolation, type RpcViolationCode
} from '../inference/sharded/tunnel/rpc-stream.js';

// Frames are built here field by field from ggml-rpc v6.0.0's packed structs (`rpc_tensor`, `rpc_msg_*`), independently
// of the codec's own size table, so that a wrong size in either shows.

/** Field sizes of `rpc_tensor`: id, type, buffer, ne[4], nb[4], op, op_params[16], flags, src[10], view_src, view_offs, data, name[64], use_count. */
const TENSOR_FIELD_BYTES = [8, 4, 8, 4 * 4, 4 * 4, 4, 16 * 4, 4, 10 * 8, 8, 8, 8, 64, 4];
const GGML_MAX_SRC = 10;

/** Packed little-endian struct writer. */
class Struct {
    private readonly parts: Buffer[] = [];
    u8(value: number) {
        this.parts.push(Buffer.from([value]));
        return this;
    }
    u32(value: number) {
        const part = Buffer.alloc(4);
        part.writeUInt32LE(value);
        this.parts.push(part);
        return this;
    }
    u64(value: bigint | number) {
        const part = Buffer.alloc(8);
        part.writeBigUInt64LE(BigInt(value));
        this.parts.push(part);
        return this;
    }
    bytes(value: Uint8Array) {
        this.parts.push(Buffer.from(value));
        return this;
    }
    done() {
        return Buffer.concat(this.parts);
    }
}

/** Seeded PRNG (mulberry32): the same chunkings on every run. */
function prng(seed: number) {
    const generator = new Prng(seed);
    return () => generator.next();
}

function patterned(length: number, seed: number) {
    const random = prng(seed);
    const bytes = Buffer.alloc(length);
    for (let i = 0; i < length; i++)
        bytes[i] = Math.floor(random() * 256);
    return bytes;
}

/** A serialized tensor with every field set, name included. */
function tensor(seed: number) {
    const struct = new Struct().u64(0x7f00_0000_0000n + BigInt(seed)).u32(seed % 40).u64(0x5500_0000n + BigInt(seed));
    for (let i = 0; i < 4; i++)
        struct.u32(seed + i + 1);
    for (let i = 0; i < 4; i++)
        struct.u32(4 << i);
    struct.u32(seed % 90).bytes(patterned(16 * 4, seed)).u32(seed & 1);
    for (let i = 0; i < GGML_MAX_SRC; i++)
        struct.u64(i < 2 ? seed * 100 + i : 0);
    const name = Buffer.alloc(64);
    name.write(`blk.${seed}.ffn_up.weight`);
    return struct.u64(0).u64(0).u64(0x6000_0000n + BigInt(seed)).bytes(name).u32(seed % 3).done();
}

const caps = (fill: number) => Buffer.alloc(RPC_CONN_CAPS_BYTES, fill);

const payloads = {
    hello: (connCaps: Buffer) => new Struct().bytes(connCaps).done(),
    helloReply: (major: number, minor: number, patch: number, connCaps: Buffer) => new Struct().u8(major).u8(minor).u8(patch).u8(0).bytes(connCaps).done(),
    deviceCountReply: (count: number) => new Struct().u32(count).done(),
    allocBuffer: (device: number, size: bigint) => new Struct().u32(device).u64(size).done(),
    allocBufferReply: (pointer: bigint, size: bigint) => new Struct().u64(pointer).u64(size).done(),
    device: (device: number) => new Struct().u32(device).done(),
    u64: (value: bigint) => new Struct().u64(value).done(),
    bufferClear: (pointer: bigint, value: number) => new Struct().u64(pointer).u8(value).done(),
    memsetTensor: (seed: number, offset: bigint, size: bigint, value: number) => new Struct().bytes(tensor(seed)).u64(offset).u64(size).u8(value).done(),
    setTensor: (seed: number, offset: bigint, data: Uint8Array) => new Struct().bytes(tensor(seed)).u64(offset).bytes(data).done(),
    setTensorHash: (seed: number, offset: bigint, hash: bigint) => new Struct().bytes(tensor(seed)).u64(offset).u64(hash).done(),
    getTensor: (seed: number, offset: bigint, size: bigint) => new Struct().bytes(tensor(seed)).u64(offset).u64(size).done(),
    copyTensor: (src: number, dst: number) => new Struct().bytes(tensor(src)).bytes(tensor(dst)).done(),
    result: (value: number) => new Struct().u8(value).done(),
    graphCompute: (device: number, nodes: number, tensors: number) => {
        const struct = new Struct().u32(device).u32(nodes);
        for (let i = 0; i < nodes; i++)
            struct.u64(0x7f00_0000_0000n + BigInt(i));
        struct.u32(tensors);
        for (let i = 0; i < tensors; i++)
            struct.bytes(tensor(i));
        return struct.done();
    },
    deviceMemoryReply: (free: bigint, total: bigint) => new Struct().u64(free).u64(total).done(),
    initTensor: (seed: number) => tensor(seed),
    getAllocSize: (device: number, seed: number) => {
        const struct = new Struct().u32(device).bytes(tensor(seed));
        for (let i = 0; i < GGML_MAX_SRC; i++)
            struct.bytes(i < 2 ? tensor(seed + i + 1) : Buffer.alloc(RPC_TENSOR_BYTES));
        return struct.done();
    }
};

/** `sizeof` of each request struct, added up by hand from the header (variable ones: their least). */
const REQUEST_BYTES: Record<RpcCommandName, number> = {
    ALLOC_BUFFER: 12,
    GET_ALIGNMENT: 4,
    GET_MAX_SIZE: 4,
    BUFFER_GET_BASE: 8,
    FREE_BUFFER: 8,
    BUFFER_CLEAR: 9,
    SET_TENSOR: 304,
    SET_TENSOR_HASH: 312,
    GET_TENSOR: 312,
    COPY_TENSOR: 592,
    GRAPH_COMPUTE: 12,
    GET_DEVICE_MEMORY: 4,
    INIT_TENSOR: 296,
    GET_ALLOC_SIZE: 3260,
    HELLO: 24,
    DEVICE_COUNT: 0,
    GRAPH_RECOMPUTE: 4,
    MEMSET_TENSOR: 313
};
const VARIABLE: RpcCommandName[] = ['SET_TENSOR', 'GRAPH_COMPUTE'];
const DEVICE_COMMANDS: RpcCommandName[] = ['ALLOC_BUFFER', 'GET_ALIGNMENT', 'GET_MAX_SIZE', 'GRAPH_COMPUTE', 'GET_DEVICE_MEMORY', 'GET_ALLOC_SIZE', 'GRAPH_RECOMPUTE'];

function request(command: number, payload: Uint8Array, size: bigint = BigInt(payload.length)) {
    return new Struct().u8(command).u64(size).bytes(payload).done();
}

function reply(payload: Uint8Array, size: bigint = BigInt(payload.length)) {
    return new Struct().u64(size).bytes(payload).done();
}

/** A valid request of each command (device 0) with its reply, if any. */
function sample(name: RpcCommandName): {request: Buffer, reply?: Buffer} {
    const command = RpcCommand[name];
    switch (name) {
        case 'ALLOC_BUFFER': return {request: request(command, payloads.allocBuffer(0, 1n << 30n)), reply: reply(payloads.allocBufferReply(0x5500_0010n, 1n << 30n))};
        case 'GET_ALIGNMENT': return {request: request(command, payloads.device(0)), reply: reply(payloads.u64(32n))};
        case 'GET_MAX_SIZE': return {request: request(command, payloads.device(0)), reply: reply(payloads.u64(0xffff_ffffn))};
        case 'BUFFER_GET_BASE': return {request: request(command, payloads.u64(0x5500_0010n)), reply: reply(payloads.u64(0x6000_0000n))};
        case 'FREE_BUFFER': return {request: request(command, payloads.u64(0x5500_0010n))};
        case 'BUFFER_CLEAR': return {request: request(command, payloads.bufferClear(0x5500_0010n, 0xab))};
        case 'SET_TENSOR': return {request: request(command, payloads.setTensor(7, 64n, patterned(1000, 7)))};
        case 'SET_TENSOR_HASH': return {request: request(command, payloads.setTensorHash(8, 0n, 0xcbf2_9ce4_8422_2325n)), reply: reply(payloads.result(1))};
        case 'GET_TENSOR': return {request: request(command, payloads.getTensor(9, 16n, 777n)), reply: reply(patterned(777, 9))};
        case 'COPY_TENSOR': return {request: request(command, payloads.copyTensor(10, 11)), reply: reply(payloads.result(1))};
        case 'GRAPH_COMPUTE': return {request: request(command, payloads.graphCompute(0, 3, 5))};
        case 'GET_DEVICE_MEMORY': return {request: request(command, payloads.device(0)), reply: reply(payloads.deviceMemoryReply(7n << 30n, 8n << 30n))};
        case 'INIT_TENSOR': return {request: request(command, payloads.initTensor(12))};
        case 'GET_ALLOC_SIZE': return {request: request(command, payloads.getAllocSize(0, 13)), reply: reply(payloads.u64(4096n))};
        case 'HELLO': return {request: request(command, payloads.hello(caps(0))), reply: reply(payloads.helloReply(RPC_PROTO_MAJOR_VERSION, 0, 0, caps(0)))};
        case 'DEVICE_COUNT': return {request: request(command, Buffer.alloc(0)), reply: reply(payloads.deviceCountReply(1))};
        case 'GRAPH_RECOMPUTE': return {request: request(command, payloads.device(0))};
        case 'MEMSET_TENSOR': return {request: request(command, payloads.memsetTensor(14, 8n, 32n, 0))};
    }
}

const ALL_NAMES = Object.keys(REQUEST_BYTES) as RpcCommandName[];
const REPLIED: RpcCommandName[] = ['ALLOC_BUFFER', 'GET_ALIGNMENT', 'GET_MAX_SIZE', 'BUFFER_GET_BASE', 'SET_TENSOR_HASH', 'GET_TENSOR', 'COPY_TENSOR', 'GET_DEVICE_MEMORY', 'GET_ALLOC_SIZE', 'HELLO', 'DEVICE_COUNT'];

/** A request as sent, as it must be forwarded, and the same for its reply. */
interface Exchange {
    name: RpcCommandName,
    request: Buffer,
    forwardedRequest: Buffer,
    reply?: Buffer,
    forwardedReply?: Buffer
}

const PLAN_MEMORY: DeviceMemory = {free: 3n << 30n, total: 5n << 30n};

/** Every command, with the three rewrites under `reportMemory: PLAN_MEMORY`. */
function fullSession(): Exchange[] {
    const exchanges: Exchange[] = [{
        name: 'HELLO',
        request: request(RpcCommand.HELLO, payloads.hello(patterned(RPC_CONN_CAPS_BYTES, 1))),
        forwardedRequest: request(RpcCommand.HELLO, payloads.hello(caps(0))),
        reply: reply(payloads.helloReply(RPC_PROTO_MAJOR_VERSION, 0, 0, caps(0x5a))),
        forwardedReply: reply(payloads.helloReply(RPC_PROTO_MAJOR_VERSION, 0, 0, caps(0)))
    }, {
        name: 'DEVICE_COUNT',
        request: sample('DEVICE_COUNT').request,
        forwardedRequest: sample('DEVICE_COUNT').request,
        reply: reply(payloads.deviceCountReply(3)),
        forwardedReply: reply(payloads.deviceCountReply(1))
    }, {
        name: 'GET_DEVICE_MEMORY',
        request: sample('GET_DEVICE_MEMORY').request,
        forwardedRequest: sample('GET_DEVICE_MEMORY').request,
        reply: sample('GET_DEVICE_MEMORY').reply!,
        forwardedReply: reply(payloads.deviceMemoryReply(PLAN_MEMORY.free, PLAN_MEMORY.total))
    }];
    for (const name of ALL_NAMES.filter((name) => name !== 'HELLO')) {
        const {request: sent, reply: answer} = sample(name);
        exchanges.push({name, request: sent, forwardedRequest: sent, reply: answer, forwardedReply: name === 'GET_DEVICE_MEMORY' ? exchanges[2]!.forwardedReply : answer});
    }
    return exchanges;
}

const concat = (parts: Uint8Array[]) => Buffer.concat(parts);
const clientStream = (exchanges: Exchange[]) => concat(exchanges.map((exchange) => exchange.request));
const serverStream = (exchanges: Exchange[]) => concat(exchanges.flatMap((exchange) => exchange.reply ? [exchange.reply] : []));
const forwardedClientStream = (exchanges: Exchange[]) => concat(exchanges.map((exchange) => exchange.forwardedRequest));
const forwardedServerStream = (exchanges: Exchange[]) => concat(exchanges.flatMap((exchange) => exchange.forwardedReply ? [exchange.forwardedReply] : []));

/** Cuts `bytes` at the given offsets (sorted, within bounds). */
function cut(bytes: Buffer, offsets: number[]) {
    const chunks: Buffer[] = [];
    let previous = 0;
    for (const offset of [...offsets, bytes.length]) {
        chunks.push(bytes.subarray(previous, offset));
        previous = offset;
    }
    return chunks;
}

function randomChunks(bytes: Buffer, random: () => number, maxChunk: number) {
    const chunks: Buffer[] = [];
    for (let at = 0; at < bytes.length;) {
        const length = Math.min(bytes.length - at, 1 + Math.floor(random() * maxChunk));
        chunks.push(bytes.subarray(at, at + length));
        at += length;
    }
    return chunks;
}

const bytewise = (bytes: Buffer) => cut(bytes, [...Array(Math.max(0, bytes.length - 1)).keys()].map((i) => i + 1));

/** A copy with its own ArrayBuffer (small Buffers share a pool), so that views of it can be told from copies. */
const own = (chunk: Uint8Array) => new Uint8Array(chunk);

function feed(session: RpcSession, side: 'client' | 'server', chunks: Buffer[]) {
    const out: Uint8Array[] = [];
    for (const chunk of chunks)
        out.push(...(side === 'client' ? session.fromClient(chunk) : session.fromServer(chunk)));
    return concat(out);
}

test('the command bytes are those of ggml-rpc v6', (t) => {
    t.deepEqual({...RpcCommand}, {
        ALLOC_BUFFER: 0, GET_ALIGNMENT: 1, GET_MAX_SIZE: 2, BUFFER_GET_BASE: 3, FREE_BUFFER: 4, BUFFER_CLEAR: 5, SET_TENSOR: 6,
        SET_TENSOR_HASH: 7, GET_TENSOR: 8, COPY_TENSOR: 9, GRAPH_COMPUTE: 10, GET_DEVICE_MEMORY: 11, INIT_TENSOR: 12,
        GET_ALLOC_SIZE: 13, HELLO: 14, DEVICE_COUNT: 15, GRAPH_RECOMPUTE: 16, MEMSET_TENSOR: 17, NONE: 18, COUNT: 19
    });
    t.is(RPC_PROTO_MAJOR_VERSION, 6);
});

test('the test frames have the structs\' sizes', (t) => {
    const tensorBytes = TENSOR_FIELD_BYTES.reduce((sum, bytes) => sum + bytes, 0);
    t.is(tensorBytes, 296);
    t.is(tensorBytes % 8, 0); // static_assert in ggml-rpc
    t.is(RPC_TENSOR_BYTES, tensorBytes);
    t.is(tensor(3).length, tensorBytes);
    t.is(RPC_CONN_CAPS_BYTES, 24);
    for (const name of ALL_NAMES) {
        const {request: sent} = sample(name);
        const size = Number(sent.readBigUInt64LE(1));
        t.is(sent[0], RpcCommand[name], name);
        t.is(sent.length, 9 + size, name);
        if (VARIABLE.includes(name))
            t.true(size > REQUEST_BYTES[name], name);
        else
            t.is(size, REQUEST_BYTES[name], name);
    }
    t.is(payloads.helloReply(6, 0, 0, caps(0)).length, 28);
    t.is(payloads.allocBufferReply(0n, 0n).length, 16);
    t.is(payloads.deviceMemoryReply(0n, 0n).length, 16);
    t.is(payloads.graphCompute(0, 0, 0).length, 12);
    t.is(payloads.setTensor(0, 0n, Buffer.alloc(0)).length, 304);
});

function check(exchanges: Exchange[], clientChunks: Buffer[], serverChunks: Buffer[], options: RpcSessionOptions = {reportMemory: PLAN_MEMORY}) {
    const session = new RpcSession(options);
    const client = feed(session, 'client', clientChunks);
    const server = feed(session, 'server', serverChunks);
    return client.equals(forwardedClientStream(exchanges)) && server.equals(forwardedServerStream(exchanges)) && session.bufferedBytes === 0;
}

test('a whole session is forwarded byte for byte, rewrites aside, cut at every byte boundary', (t) => {
    const exchanges = fullSession();
    const client = clientStream(exchanges);
    const server = serverStream(exchanges);
    t.true(check(exchanges, [client], [server]));
    t.true(check(exchanges, bytewise(client), bytewise(server)));
    const failedClientCuts = [...Array(client.length + 1).keys()].filter((offset) => !check(exchanges, cut(client, [offset]), [server]));
    t.deepEqual(failedClientCuts, []);
    const failedServerCuts = [...Array(server.length + 1).keys()].filter((offset) => !check(exchanges, [client], cut(server, [offset])));
    t.deepEqual(failedServerCuts, []);
    // The rewrites changed something: otherwise this test could not fail for them.
    t.false(client.equals(forwardedClientStream(exchanges)));
    t.false(server.equals(forwardedServerStream(exchanges)));
    t.is(forwardedServerStream(exchanges).length, server.length);
});

test('exchanges fed in turn, as llama.cpp does, at random boundaries', (t) => {
    const random = prng(42);
    const catalogue = fullSession();
    const optional: RpcCommandName[] = ALL_NAMES.filter((name) => name !== 'HELLO');
    for (let round = 0; round < 300; round++) {
        const exchanges = catalogue.slice(0, 3);
        const count = Math.floor(random() * 40);
        for (let i = 0; i < count; i++) {
            const name = optional[Math.floor(random() * optional.length)]!;
            const seed = Math.floor(random() * 1000);
            let exchange: Exchange;
            if (name === 'SET_TENSOR') {
                const sent = request(RpcCommand.SET_TENSOR, payloads.setTensor(seed, BigInt(seed), patterned(Math.floor(random() * 5000), seed)));
                exchange = {name, request: sent, forwardedRequest: sent};
            } else if (name === 'GET_TENSOR') {
                const size = Math.floor(random() * 5000);
                const sent = request(RpcCommand.GET_TENSOR, payloads.getTensor(seed, 0n, BigInt(size)));
                const answer = reply(patterned(size, seed));
                exchange = {name, request: sent, forwardedRequest: sent, reply: answer, forwardedReply: answer};
            } else if (name === 'GRAPH_COMPUTE') {
                const sent = request(RpcCommand.GRAPH_COMPUTE, payloads.graphCompute(0, 1 + seed % 7, seed % 11));
                exchange = {name, request: sent, forwardedRequest: sent};
            } else {
                exchange = catalogue.findLast((candidate) => candidate.name === name)!;
            }
            exchanges.push(exchange);
        }
        const session = new RpcSession({reportMemory: PLAN_MEMORY});
        const maxChunk = 1 + Math.floor(random() * 600);
        const forwardedClient: Buffer[] = [];
        const forwardedServer: Buffer[] = [];
        let pendingRequests: Buffer[] = [];
        for (const exchange of exchanges) {
            // Requests without a reply may share chunks with the next ones; a reply comes only after its request.
            pendingRequests.push(exchange.request);
            if (!exchange.reply && random() < 0.7)
                continue;
            forwardedClient.push(feed(session, 'client', randomChunks(concat(pendingRequests), random, maxChunk)));
            pendingRequests = [];
            if (exchange.reply)
                forwardedServer.push(feed(session, 'server', randomChunks(exchange.reply, random, maxChunk)));
        }
        forwardedClient.push(feed(session, 'client', randomChunks(concat(pendingRequests), random, maxChunk)));
        if (!concat(forwardedClient).equals(forwardedClientStream(exchanges)) || !concat(forwardedServer).equals(forwardedServerStream(exchanges))) {
            t.fail(`round ${round} differs`);
            return;
        }
        t.is(session.bufferedBytes, 0);
    }
});

test('HELLO caps are zeroed both ways; the version and everything else pass', (t) => {
    const session = new RpcSession();
    const sentCaps = patterned(RPC_CONN_CAPS_BYTES, 5);
    const forwarded = feed(session, 'client', [request(RpcCommand.HELLO, payloads.hello(sentCaps))]);
    t.deepEqual(forwarded, request(RpcCommand.HELLO, payloads.hello(caps(0))));
    const serverCaps = caps(0xff);
    const answered = new Struct().u64(28).u8(6).u8(0).u8(0).u8(0x77).bytes(serverCaps).done();
    const forwardedReply = feed(session, 'server', [answered]);
    t.deepEqual(forwardedReply, new Struct().u64(28).u8(6).u8(0).u8(0).u8(0x77).bytes(caps(0)).done());
    // The input was not modified: the codec rewrites its own copy.
    t.deepEqual(answered.subarray(12), serverCaps);
});

test('GET_DEVICE_MEMORY replies report the plan\'s memory; other replies are untouched', (t) => {
    const hello = sample('HELLO');
    const exchange = (session: RpcSession, name: RpcCommandName, answer: Buffer) => {
        feed(session, 'client', [sample(name).request]);
        return feed(session, 'server', [answer]);
    };
    const serverMemory = reply(payloads.deviceMemoryReply(7n << 30n, 8n << 30n));
    const start = (options: RpcSessionOptions) => {
        const session = new RpcSession(options);
        exchange(session, 'HELLO', hello.reply!);
        return session;
    };

    t.deepEqual(exchange(start({}), 'GET_DEVICE_MEMORY', serverMemory), serverMemory);
    t.deepEqual(exchange(start({reportMemory: PLAN_MEMORY}), 'GET_DEVICE_MEMORY', serverMemory), reply(payloads.deviceMemoryReply(PLAN_MEMORY.free, PLAN_MEMORY.total)));
    const maxU64 = 2n ** 64n - 1n;
    t.deepEqual(exchange(start({reportMemory: {free: 0n, total: maxU64}}), 'GET_DEVICE_MEMORY', serverMemory), reply(payloads.deviceMemoryReply(0n, maxU64)));

    // Asked per reply: a plan decided after the tunnel opened still applies.
    const asked: number[] = [];
    let planned = 1n << 20n;
    const session = start({reportMemory: (device) => {
        asked.push(device);
        return {free: planned, total: 2n * planned};
    }});
    t.deepEqual(exchange(session, 'GET_DEVICE_MEMORY', serverMemory), reply(payloads.deviceMemoryReply(1n << 20n, 2n << 20n)));
    planned = 3n << 20n;
    t.deepEqual(exchange(session, 'GET_DEVICE_MEMORY', serverMemory), reply(payloads.deviceMemoryReply(3n << 20n, 6n << 20n)));
    t.deepEqual(asked, [0, 0]);
    // ALLOC_BUFFER's reply has the same size and is not rewritten.
    const allocReply = sample('ALLOC_BUFFER').reply!;
    t.deepEqual(exchange(session, 'ALLOC_BUFFER', allocReply), allocReply);
    t.deepEqual(asked, [0, 0]);
});

test('DEVICE_COUNT replies are clamped to one device', (t) => {
    for (const [count, expected] of [[0, 0], [1, 1], [2, 1], [16, 1], [0xffff_ffff, 1]]) {
        const session = new RpcSession();
        feed(session, 'client', [sample('HELLO').request]);
        feed(session, 'server', [sample('HELLO').reply!]);
        feed(session, 'client', [sample('DEVICE_COUNT').request]);
        t.deepEqual(feed(session, 'server', bytewise(reply(payloads.deviceCountReply(count!)))), reply(payloads.deviceCountReply(expected!)), `${count}`);
    }
});

test('reportMemory figures must be u64 bigints', (t) => {
    for (const memory of [{free: -1n, total: 1n}, {free: 1n, total: 2n ** 64n}, {free: 1 as unknown as bigint, total: 1n}])
        t.throws(() => new RpcSession({reportMemory: memory}), {instanceOf: RangeError});
    const session = new RpcSession({reportMemory: () => ({free: -5n, total: 0n})});
    feed(session, 'client', [sample('HELLO').request]);
    feed(session, 'server', [sample('HELLO').reply!]);
    feed(session, 'client', [sample('GET_DEVICE_MEMORY').request]);
    const error = t.throws(() => session.fromServer(sample('GET_DEVICE_MEMORY').reply!), {instanceOf: RangeError});
    t.is(t.throws(() => session.fromClient(sample('DEVICE_COUNT').request)), error);
});

test('maxPayloadBytes must be a safe non-negative integer; the default is 4 GiB', (t) => {
    for (const maxPayloadBytes of [-1, 1.5, 2 ** 53, Number.NaN])
        t.throws(() => new RpcSession({maxPayloadBytes}), {instanceOf: RangeError});
    t.is(DEFAULT_MAX_PAYLOAD_BYTES, 4 * 2 ** 30);
    const session = new RpcSession();
    feed(session, 'client', [sample('HELLO').request]);
    // A header of exactly the largest size is accepted and forwarded at once: the payload streams after it.
    const header = new Struct().u8(RpcCommand.SET_TENSOR).u64(DEFAULT_MAX_PAYLOAD_BYTES).done();
    t.deepEqual(feed(session, 'client', [header]), header);
    t.is(session.bufferedBytes, 0);
});

interface ViolationCase {
    title: string,
    /** Frames before the offending one, fed in order; they are valid. */
    before: {side: 'client' | 'server', bytes: Buffer}[],
    side: 'client' | 'server',
    offending: Buffer,
    code: RpcViolationCode,
    options?: RpcSessionOptions
}

const helloDone = (): ViolationCase['before'] => [{side: 'client', bytes: sample('HELLO').request}, {side: 'server', bytes: sample('HELLO').reply!}];

function violationCases(): ViolationCase[] {
    const cases: ViolationCase[] = [];
    for (const command of [RpcCommand.NONE, RpcCommand.COUNT, 20, 0x80, 0xff]) {
        cases.push({title: `command ${command}`, before: helloDone(), side: 'client', offending: request(command, Buffer.alloc(4)), code: 'unknown-command'});
        cases.push({title: `first command ${command}`, before: [], side: 'client', offending: request(command, Buffer.alloc(4)), code: 'unknown-command'});
    }
    for (const name of ALL_NAMES.filter((name) => name !== 'HELLO'))
        cases.push({title: `${name} before HELLO`, before: [], side: 'client', offending: sample(name).request, code: 'hello-expected'});
    cases.push({title: 'HELLO twice', before: helloDone(), side: 'client', offending: sample('HELLO').request, code: 'repeated-hello'});
    cases.push({title: 'HELLO twice, back to back', before: [{side: 'client', bytes: sample('HELLO').request}], side: 'client', offending: sample('HELLO').request, code: 'repeated-hello'});
    for (const size of [0, 4, 23, 25, 28])
        cases.push({title: `HELLO of ${size} bytes`, before: [], side: 'client', offending: request(RpcCommand.HELLO, Buffer.alloc(size)), code: 'bad-size'});
    for (const name of ALL_NAMES.filter((name) => name !== 'HELLO')) {
        const sizes = VARIABLE.includes(name) ? [REQUEST_BYTES[name] - 1, 0] : [REQUEST_BYTES[name] + 1, REQUEST_BYTES[name] - 1, 0, REQUEST_BYTES[name] * 2 + 8];
        for (const size of sizes.filter((size) => size >= 0 && size !== REQUEST_BYTES[name]))
            cases.push({title: `${name} of ${size} bytes`, before: helloDone(), side: 'client', offending: request(RpcCommand[name], Buffer.alloc(size)), code: 'bad-size'});
    }
    for (const name of DEVICE_COMMANDS) {
        for (const device of [1, 2, 0xffff_ffff]) {
            const valid = sample(name).request;
            const offending = Buffer.from(valid);
            offending.writeUInt32LE(device, 9);
            cases.push({title: `${name} for device ${device}`, before: helloDone(), side: 'client', offending, code: 'bad-device'});
        }
    }
    const small = {maxPayloadBytes: 5000};
    cases.push({title: 'SET_TENSOR over the maximum', before: helloDone(), side: 'client', offending: request(RpcCommand.SET_TENSOR, Buffer.alloc(5001)), code: 'too-large', options: small});
    cases.push({title: 'GRAPH_COMPUTE over the maximum', before: helloDone(), side: 'client', offending: request(RpcCommand.GRAPH_COMPUTE, Buffer.alloc(5001)), code: 'too-large', options: small});
    cases.push({title: 'SET_TENSOR over 4 GiB', before: helloDone(), side: 'client', offending: request(RpcCommand.SET_TENSOR, Buffer.alloc(0), BigInt(DEFAULT_MAX_PAYLOAD_BYTES) + 1n), code: 'too-large'});
    cases.push({title: 'a u64-max payload', before: helloDone(), side: 'client', offending: request(RpcCommand.FREE_BUFFER, Buffer.alloc(0), 2n ** 64n - 1n), code: 'too-large'});
    cases.push({title: 'GET_TENSOR asking over the maximum', before: helloDone(), side: 'client', offending: request(RpcCommand.GET_TENSOR, payloads.getTensor(1, 0n, 5001n)), code: 'too-large', options: small});
    cases.push({title: 'GET_TENSOR asking for 2^63', before: helloDone(), side: 'client', offending: request(RpcCommand.GET_TENSOR, payloads.getTensor(1, 0n, 2n ** 63n)), code: 'too-large'});
    const backlog = [...helloDone(), ...[...Array(32)].map(() => ({side: 'client' as const, bytes: sample('DEVICE_COUNT').request}))];
    cases.push({title: 'a 33rd outstanding reply', before: backlog, side: 'client', offending: sample('GET_ALIGNMENT').request, code: 'reply-backlog'});
    cases.push({title: 'a reply before HELLO', before: [], side: 'server', offending: sample('HELLO').reply!, code: 'unexpected-reply'});
    cases.push({title: 'a reply after the HELLO reply', before: helloDone(), side: 'server', offending: sample('GET_ALIGNMENT').reply!, code: 'unexpected-reply'});
    for (const name of ALL_NAMES.filter((name) => !REPLIED.includes(name)))
        cases.push({title: `a reply to ${name}`, before: [...helloDone(), {side: 'client', bytes: sample(name).request}], side: 'server', offending: reply(Buffer.alloc(0)), code: 'unexpected-reply'});
    cases.push({title: 'a second reply', before: [...helloDone(), {side: 'client', bytes: sample('GET_ALIGNMENT').request}, {side: 'server', bytes: sample('GET_ALIGNMENT').reply!}], side: 'server', offending: sample('GET_ALIGNMENT').reply!, code: 'unexpected-reply'});
    for (const name of REPLIED.filter((name) => name !== 'HELLO')) {
        const valid = sample(name).reply!.subarray(8);
        for (const size of [valid.length + 1, valid.length - 1, 0].filter((size) => size >= 0 && size !== valid.length))
            cases.push({title: `a reply to ${name} of ${size} bytes`, before: [...helloDone(), {side: 'client', bytes: sample(name).request}], side: 'server', offending: reply(patterned(size, 1)), code: 'bad-reply-size'});
    }
    for (const size of [0, 24, 27, 29])
        cases.push({title: `a HELLO reply of ${size} bytes`, before: [{side: 'client', bytes: sample('HELLO').request}], side: 'server', offending: reply(Buffer.alloc(size)), code: 'bad-reply-size'});
    cases.push({title: 'a huge reply', before: [...helloDone(), {side: 'client', bytes: sample('DEVICE_COUNT').request}], side: 'server', offending: reply(Buffer.alloc(0), 2n ** 63n), code: 'too-large'});
    for (const major of [0, 3, 5, 7, 255])
        cases.push({title: `a server of protocol ${major}`, before: [{side: 'client', bytes: sample('HELLO').request}], side: 'server', offending: reply(payloads.helloReply(major, 0, 0, caps(0))), code: 'version'});
    return cases;
}

test('every violation ends the session before any byte of the offending frame is forwarded', (t) => {
    const cases = violationCases();
    t.true(cases.length > 100);
    const codes = new Set(cases.map((violation) => violation.code));
    t.deepEqual([...codes].sort(), ['bad-device', 'bad-reply-size', 'bad-size', 'hello-expected', 'repeated-hello', 'reply-backlog', 'too-large', 'unexpected-reply', 'unknown-command', 'version']);
    for (const violation of cases) {
        for (const chunking of ['whole', 'bytewise'] as const) {
            const label = `${violation.title} (${chunking})`;
            const session = new RpcSession(violation.options);
            const forwarded = {client: [] as Buffer[], server: [] as Buffer[]};
            for (const step of violation.before)
                forwarded[step.side].push(feed(session, step.side, chunking === 'whole' ? [step.bytes] : bytewise(step.bytes)));
            const chunks = chunking === 'whole' ? [violation.offending] : bytewise(violation.offending);
            let error: unknown;
            for (const chunk of chunks) {
                try {
                    forwarded[violation.side].push(feed(session, violation.side, [chunk]));
                } catch (thrown) {
                    error = thrown;
                    break;
                }
            }
            if (!(error instanceof RpcViolation)) {
                t.fail(`${label}: no violation`);
                continue;
            }
            t.is(error.code, violation.code, label);
            t.is(error.side, violation.side, label);
            const valid = concat(violation.before.filter((step) => step.side === violation.side).map((step) => step.bytes));
            t.deepEqual(concat(forwarded[violation.side]), valid, `${label}: forwarded part of the offending frame`);
            // The session is dead both ways, with the same error.
            t.is(t.throws(() => session.fromClient(sample('DEVICE_COUNT').request)), error, label);
            t.is(t.throws(() => session.fromServer(Buffer.alloc(1))), error, label);
        }
    }
});

test('a violation is caught at the first byte that shows it', (t) => {
    const session = new RpcSession();
    t.throws(() => session.fromClient(Buffer.from([RpcCommand.DEVICE_COUNT])), {instanceOf: RpcViolation, message: /before HELLO/});
    const replies = new RpcSession();
    t.throws(() => replies.fromServer(Buffer.from([1])), {instanceOf: RpcViolation, message: /no reply is expected/});
    const unknown = new RpcSession();
    feed(unknown, 'client', [sample('HELLO').request]);
    t.throws(() => unknown.fromClient(Buffer.from([RpcCommand.NONE])), {instanceOf: RpcViolation, message: /unknown command 18/});
});

test('exact sizes pass for every command, each reply matched to its request', (t) => {
    for (const name of ALL_NAMES.filter((name) => name !== 'HELLO')) {
        const session = new RpcSession();
        feed(session, 'client', [sample('HELLO').request]);
        feed(session, 'server', [sample('HELLO').reply!]);
        const {request: sent, reply: answer} = sample(name);
        t.deepEqual(feed(session, 'client', bytewise(sent)), sent, name);
        if (answer)
            t.deepEqual(feed(session, 'server', bytewise(answer)), answer, name);
        t.is(REPLIED.includes(name), answer !== undefined, name);
        t.is(session.bufferedBytes, 0, name);
    }
    // Least-size variable payloads: a SET_TENSOR without data, a GRAPH_COMPUTE of no nodes.
    const session = new RpcSession();
    feed(session, 'client', [sample('HELLO').request]);
    const empty = concat([request(RpcCommand.SET_TENSOR, payloads.setTensor(1, 0n, Buffer.alloc(0))), request(RpcCommand.GRAPH_COMPUTE, payloads.graphCompute(0, 0, 0))]);
    t.deepEqual(feed(session, 'client', [empty]), empty);
    // A GET_TENSOR of nothing has an empty reply.
    feed(session, 'server', [sample('HELLO').reply!]);
    feed(session, 'client', [request(RpcCommand.GET_TENSOR, payloads.getTensor(1, 0n, 0n))]);
    t.deepEqual(feed(session, 'server', [reply(Buffer.alloc(0))]), reply(Buffer.alloc(0)));
    t.throws(() => session.fromServer(Buffer.alloc(1)), {instanceOf: RpcViolation, message: /no reply is expected/});
});

/** Streams `frames` in `chunks`; checks views, copies and the held bytes after every chunk. */
function streamBig(t: ExecutionContext, session: RpcSession, side: 'client' | 'server', chunks: Uint8Array[], frames: number, headBytes: number) {
    let copied = 0;
    let maxHeld = 0;
    const out: Uint8Array[] = [];
    for (const chunk of chunks) {
        const forwarded = side === 'client' ? session.fromClient(chunk) : session.fromServer(chunk);
        for (const part of forwarded) {
            if (part.buffer !== chunk.buffer)
                copied += part.length;
        }
        out.push(...forwarded);
        maxHeld = Math.max(maxHeld, session.bufferedBytes);
    }
    t.is(copied, frames * headBytes, 'only headers are copied; payloads pass as views of the input');
    t.true(maxHeld < headBytes, `held ${maxHeld} bytes`);
    return concat(out);
}

test('a multi-MB SET_TENSOR streams through in small chunks, never buffered', (t) => {
    const data = patterned(8 * 2 ** 20, 99);
    const frame = request(RpcCommand.SET_TENSOR, payloads.setTensor(1, 0n, data));
    for (const chunks of [cut(frame, [1, 9, 10, 100_000]), randomChunks(frame, prng(7), 64 * 1024), randomChunks(frame.subarray(0, 300_000), prng(8), 97)]) {
        const session = new RpcSession();
        feed(session, 'client', [sample('HELLO').request]);
        const total = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
        t.true(streamBig(t, session, 'client', chunks.map(own), 1, 9).equals(frame.subarray(0, total)));
    }
});

test('a multi-MB GET_TENSOR reply and GRAPH_COMPUTE stream through too', (t) => {
    const session = new RpcSession();
    feed(session, 'client', [sample('HELLO').request]);
    feed(session, 'server', [sample('HELLO').reply!]);
    const graph = request(RpcCommand.GRAPH_COMPUTE, payloads.graphCompute(0, 2000, 10_000));
    t.true(graph.length > 2 * 2 ** 20);
    // GRAPH_COMPUTE holds its device index too: 9 + 4 bytes copied.
    t.true(streamBig(t, session, 'client', randomChunks(graph, prng(3), 32 * 1024).map(own), 1, 13).equals(graph));
    const size = 6 * 2 ** 20;
    feed(session, 'client', [request(RpcCommand.GET_TENSOR, payloads.getTensor(1, 0n, BigInt(size)))]);
    const answer = reply(patterned(size, 4));
    t.true(streamBig(t, session, 'server', randomChunks(answer, prng(5), 48 * 1024).map(own), 1, 8).equals(answer));
});

test('counters: bytes each way, commands by name, graph computes', (t) => {
    const exchanges = fullSession();
    const session = new RpcSession({reportMemory: PLAN_MEMORY});
    const fresh = session.counters;
    t.is(fresh.bytesFromClient + fresh.bytesFromServer + fresh.graphComputes, 0);
    t.deepEqual(Object.keys(fresh.commands).sort(), [...ALL_NAMES].sort());
    const extra = [sample('GRAPH_RECOMPUTE').request, sample('GRAPH_RECOMPUTE').request, sample('GRAPH_COMPUTE').request];
    const client = concat([clientStream(exchanges), ...extra]);
    feed(session, 'client', randomChunks(client, prng(11), 50));
    feed(session, 'server', randomChunks(serverStream(exchanges), prng(12), 50));
    const counters = session.counters;
    t.is(counters.bytesFromClient, client.length);
    t.is(counters.bytesFromServer, serverStream(exchanges).length);
    const expected = Object.fromEntries(ALL_NAMES.map((name) => [name, exchanges.filter((exchange) => exchange.name === name).length]));
    expected.GRAPH_RECOMPUTE! += 2;
    expected.GRAPH_COMPUTE! += 1;
    t.deepEqual(counters.commands, expected);
    t.is(counters.commands.DEVICE_COUNT, 2);
    t.is(counters.graphComputes, 5);
    // A snapshot: later traffic and changes to it do not mix.
    counters.commands.HELLO = 99;
    feed(session, 'client', [sample('GRAPH_RECOMPUTE').request]);
    t.is(session.counters.commands.HELLO, 1);
    t.is(session.counters.graphComputes, 6);
    t.is(counters.graphComputes, 5);
});
