import {once} from 'node:events';
import {mkdtemp, readdir, readFile, rm, stat, unlink} from 'node:fs/promises';
import {connect, type Socket} from 'node:net';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import test from 'ava';
import {readGgufFileInfo} from 'node-llama-cpp';
import {writeDemoModel} from '../engine/demo/demo-model.js';
import {Prng} from '../engine/demo/prng.js';
import {prepareRpcServerDir} from '../engine/rpc/rpc-server-dir.js';
import {RPC_HOST, RpcServerHost, TENSOR_CACHE_SUBDIR} from '../engine/rpc/rpc-server-host.js';
import {Fnv1a64, ggmlTensorBytes, HASH_THRESHOLD_BYTES, largeTensors, seedTensorCache} from '../engine/rpc/tensor-cache-seed.js';
import {RPC_CONN_CAPS_BYTES, RPC_TENSOR_BYTES, RpcCommand} from '../inference/sharded/tunnel/rpc-stream.js';
import {testRpcBinaries} from '../harness/rpc-binaries.js';

/** FNV-1a 64 as its definition says, in BigInt: the reference the fast version must match. */
function referenceFnv(bytes: Uint8Array) {
    let hash = 0xcbf29ce484222325n;
    for (const byte of bytes)
        hash = ((hash ^ BigInt(byte)) * 0x100000001b3n) & 0xffffffffffffffffn;
    return hash.toString(16).padStart(16, '0');
}

/** Feed-forward matrices of 2048 × 2816 F16 (11.5 MB) pass the 10 MiB threshold; attention ones (8 MiB) do not. */
const WIDE = {width: 2048, headCount: 16, feedForwardLength: 2816};
const FFN = /^blk\.(\d+)\.ffn_(gate|up|down)\.weight$/;

async function wideModel(t: {teardown(fn: () => Promise<void>): void}, layers: number) {
    const dir = await mkdtemp(join(tmpdir(), 'strongdoge-seed-'));
    t.teardown(() => rm(dir, {recursive: true, force: true}));
    const model = join(dir, 'wide.gguf');
    await writeDemoModel(model, {layers, ...WIDE});
    return {dir, model, cache: join(dir, 'cache', TENSOR_CACHE_SUBDIR)};
}

test('FNV-1a 64 gives the published values and matches the definition on random data, in one piece or many', (t) => {
    const text = (value: string) => new Fnv1a64().update(Buffer.from(value)).hex();
    t.is(text(''), 'cbf29ce484222325');
    t.is(text('a'), 'af63dc4c8601ec8c');
    t.is(text('foobar'), '85944171f73967e8');
    const prng = new Prng(7);
    for (const length of [1, 3, 255, 4096, 100_000]) {
        const bytes = Uint8Array.from({length}, () => Math.floor(prng.next() * 256));
        const pieces = new Fnv1a64();
        for (let offset = 0; offset < length; offset += 777)
            pieces.update(bytes.subarray(offset, offset + 777));
        t.is(new Fnv1a64().update(bytes).hex(), referenceFnv(bytes), `length ${length}`);
        t.is(pieces.hex(), referenceFnv(bytes));
    }
    // Every high bit pattern of the low half (the carry into the high half).
    const all = Uint8Array.from({length: 4096}, (_, index) => (index * 37) ^ (index >> 4));
    t.is(new Fnv1a64().update(all).hex(), referenceFnv(all));
});

test('tensor sizes are ggml_nbytes: whole blocks of the type, no alignment padding', (t) => {
    t.is(ggmlTensorBytes(1, [2048, 2816]), 2048 * 2816 * 2); // F16
    t.is(ggmlTensorBytes(0, [7, 3]), 7 * 3 * 4); // F32
    // Q8_0 with a row count that leaves the tensor off a 32-byte boundary (GPT-2's vocabulary).
    t.is(ggmlTensorBytes(8, [768, 50257]), (768 / 32) * 34 * 50257);
    t.is(ggmlTensorBytes(14, [4096, 11008]), (4096 / 256) * 210 * 11008); // Q6_K
    t.is(ggmlTensorBytes(12, [4096, 4096]), (4096 / 256) * 144 * 4096); // Q4_K
    t.is(ggmlTensorBytes(4, [32, 32]), undefined, 'a removed type');
    t.is(ggmlTensorBytes(2, [33, 2]), undefined, 'not whole blocks');
});

