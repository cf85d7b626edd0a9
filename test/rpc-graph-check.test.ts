import {execFile} from 'node:child_process';
import {join} from 'node:path';
import {promisify} from 'node:util';
import test from 'ava';
import koffi from 'koffi';
import {prepareRpcServerDir} from '../engine/rpc/rpc-server-dir.js';
import {checkGraph} from '../inference/sharded/tunnel/ggml/graph-check.js';
import {GGML_GLU_OP_NAMES, GGML_OP_NAMES, GGML_TYPES, GGML_UNARY_OP_NAMES, GgmlType} from '../inference/sharded/tunnel/ggml/ggml-tables.js';
import {ALLOWED_OPS} from '../inference/sharded/tunnel/ggml/op-allowlist.js';
import {OP_RULES} from '../inference/sharded/tunnel/ggml/op-rules.js';
import {f32, GraphBuilder, guardedConnection, labServer, RpcLabClient} from '../harness/rpc-lab.js';
import {SeededRandom} from '../harness/seeded-random.js';
import {AllocationBudget, RpcGuard} from '../inference/sharded/tunnel/rpc-guard.js';
import {RpcCommand, RpcSession} from '../inference/sharded/tunnel/rpc-stream.js';
import {testRpcBinaries} from '../harness/rpc-binaries.js';

/**
 * The host's graph checks (docs/peer-protocol.md, "Graph checks") against what they mirror: ggml's own tables in the
 * libggml-base the rpc-server loads, the op list derived from llama.cpp's source, and a real rpc-server running
 * the graphs the checks accept.
 */

const execFileAsync = promisify(execFile);
const {F32, F16} = GgmlType;

test('ggml\'s types, ops, unary and GLU ops are numbered and sized as in the libggml-base the rpc-server loads', async (t) => {
    const files = await prepareRpcServerDir(await testRpcBinaries());
    const lib = koffi.load(join(files.serverPath, '..', 'libggml-base.so.0'));
    const typeName = lib.func('const char *ggml_type_name(int)');
    const blockSize = lib.func('int64_t ggml_blck_size(int)');
    const typeSize = lib.func('size_t ggml_type_size(int)');
    const quantized = lib.func('bool ggml_is_quantized(int)');
    const opName = lib.func('const char *ggml_op_name(int)');
    const unaryName = lib.func('const char *ggml_unary_op_name(int)');
    const gluName = lib.func('const char *ggml_glu_op_name(int)');
    GGML_TYPES.forEach((traits, type) => {
        if (traits === null)
            t.is(Number(blockSize(type)), 0, `type ${type} is removed`);
        else
            t.deepEqual({name: typeName(type), blockSize: Number(blockSize(type)), typeSize: Number(typeSize(type)), quantized: quantized(type)}, traits);
    });
    for (const [names, nameOf] of [[GGML_OP_NAMES, opName], [GGML_UNARY_OP_NAMES, unaryName], [GGML_GLU_OP_NAMES, gluName]] as const)
        for (const [op, name] of names.entries())
            t.is(nameOf(op), name);
});

test('the allowed ops are those scripts/derive-rpc-op-allowlist.mjs derives from the llama.cpp node-llama-cpp ships', async (t) => {
    const {stdout} = await execFileAsync(process.execPath, [new URL('../scripts/derive-rpc-op-allowlist.mjs', import.meta.url).pathname]);
    t.deepEqual([...ALLOWED_OPS], stdout.trim().split('\n'));
    for (const never of ['CUSTOM', 'MAP_CUSTOM1', 'MAP_CUSTOM2', 'MAP_CUSTOM3'])
        t.false((ALLOWED_OPS as readonly string[]).includes(never));
    t.deepEqual(Object.keys(OP_RULES).sort(), [...ALLOWED_OPS].sort());
});