test('seeding writes each tensor over the threshold under its hash, byte for byte; of the stage\'s layers only if asked', async (t) => {
    const {model, cache} = await wideModel(t, 2);
    const first = await seedTensorCache(model, cache, {layers: [1, 1]});
    t.like(first, {seeded: 3, present: 0, skipped: 0, bytesWritten: 3 * 2048 * 2816 * 2});
    const info = await readGgufFileInfo(model, {readTensorInfo: true});
    const file = await readFile(model);
    const matrices = info.fullTensorInfo!.filter((candidate) => FFN.test(candidate.name));
    t.is(matrices.length, 6);
    const hashes = new Map<string, string>();
    for (const tensor of matrices) {
        const bytes = tensor.dimensions.map(Number).reduce((product, dimension) => product * dimension, 2);
        t.true(bytes > HASH_THRESHOLD_BYTES);
        const data = file.subarray(Number(tensor.fileOffset), Number(tensor.fileOffset) + bytes);
        hashes.set(tensor.name, new Fnv1a64().update(data).hex());
    }
    const files = () => readdir(cache).then((names) => names.filter((name) => /^[0-9a-f]{16}$/.test(name)).sort());
    t.deepEqual(await files(), matrices.filter((tensor) => tensor.name.startsWith('blk.1.')).map((tensor) => hashes.get(tensor.name)!).sort());
    for (const tensor of matrices.filter((candidate) => candidate.name.startsWith('blk.1.'))) {
        const bytes = 2048 * 2816 * 2;
        t.true((await readFile(join(cache, hashes.get(tensor.name)!))).equals(file.subarray(Number(tensor.fileOffset), Number(tensor.fileOffset) + bytes)));
    }
    // All layers: the three already there are found, not written again.
    t.like(await seedTensorCache(model, cache), {seeded: 3, present: 3});
    t.is((await files()).length, 6);
    // The record says all are there: nothing is read.
    t.like(await seedTensorCache(model, cache), {seeded: 0, present: 6, bytesHashed: 0});
    // An evicted file is seeded again, and only that one is read.
    await unlink(join(cache, hashes.get('blk.0.ffn_up.weight')!));
    t.like(await seedTensorCache(model, cache), {seeded: 1, present: 5, bytesHashed: 2048 * 2816 * 2});
    t.false((await readdir(cache)).some((name) => name.startsWith('.seed-')), 'no temporary file is left');
});

test('seeding stops at its byte budget; concurrent seedings of one cache do the work once', async (t) => {
    const {model, cache} = await wideModel(t, 2);
    const tensorBytes = 2048 * 2816 * 2;
    t.like(await seedTensorCache(model, cache, {maxBytes: 2.5 * tensorBytes}), {seeded: 2, skipped: 4});
    const [a, b] = await Promise.all([seedTensorCache(model, cache), seedTensorCache(model, cache)]);
    t.is(a.seeded + b.seeded, 4);
    t.like(b, {seeded: 0, present: 6, bytesHashed: 0});
});

/** A bare ggml-rpc v6 client: one request at a time, replies read whole. */
class RawRpcClient {
    private buffered = Buffer.alloc(0);
    private waiter: (() => void) | undefined;
    private closed = false;

    private constructor(private readonly socket: Socket) {
        socket.on('data', (chunk: Buffer) => {
            this.buffered = Buffer.concat([this.buffered, chunk]);
            this.waiter?.();
        });
        socket.on('close', () => {
            this.closed = true;
            this.waiter?.();
        });
    }

    static async connect(port: number) {
        const socket = connect({host: RPC_HOST, port});
        await once(socket, 'connect');
        return new RawRpcClient(socket);
    }

    async call(command: number, payload: Buffer) {
        const header = Buffer.alloc(9);
        header.writeUInt8(command, 0);
        header.writeBigUInt64LE(BigInt(payload.length), 1);
        this.socket.write(Buffer.concat([header, payload]));
        const size = Number((await this.take(8)).readBigUInt64LE(0));
        return this.take(size);
    }

    private async take(bytes: number) {
        while (this.buffered.length < bytes) {
            if (this.closed)
                throw new Error('the server closed the connection');
            await new Promise<void>((resolve) => {
                this.waiter = resolve;
            });
        }
        const taken = this.buffered.subarray(0, bytes);
        this.buffered = this.buffered.subarray(bytes);
        return taken;
    }

    close() {
        this.socket.destroy();
    }
}

/** A serialized `rpc_tensor` (packed, little-endian): a contiguous F16 matrix at `data` in `buffer`. */
function f16Tensor(buffer: bigint, data: bigint, dimensions: number[], name: string) {
    const tensor = Buffer.alloc(RPC_TENSOR_BYTES);
    tensor.writeBigUInt64LE(1n, 0); // id
    tensor.writeUInt32LE(1, 8); // type F16
    tensor.writeBigUInt64LE(buffer, 12);
    const ne = [...dimensions, 1, 1, 1, 1].slice(0, 4);
    let stride = 2;
    for (let dim = 0; dim < 4; dim++) {
        tensor.writeUInt32LE(ne[dim]!, 20 + 4 * dim);
        tensor.writeUInt32LE(stride, 36 + 4 * dim);
        stride *= ne[dim]!;
    }
    tensor.writeBigUInt64LE(data, 220);
    tensor.write(name.slice(0, 63), 228);
    return tensor;
}

test('the real rpc server finds a seeded tensor by the hash its client asks for, and loads its bytes', async (t) => {
    const {dir, model, cache} = await wideModel(t, 1);
    const seeded = await seedTensorCache(model, cache);
    t.is(seeded.seeded, 3);
    const tensor = (await largeTensors(model)).find((candidate) => candidate.name === 'blk.0.ffn_down.weight')!;
    const data = (await readFile(model)).subarray(tensor.start, tensor.start + tensor.bytes);
    const info = await readGgufFileInfo(model, {readTensorInfo: true});
    const dimensions = info.fullTensorInfo!.find((candidate) => candidate.name === tensor.name)!.dimensions.map(Number);

    const server = new RpcServerHost({binaries: await prepareRpcServerDir(await testRpcBinaries(), {gpu: false}), cacheDir: join(dir, 'cache')});
    t.teardown(() => server.stop());
    await server.start();
    const client = await RawRpcClient.connect(server.port!);
    t.teardown(() => client.close());
    const hello = await client.call(RpcCommand.HELLO, Buffer.alloc(RPC_CONN_CAPS_BYTES));
    t.is(hello.readUInt8(0), 6, 'protocol v6');
    const alloc = Buffer.alloc(12);
    alloc.writeUInt32LE(0, 0);
    alloc.writeBigUInt64LE(BigInt(tensor.bytes), 4);
    const allocated = await client.call(RpcCommand.ALLOC_BUFFER, alloc);
    const remote = allocated.readBigUInt64LE(0);
    t.not(remote, 0n);
    const base = (await client.call(RpcCommand.BUFFER_GET_BASE, allocated.subarray(0, 8))).readBigUInt64LE(0);
    const serialized = f16Tensor(remote, base, dimensions, tensor.name);

    const offer = (hash: string) => {
        const request = Buffer.alloc(RPC_TENSOR_BYTES + 16);
        serialized.copy(request);
        request.writeBigUInt64LE(0n, RPC_TENSOR_BYTES); // offset
        request.writeBigUInt64LE(BigInt(`0x${hash}`), RPC_TENSOR_BYTES + 8);
        return client.call(RpcCommand.SET_TENSOR_HASH, request);
    };
    // The hash llama.cpp's client computes over the bytes it would send: a hit.
    t.deepEqual(await offer(referenceFnv(data)), Buffer.from([1]));
    // A hash nobody seeded: a miss (the client would send the bytes).
    t.deepEqual(await offer('0123456789abcdef'), Buffer.from([0]));
    // The server put the file's bytes into the tensor.
    const get = Buffer.alloc(RPC_TENSOR_BYTES + 16);
    serialized.copy(get);
    get.writeBigUInt64LE(0n, RPC_TENSOR_BYTES);
    get.writeBigUInt64LE(BigInt(tensor.bytes), RPC_TENSOR_BYTES + 8);
    t.true((await client.call(RpcCommand.GET_TENSOR, get)).equals(data));
});

test('seeding speed on a 2-layer, 2048-wide model with 5632-wide feed-forward', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'strongdoge-seed-'));
    t.teardown(() => rm(dir, {recursive: true, force: true}));
    const model = join(dir, 'wider.gguf');
    await writeDemoModel(model, {layers: 2, width: 2048, headCount: 16, feedForwardLength: 5632});
    const outcome = await seedTensorCache(model, join(dir, 'cache'));
    t.is(outcome.seeded, 6);
    const megabytes = outcome.bytesHashed / 1e6;
    t.log(`file ${((await stat(model)).size / 1e6).toFixed(0)} MB: seeded ${megabytes.toFixed(0)} MB in ${outcome.elapsedMs} ms, ${(megabytes / (outcome.elapsedMs / 1000)).toFixed(0)} MB/s`);
    t.like(await seedTensorCache(model, join(dir, 'cache')), {seeded: 0, bytesHashed: 0});
});