test('a layer\'s graph passes the checks and the real server computes it; a CUSTOM op never reaches the server', async (t) => {
    const {port, exits} = await labServer(t);
    let refused: Error | undefined;
    const client = new RpcLabClient(guardedConnection(port, {onRefused: (error) => refused = error}));
    t.is(await client.hello(), 6);
    const buffer = await client.buffer(1n << 20n);
    const g = new GraphBuilder(buffer);
    const x = g.tensor({type: F32, ne: [64, 3]});
    const w = g.tensor({type: F16, ne: [64, 32]});
    const norm = g.tensor({type: F32, ne: [64, 3], op: 'RMS_NORM', src: [x], params: [f32(1e-5)]});
    const y = g.tensor({type: F32, ne: [32, 3], op: 'MUL_MAT', src: [w, norm]});
    const xs = Float32Array.from({length: 64 * 3}, (_, i) => Math.sin(i));
    await client.setTensor(x, Buffer.from(xs.buffer));
    const ws = new Uint16Array(64 * 32).fill(0x3c00); // f16 ones
    await client.setTensor(w, Buffer.from(ws.buffer));
    const payload = g.graph([norm, y]);
    t.notThrows(() => checkGraph(payload, {get: (handle) => handle === buffer.handle ? buffer : undefined}));
    await client.graphCompute(payload);
    const out = new Float32Array(new Uint8Array(await client.getTensor(y, 32 * 3 * 4)).buffer);
    for (let row = 0; row < 3; row++) {
        const values = xs.slice(row * 64, row * 64 + 64);
        const rms = Math.sqrt(values.reduce((sum, v) => sum + v * v, 0) / 64 + 1e-5);
        const expected = values.reduce((sum, v) => sum + v / rms, 0);
        t.true(Math.abs(out[row * 32]! - expected) < 1e-2 * Math.max(1, Math.abs(expected)), `${out[row * 32]} vs ${expected}`);
    }
    // The custom op with a pointer to jump to.
    const custom = g.tensor({type: F32, ne: [64, 3], op: 'NONE', src: [x]});
    custom.op = GGML_OP_NAMES.indexOf('CUSTOM');
    custom.opParams[0] = 0x41414141;
    custom.opParams[1] = 0x4141;
    await client.graphCompute(g.graph([custom]));
    await t.throwsAsync(client.alive());
    t.regex(refused?.message ?? '', /op CUSTOM, which a host never runs/);
    t.deepEqual(exits, [], 'the server never saw it');
});

test('a graph arriving in chunks of any size is held whole, checked, and forwarded byte for byte', (t) => {
    const random = new SeededRandom(7);
    for (let round = 0; round < 20; round++) {
        const session = new RpcSession({guard: new RpcGuard({budget: new AllocationBudget(2n ** 30n)})});
        const frame = (command: number, payload: Buffer) => {
            const header = Buffer.alloc(9);
            header[0] = command;
            header.writeBigUInt64LE(BigInt(payload.length), 1);
            return Buffer.concat([header, payload]);
        };
        const reply = (payload: Buffer) => {
            const header = Buffer.alloc(8);
            header.writeBigUInt64LE(BigInt(payload.length));
            return Buffer.concat([header, payload]);
        };
        // the buffer a server would give: handle 0x1000, 1 MiB at 0x7f0000000000
        const buffer = {handle: 0x1000n, size: 1n << 20n, base: 0x7f00_0000_0000n};
        session.fromClient(frame(RpcCommand.HELLO, Buffer.alloc(24)));
        session.fromServer(reply(Buffer.from([6, 0, 0, 0, ...Buffer.alloc(24)])));
        const alloc = Buffer.alloc(12);
        alloc.writeBigUInt64LE(buffer.size, 4);
        session.fromClient(frame(RpcCommand.ALLOC_BUFFER, alloc));
        const allocated = Buffer.alloc(16);
        allocated.writeBigUInt64LE(buffer.handle);
        allocated.writeBigUInt64LE(buffer.size, 8);
        session.fromServer(reply(allocated));
        const base = Buffer.alloc(8);
        base.writeBigUInt64LE(buffer.handle);
        session.fromClient(frame(RpcCommand.BUFFER_GET_BASE, base));
        const based = Buffer.alloc(8);
        based.writeBigUInt64LE(buffer.base);
        session.fromServer(reply(based));
        const g = new GraphBuilder(buffer);
        let x = g.tensor({type: F32, ne: [64, 4]});
        const nodes = [];
        for (let layer = 0; layer < 1 + random.int(0, 40); layer++) {
            x = g.tensor({type: F32, ne: [64, 4], op: 'RMS_NORM', src: [x], params: [f32(1e-5)]});
            nodes.push(x);
        }
        const bytes = frame(RpcCommand.GRAPH_COMPUTE, g.graph(nodes));
        const out: Uint8Array[] = [];
        for (let at = 0; at < bytes.length;) {
            const end = Math.min(bytes.length, at + 1 + random.int(0, random.chance(0.5) ? 16 : 4096));
            out.push(...session.fromClient(bytes.subarray(at, end)));
            at = end;
        }
        t.deepEqual(Buffer.concat(out), bytes);
    }
});
