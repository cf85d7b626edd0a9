import {join} from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import test, {type ExecutionContext} from 'ava';
import koffi from 'koffi';
import {prepareRpcServerDir} from '../engine/rpc/rpc-server-dir.js';
import {float16BitsToFloat32 as fromHalf, float32ToFloat16Bits as toHalf} from '../engine/gguf/float16.js';
import {checkGraph} from '../inference/sharded/tunnel/ggml/graph-check.js';
import {GGML_GLU_OP_NAMES, GGML_TYPES, GgmlOp, type GgmlOpName, GgmlType, typeName} from '../inference/sharded/tunnel/ggml/ggml-tables.js';
import type {Dims, RpcTensor} from '../inference/sharded/tunnel/ggml/rpc-tensor.js';
import {checkRegion, GraphCheckError, isContiguousN, isContiguousRows, shapeTensor} from '../inference/sharded/tunnel/ggml/tensor-check.js';
import {testRpcBinaries} from '../harness/rpc-binaries.js';
import {directConnection, f32, GraphBuilder, type LabBuffer, labServer, RpcLabClient} from '../harness/rpc-lab.js';
import {SeededRandom as Rng} from '../harness/seeded-random.js';

/**
 * The core op contracts (op-rules-core.ts) and the generic tensor and graph checks against a real rpc-server
 * (docs/peer-protocol.md, "Graph checks"). Per op, seeded random graphs (shapes matching and not, types, strides,
 * views, op params, sources) go through `checkGraph`; every one it accepts is computed by a server reached directly,
 * without the host's guard, which must live through it. Then realistic graphs of each op, computed and compared
 * with JavaScript where that is cheap, and the hostile graphs that once passed the checks and ended a server.
 */

const {F32, F16, BF16, Q8_0, I32, I64} = GgmlType;
const Q4_0 = GgmlType.Q4_0;
const Q4_K = 12;
const IQ2_XXS = 16;
const IQ4_NL = 20;
const TQ2_0 = 35;
const MXFP4 = 39;
/** `GGML_TENSOR_FLAG_COMPUTE`, `GGML_TENSOR_FLAG_OUTPUT`. */
const COMPUTE = 16;
const OUTPUT = 2;
/** The server's CPU threads: two, for the kernels' multi-threaded paths (split keys, chunking, per-thread scratch). */
const THREADS = 2;
const BUFFER_BYTES = 12n << 20n;
const CASES = 300;
/** How long a graph may take before the server counts as hung. */
const HANG_MS = 30_000;

const INTERESTING_TYPES = [F32, F16, BF16, I32, I64, 24, 28, Q4_0, Q8_0, Q4_K, IQ2_XXS, IQ4_NL, TQ2_0, MXFP4, 9, 15, 4];


function seedOf(name: string) {
    let hash = 0x811c9dc5;
    for (const char of name)
        hash = Math.imul(hash ^ char.charCodeAt(0), 0x01000193) >>> 0;
    return hash;
}

const traitsOf = (type: number) => GGML_TYPES[type] ?? {name: `type ${type}`, blockSize: 1, typeSize: 4, quantized: false};

// ---------------------------------------------------------------------------------------------------------------
// The lab: a server, a direct connection, one buffer.

interface Lab {
    client: RpcLabClient,
    buffer: LabBuffer,
    lines: string[],
    exits: unknown[],
    check(payload: Buffer): GraphCheckError | undefined,
    /** Computes a graph the checks accepted (zeroing index tensors first); throws, with the case, if the server does not live. */
    compute(g: GraphBuilder, nodes: RpcTensor[], what: string, zero?: RpcTensor[]): Promise<void>
}

async function openLab(t: ExecutionContext): Promise<Lab> {
    const {port, lines, exits} = await labServer(t, THREADS);
    const client = new RpcLabClient(directConnection(port));
    t.teardown(() => client.close());
    await client.hello();
    const buffer = await client.buffer(BUFFER_BYTES);
    const buffers = {get: (handle: bigint) => handle === buffer.handle ? buffer : undefined};
    return {
        client, buffer, lines, exits,
        check(payload) {
            try {
                checkGraph(payload, buffers);
                return undefined;
            } catch (error) {
                if (error instanceof GraphCheckError)
                    return error;
                throw error;
            }
        },
        async compute(g, nodes, what, zero = []) {
            for (const tensor of zero) {
                const owner = ownerOf(g, tensor);
                const packed = {...owner, nb: packedStrides(owner.type, owner.ne)};
                await client.setTensor(packed, Buffer.alloc(packed.nb[3] * packed.ne[3]));
            }
            await client.graphCompute(g.graph(nodes));
            let timer: NodeJS.Timeout | undefined;
            const hung = new Promise<never>((_, reject) => timer = setTimeout(() => reject(new Error('no reply: the server hangs')), HANG_MS));
            try {
                await Promise.race([client.alive(), hung]);
            } catch (error) {
                await sleep(300); // its last lines
                throw new Error(`the server did not live through ${what} (${(error as Error).message}; exits ${JSON.stringify(exits)}):\n`
                    + `${describe(g)}\n--- server ---\n${lines.slice(-25).join('\n')}`);
            } finally {
                clearTimeout(timer);
            }
        }
    };
}

function packedStrides(type: number, ne: readonly number[]): Dims {
    const {typeSize, blockSize} = traitsOf(type);
    const nb = [typeSize, 0, 0, 0] as Dims;
    nb[1] = typeSize * ne[0]! / blockSize;
    nb[2] = nb[1] * ne[1]!;
    nb[3] = nb[2] * ne[2]!;
    return nb;
}

/** `ggml_nbytes`. */
function nbytes(tensor: RpcTensor) {
    const {typeSize, blockSize} = traitsOf(tensor.type);
    return typeSize * tensor.ne[0] / blockSize + tensor.ne.slice(1).reduce((sum, n, dim) => sum + (n - 1) * tensor.nb[dim + 1]!, 0);
}

function ownerOf(g: GraphBuilder, tensor: RpcTensor) {
    return tensor.viewSrc === 0n ? tensor : g.tensors.find((other) => other.id === tensor.viewSrc)!;
}

/** The case, for a failure's message: every tensor the builder made. */
function describe(g: GraphBuilder) {
    const index = new Map(g.tensors.map((tensor, at) => [tensor.id, at]));
    return g.tensors.map((tensor, at) => {
        const params = [...tensor.opParams].map((value, slot) => value === 0 ? '' : `${slot}:${value}`).filter(Boolean).join(' ');
        const sources = tensor.src.map((id) => id === 0n ? '' : `#${index.get(id) ?? id}`).filter(Boolean).join(',');
        const view = tensor.viewSrc === 0n ? '' : ` view of #${index.get(tensor.viewSrc)} at ${tensor.viewOffs}`;
        const op = tensor.op === 0 ? 'leaf' : Object.keys(GgmlOp).find((name) => GgmlOp[name as GgmlOpName] === tensor.op);
        return `#${at} ${op} ${typeName(tensor.type)} ne=[${tensor.ne}] nb=[${tensor.nb}]${view} src=[${sources}] params={${params}} flags=${tensor.flags} uses=${tensor.useCount}`;
    }).join('\n');
}

// ---------------------------------------------------------------------------------------------------------------
// Random tensors: packed, padded rows, permuted, or with one stride made hostile.

type Layout = 'packed' | 'padded' | 'permuted' | 'hostile';

function place(r: Rng, g: GraphBuilder, type: number, ne: readonly number[], layout?: Layout): RpcTensor {
    const chosen = layout ?? r.pick<Layout>(['packed', 'packed', 'packed', 'padded', 'permuted', 'hostile']);
    const {typeSize, blockSize, quantized} = traitsOf(type);
    if (chosen === 'packed')
        return g.tensor({type, ne});
    if (chosen === 'padded') {
        const pad = r.int(1, 2) * blockSize;
        const owner = g.tensor({type, ne: [ne[0]! + pad, ne[1]! + r.int(0, 1), ne[2]!, ne[3]!]});
        const offset = r.int(0, pad / blockSize) * typeSize;
        return g.tensor({type, ne, view: {of: owner, offset, nb: [owner.nb[1], owner.nb[2], owner.nb[2] * ne[2]!]}});
    }
    if (chosen === 'permuted') {
        // The owner holds the dimensions in another order; the view reads them back in this one (rows kept, mostly).
        const order = quantized || r.chance(0.6) ? [0, ...r.shuffle([1, 2, 3])] : r.shuffle([0, 1, 2, 3]);
        const owner = g.tensor({type, ne: order.map((dim) => ne[dim]!)});
        const view = g.tensor({type, ne, view: {of: owner}});
        for (const [at, dim] of order.entries())
            view.nb[dim] = owner.nb[at]!;
        return view;
    }
    const tensor = place(r, g, type, ne, r.pick<Layout>(['packed', 'padded', 'permuted']));
    const dim = r.int(0, 3);
    tensor.nb[dim] = r.pick([0, 1, 3, typeSize, 2 * typeSize, tensor.nb[dim]! + typeSize, Math.max(0, tensor.nb[dim]! - typeSize), 1 << 20]);
    return tensor;
}

/** Makes `tensor` a computed node of `op`. */
function computed(tensor: RpcTensor, op: GgmlOpName, sources: (RpcTensor | undefined)[], params: readonly number[] = []) {
    tensor.op = GgmlOp[op];
    tensor.flags = COMPUTE;
    for (let slot = 0; slot < tensor.src.length; slot++)
        tensor.src[slot] = sources[slot]?.id ?? 0n;
    tensor.opParams.fill(0);
    for (const [slot, value] of params.entries())
        tensor.opParams[slot] = value;
    return tensor;
}

/** A node: a new tensor of the result's shape (mostly), placed at random, computed by `op`. */
function node(r: Rng, g: GraphBuilder, type: number, ne: readonly number[], op: GgmlOpName, sources: (RpcTensor | undefined)[], params: readonly number[] = [], packed = 0.67) {
    const layout = r.chance(packed) ? 'packed' : r.pick<Layout>(['padded', 'hostile']);
    return computed(place(r, g, type, ne, layout), op, sources, params);
}

/** Sometimes a wrong shape: a dimension changed. */
function maybeWrong(r: Rng, ne: readonly number[], p = 0.12): number[] {
    const result = [...ne];
    if (r.chance(p)) {
        const dim = r.int(0, 3);
        result[dim] = Math.max(1, result[dim]! + r.pick([-1, 1, 2]) * (dim === 0 ? 32 : 1));
    }
    return result;
}

function maybeType(r: Rng, type: number, p = 0.08) {
    return r.chance(p) ? r.pick(INTERESTING_TYPES) : type;
}

/** Op params, sometimes with one word made hostile. */
function maybeParams(r: Rng, params: number[], p = 0.12) {
    const result = [...params];
    if (r.chance(p))
        result[r.int(0, 15)] = r.pick([-1, 1, 2, 3, 7, 1 << 30, -(1 << 31), 0x7fffffff, f32(Number.NaN), f32(Number.POSITIVE_INFINITY), f32(-1), f32(1e30), 0]);
    return result;
}

// ---------------------------------------------------------------------------------------------------------------
// Per op: a seeded generator of graphs.

interface Generated {
    nodes: RpcTensor[],
    /** Index tensors: zeroed before the graph runs (row indices are data, which the kernels check themselves). */
    zero?: RpcTensor[]
}

type Generator = (r: Rng, g: GraphBuilder) => Generated;

function randomDims(r: Rng, blockSize = 1, maxBlocks = 3): number[] {
    return [blockSize * r.int(1, maxBlocks) * (blockSize === 1 ? r.pick([1, 4, 8, 16]) : 1), r.int(1, 4), r.int(1, 3), r.int(1, 2)];
}

const BINARY_TYPES: [number, number, number][] = [[F32, F32, F32], [F16, F16, F16], [BF16, BF16, BF16], [BF16, F32, BF16], [BF16, F32, F32], [F16, F32, F16], [F16, F32, F32]];

function binaryGenerator(op: GgmlOpName): Generator {
    return (r, g) => {
        const [ta, tb, tr] = r.chance(0.85) ? r.pick(BINARY_TYPES) : [maybeType(r, F32, 1), maybeType(r, F32, 0.5), maybeType(r, F32, 0.5)];
        const ne = randomDims(r);
        const tiles = ne.map((n) => r.pick([n, 1, n % 2 === 0 ? n / 2 : n]));
        const a = place(r, g, ta, ne);
        const b = place(r, g, tb, maybeWrong(r, tiles));
        return {nodes: [node(r, g, tr, maybeWrong(r, ne, 0.08), op, [a, b])]};
    };
}

const rmsNormGenerator: Generator = (r, g) => {
    const ne = randomDims(r);
    const a = place(r, g, maybeType(r, F32), ne);
    const eps = r.pick([f32(1e-5), f32(1e-6), 0, f32(-1e-5), f32(Number.NaN)]);
    const norm = node(r, g, F32, maybeWrong(r, ne, 0.06), 'RMS_NORM', [a], maybeParams(r, [eps], 0.06));
    if (!r.chance(0.5))
        return {nodes: [norm]};
    // RMS_NORM then MUL, which the CPU backend fuses (ggml_cpu_try_fuse_ops) when the peer's flags and use counts say so.
    const w = place(r, g, r.pick([F32, F32, F16]), maybeWrong(r, ne.map((n) => r.pick([n, 1])), 0.1));
    const mul = node(r, g, F32, maybeWrong(r, ne, 0.06), 'MUL', r.chance(0.5) ? [norm, w] : [w, norm]);
    norm.useCount = r.pick([0, 1, 1, 1, 2, -1, 1 << 30]);
    norm.flags = r.pick([COMPUTE, COMPUTE, COMPUTE | OUTPUT, 0, COMPUTE | 1, -1]);
    mul.flags = r.pick([COMPUTE, COMPUTE, 0, COMPUTE | OUTPUT]);
    return {nodes: [norm, mul]};
};

const MATMUL_TYPES = [F32, F16, BF16, Q8_0, Q4_0, Q4_K, IQ2_XXS, IQ4_NL, TQ2_0, MXFP4];

const mulMatGenerator: Generator = (r, g) => {
    if (r.chance(0.12)) {
        // A Hadamard rotation (llama_mul_mat_hadamard): a square f32 matrix, GGML_HINT_SRC0_IS_HADAMARD.
        const n = r.pick([4, 8, 16, 12]);
        const rot = place(r, g, F32, [n, r.pick([n, n, n / 2])]);
        const x = place(r, g, maybeType(r, F32), [n, r.int(1, 5), r.int(1, 2), 1]);
        return {nodes: [node(r, g, F32, [rot.ne[1], x.ne[1], x.ne[2], 1], 'MUL_MAT', [rot, x], maybeParams(r, [0, 1]))]};
    }
    const type = r.chance(0.9) ? r.pick(MATMUL_TYPES) : r.pick(INTERESTING_TYPES);
    const {blockSize} = traitsOf(type);
    const k = (blockSize === 1 ? r.pick([1, 16, 32, 48, 64]) : blockSize * r.int(1, 2));
    const rows = r.pick([1, 3, 4, 8, 16, 17, 32]);
    const [ne02, ne03] = [r.int(1, 2), r.int(1, 2)];
    const a = place(r, g, type, [k, rows, ne02, ne03]);
    const bType = r.chance(0.85) ? (FLOATS_SET.has(type) && r.chance(0.3) ? type : F32) : r.pick(INTERESTING_TYPES);
    const b = place(r, g, bType, maybeWrong(r, [k, r.pick([1, 2, 3, 8, 9, 16]), ne02 * r.int(1, 2), ne03 * r.int(1, 2)]));
    const params = maybeParams(r, [r.pick([0, 0, 10]), 0]);
    return {nodes: [node(r, g, F32, maybeWrong(r, [rows, b.ne[1], b.ne[2], b.ne[3]], 0.06), 'MUL_MAT', [a, b], params)]};
};
const FLOATS_SET = new Set<number>([F32, F16, BF16]);

const COPY_TYPES = [F32, F32, F16, BF16, I32, Q8_0, Q4_0, Q4_K, IQ2_XXS, MXFP4];

function reshaped(r: Rng, ne: readonly number[], blockSize: number): number[] {
    const total = ne.reduce((product, n) => product * n, 1);
    // Another shape of as many elements: the first dimension a whole number of blocks.
    for (const first of r.shuffle([ne[0]!, ne[0]! * ne[1]!, ne[0]! * ne[1]! * ne[2]!, total]))
        if (first % blockSize === 0)
            return [first, total / first, 1, 1];
    return [...ne];
}

const cpyGenerator: Generator = (r, g) => {
    const from = r.pick(COPY_TYPES);
    const to = r.chance(0.4) ? from : r.pick(COPY_TYPES);
    const blockSize = Math.max(traitsOf(from).blockSize, traitsOf(to).blockSize);
    const ne = [blockSize * r.int(1, 2) * (blockSize === 1 ? r.pick([1, 4, 8]) : 1), r.int(1, 4), r.int(1, 3), r.int(1, 2)];
    const a = place(r, g, from, ne);
    if (r.chance(0.2)) {
        // ggml_cast: a new tensor that names itself as the destination.
        const cast = node(r, g, to, maybeWrong(r, ne, 0.06), 'CPY', [a]);
        cast.src[1] = r.chance(0.9) ? cast.id : a.id;
        return {nodes: [cast]};
    }
    const bNe = r.chance(0.6) ? ne : maybeWrong(r, reshaped(r, ne, traitsOf(to).blockSize), 0.1);
    const b = place(r, g, to, bNe);
    const result = g.tensor({type: to, ne: bNe, view: {of: b}});
    if (r.chance(0.08))
        result.nb[r.int(0, 3)]! += traitsOf(to).typeSize;
    return {nodes: [computed(result, 'CPY', [a, b])]};
};

const contGenerator: Generator = (r, g) => {
    const type = r.pick(COPY_TYPES);
    const ne = randomDims(r, traitsOf(type).blockSize, 2);
    const a = place(r, g, type, ne);
    const shape = r.chance(0.5) ? ne : maybeWrong(r, reshaped(r, ne, traitsOf(type).blockSize), 0.1);
    return {nodes: [node(r, g, maybeType(r, type, 0.1), shape, 'CONT', [a], maybeParams(r, [], 0.05))]};
};

/** A view op's node and a CONT of it, which reads through the view. */
function viewGenerator(op: 'RESHAPE' | 'VIEW' | 'PERMUTE' | 'TRANSPOSE'): Generator {
    return (r, g) => {
        const type = r.pick([F32, F16, I32, Q8_0]);
        const {typeSize, blockSize} = traitsOf(type);
        const ne = randomDims(r, blockSize, 2);
        const a = place(r, g, type, ne, r.pick<Layout>(['packed', 'packed', 'padded', 'permuted']));
        let ne2 = [...ne];
        let nb = [...a.nb];
        let offset = 0;
        let params: number[] = [];
        if (op === 'RESHAPE')
            ne2 = reshaped(r, ne, blockSize);
        else if (op === 'VIEW') {
            ne2 = ne.map((n, dim) => dim === 0 ? blockSize * r.int(1, n / blockSize) : r.int(1, n));
            offset = r.int(0, 2) * typeSize;
            params = [offset];
        } else if (op === 'PERMUTE') {
            const axes = blockSize === 1 ? r.shuffle([0, 1, 2, 3]) : [0, ...r.shuffle([1, 2, 3])];
            for (const [dim, axis] of axes.entries()) {
                ne2[axis] = ne[dim]!;
                nb[axis] = a.nb[dim]!;
            }
            params = axes;
        } else {
            ne2 = [ne[1]!, ne[0]!, ne[2]!, ne[3]!];
            nb = [a.nb[1], a.nb[0], a.nb[2], a.nb[3]];
        }
        ne2 = maybeWrong(r, ne2, 0.06);
        const view = g.tensor({type, ne: ne2, view: {of: a, offset}});
        view.nb = (op === 'RESHAPE' ? packedStrides(type, ne2) : nb) as Dims;
        if (r.chance(0.1))
            view.nb[r.int(0, 3)] = r.pick([0, 1, typeSize * 3, 1 << 20]);
        computed(view, op, [a], maybeParams(r, params, 0.06));
        const cont = node(r, g, type, [...view.ne], 'CONT', [view]);
        return {nodes: [view, cont]};
    };
}

const getRowsGenerator: Generator = (r, g) => {
    const type = r.chance(0.9) ? r.pick([F32, F16, BF16, I32, Q8_0, Q4_0, Q4_K, IQ2_XXS, IQ4_NL, TQ2_0, MXFP4]) : r.pick(INTERESTING_TYPES);
    const {blockSize} = traitsOf(type);
    const ne = randomDims(r, blockSize, 2);
    const a = place(r, g, type, ne);
    const indices = place(r, g, maybeType(r, I32, 0.06), maybeWrong(r, [r.int(1, 5), ne[2]!, ne[3]!, 1], 0.1));
    const resultType = r.chance(0.92) ? (type === I32 ? I32 : F32) : r.pick([F16, I32, F32]);
    return {nodes: [node(r, g, resultType, maybeWrong(r, [ne[0]!, indices.ne[0], indices.ne[1], indices.ne[2]], 0.06), 'GET_ROWS', [a, indices])], zero: [indices]};
};

const setRowsGenerator: Generator = (r, g) => {
    const type = r.chance(0.9) ? r.pick([F32, F16, BF16, Q8_0, Q4_0, IQ4_NL, Q4_K, IQ2_XXS, MXFP4]) : r.pick(INTERESTING_TYPES);
    const {blockSize} = traitsOf(type);
    const ne = [blockSize * r.int(1, 2) * (blockSize === 1 ? r.pick([1, 8]) : 1), r.int(2, 8), r.int(1, 2), r.int(1, 2)];
    const a = place(r, g, type, ne);
    const rows = place(r, g, r.chance(0.9) ? r.pick([F32, F16]) : r.pick(INTERESTING_TYPES), maybeWrong(r, [ne[0]!, r.int(1, 3), ne[2]!, ne[3]!], 0.08));
    const indices = place(r, g, r.chance(0.92) ? r.pick([I64, I32]) : r.pick(INTERESTING_TYPES),
        maybeWrong(r, [rows.ne[1], r.pick([1, rows.ne[2]]), r.pick([1, rows.ne[3]]), 1], 0.08));
    const result = g.tensor({type, ne, view: {of: a}});
    if (r.chance(0.06))
        result.nb[r.int(1, 3)]! += traitsOf(type).typeSize;
    return {nodes: [computed(result, 'SET_ROWS', [rows, indices, a], maybeParams(r, [], 0.05))], zero: [indices]};
};

const softMaxGenerator: Generator = (r, g) => {
    const [kv, q, heads] = [r.pick([1, 5, 16, 33, 64]), r.int(1, 5), r.int(1, 4)];
    const a = place(r, g, maybeType(r, F32), [kv, q, heads, r.int(1, 2)], r.chance(0.6) ? 'packed' : undefined);
    const mask = r.chance(0.6) ? place(r, g, r.chance(0.9) ? r.pick([F16, F32]) : r.pick(INTERESTING_TYPES),
        maybeWrong(r, [kv, q + r.int(0, 3), r.pick([1, heads]), 1], 0.1)) : undefined;
    const sinks = r.chance(0.3) ? place(r, g, maybeType(r, F32), maybeWrong(r, [heads, 1, 1, 1], 0.1)) : undefined;
    const params = maybeParams(r, [f32(r.pick([1, 0.125, -2])), mask !== undefined && r.chance(0.3) ? f32(8) : 0]);
    const result = r.chance(0.15) ? computed(g.tensor({type: F32, ne: a.ne, view: {of: a}}), 'SOFT_MAX', [a, mask, sinks], params)
        : node(r, g, F32, maybeWrong(r, a.ne, 0.05), 'SOFT_MAX', [a, mask, sinks], params);
    return {nodes: [result]};
};

const ropeGenerator: Generator = (r, g) => {
    const mode = r.chance(0.9) ? r.pick([0, 2, 8, 24, 40]) : r.pick([1, 3, 16, 6]);
    const multi = (mode & 8) !== 0;
    const headDim = r.pick([8, 16, 32, 64, 64, 6, 7]);
    const [heads, tokens] = [r.int(1, 4), r.int(1, 5)];
    const a = place(r, g, r.chance(0.9) ? r.pick([F32, F16]) : r.pick(INTERESTING_TYPES), [headDim, heads, tokens, 1], r.chance(0.4) ? 'packed' : undefined);
    const positions = place(r, g, maybeType(r, I32, 0.05), maybeWrong(r, [tokens * (multi ? 4 : 1), 1, 1, 1], 0.08));
    const nDims = mode === 24 ? headDim / 2 : r.pick([headDim, headDim, headDim, headDim / 2, 2, 0]) - (r.chance(0.05) ? 1 : 0);
    const offset = r.chance(0.1) ? r.pick([2, 4, -2]) : 0;
    const factors = r.chance(0.3) ? place(r, g, maybeType(r, F32, 0.05), [Math.max(1, Math.floor(r.pick([nDims / 2, headDim / 2, 1]))), 1, 1, 1], r.pick<Layout>(['packed', 'packed', 'hostile'])) : undefined;
    const sections = multi ? r.pick([[2, 1, 1, 0], [2, 1, 1, 0], [headDim / 4, headDim / 8, headDim / 8, 0], [0, 0, 0, 0], [headDim, headDim, 0, 0], [0x7fffffff, 0x7fffffff, 2, 0]]) : [0, 0, 0, 0];
    const params = maybeParams(r, [0, nDims, mode, 0, 4096, f32(10000), f32(r.pick([1, 0.25])), f32(r.pick([0, 1])), f32(1), f32(32), f32(1), ...sections, offset]);
    const result = r.chance(0.15) ? computed(g.tensor({type: a.type, ne: a.ne, view: {of: a}}), 'ROPE', [a, positions, factors], params)
        : node(r, g, a.type, maybeWrong(r, a.ne, 0.05), 'ROPE', [a, positions, factors], params);
    return {nodes: [result]};
};

const flashAttentionGenerator: Generator = (r, g) => {
    const path = r.pick(['chunked', 'tiled', 'split', 'chunked']);
    const dk = r.pick([16, 32, 64, 40]);
    const dv = r.chance(0.8) ? dk : r.pick([16, 32, 8]);
    const headsKv = r.int(1, 2);
    const heads = headsKv * r.int(1, 2);
    const queries = path === 'tiled' ? r.int(64, 70) : path === 'split' ? 1 : r.int(1, 4);
    const keys = path === 'split' ? r.int(512, 600) : r.pick([1, 7, 32, 64, 65]);
    const kvType = r.chance(0.85) ? r.pick([F16, F16, F32, BF16, Q8_0, Q4_0]) : r.pick(INTERESTING_TYPES);
    const q = place(r, g, maybeType(r, F32, 0.05), [dk, queries, heads, 1]);
    const kBlock = traitsOf(kvType).blockSize;
    const k = place(r, g, kvType, maybeWrong(r, [Math.max(dk, kBlock), keys, headsKv, 1], 0.06));
    const v = place(r, g, r.chance(0.9) ? kvType : r.pick([F16, F32]), maybeWrong(r, [Math.max(dv, kBlock), keys, headsKv, 1], 0.06));
    const mask = r.chance(0.6) ? place(r, g, r.chance(0.92) ? F16 : r.pick([F32, BF16]),
        maybeWrong(r, [keys + r.pick([0, 0, 3]), queries + r.pick([0, 0, 1]), 1, 1], 0.08), r.pick<Layout>(['packed', 'packed', 'padded', 'hostile'])) : undefined;
    const sinks = r.chance(0.25) ? place(r, g, F32, [heads, 1, 1, 1], r.pick<Layout>(['packed', 'packed', 'hostile'])) : undefined;
    const params = maybeParams(r, [f32(1 / Math.sqrt(dk)), mask !== undefined && r.chance(0.2) ? f32(8) : 0, r.chance(0.2) ? f32(30) : 0, r.pick([0, 0, 10])]);
    return {nodes: [node(r, g, F32, maybeWrong(r, [v.ne[0], heads, queries, 1], 0.05), 'FLASH_ATTN_EXT', [q, k, v, mask, sinks], params, 0.85)]};
};

const gluGenerator: Generator = (r, g) => {
    const op = r.chance(0.92) ? r.int(0, GGML_GLU_OP_NAMES.length - 1) : r.pick([-1, 7, 100]);
    const type = r.chance(0.9) ? r.pick([F32, F16]) : r.pick(INTERESTING_TYPES);
    const split = r.chance(0.4);
    const half = r.pick([1, 4, 8, 16]);
    const ne = [split ? half : 2 * half + (r.chance(0.1) ? 1 : 0), r.int(1, 4), r.int(1, 3), r.int(1, 2)];
    const a = place(r, g, type, ne);
    const b = split ? place(r, g, maybeType(r, type, 0.05), maybeWrong(r, ne, 0.08)) : undefined;
    const oai = GGML_GLU_OP_NAMES[op] === 'SWIGLU_OAI' || GGML_GLU_OP_NAMES[op] === 'SWIGLU_CLAMP';
    const params = maybeParams(r, [op, r.chance(0.9) ? r.int(0, 1) : 2, oai ? f32(1.702) : 0, oai ? f32(r.pick([7, 7, -7])) : 0]);
    const resultNe = split ? ne : [Math.floor(ne[0]! / 2), ne[1]!, ne[2]!, ne[3]!];
    return {nodes: [node(r, g, type, maybeWrong(r, resultNe, 0.05), 'GLU', [a, b], params)]};
};

const noneGenerator: Generator = (r, g) => {
    const a = place(r, g, r.pick(INTERESTING_TYPES.filter((type) => GGML_TYPES[type] !== null)), [32, r.int(1, 3), 1, 1]);
    const leaf = place(r, g, F32, [r.int(1, 8), r.int(1, 3), 1, 1]);
    computed(leaf, 'NONE', r.chance(0.3) ? [a] : []);
    leaf.flags = r.pick([0, COMPUTE, -1]);
    return {nodes: [leaf]};
};

// ---------------------------------------------------------------------------------------------------------------
// The seeded cases, per op.

const FUZZ: [string, Generator][] = [
    ['NONE', noneGenerator],
    ['ADD', binaryGenerator('ADD')],
    ['SUB', binaryGenerator('SUB')],
    ['MUL', binaryGenerator('MUL')],
    ['DIV', binaryGenerator('DIV')],
    ['RMS_NORM', rmsNormGenerator],
    ['MUL_MAT', mulMatGenerator],
    ['CPY', cpyGenerator],
    ['CONT', contGenerator],
    ['RESHAPE', viewGenerator('RESHAPE')],
    ['VIEW', viewGenerator('VIEW')],
    ['PERMUTE', viewGenerator('PERMUTE')],
    ['TRANSPOSE', viewGenerator('TRANSPOSE')],
    ['GET_ROWS', getRowsGenerator],
    ['SET_ROWS', setRowsGenerator],
    ['SOFT_MAX', softMaxGenerator],
    ['ROPE', ropeGenerator],
    ['FLASH_ATTN_EXT', flashAttentionGenerator],
    ['GLU', gluGenerator]
];

for (const [op, generate] of FUZZ)
    test.serial(`${op}: ${CASES} seeded graphs through the checks, every accepted one computed by a real server that lives`, async (t) => {
        const lab = await openLab(t);
        const r = new Rng(seedOf(op));
        let accepted = 0;
        const refusals = new Map<string, number>();
        for (let index = 0; index < CASES; index++) {
            const g = new GraphBuilder(lab.buffer);
            const {nodes, zero} = generate(r, g);
            const refusal = lab.check(g.graph(nodes));
            if (refusal !== undefined) {
                refusals.set(refusal.rule, (refusals.get(refusal.rule) ?? 0) + 1);
                continue;
            }
            accepted++;
            await lab.compute(g, nodes, `${op} case ${index}`, zero);
        }
        const refused = CASES - accepted;
        t.log(`${op}: ${accepted} accepted and computed, ${refused} refused (${[...refusals].map(([rule, count]) => `${rule} ${count}`).join(', ')})`);
        t.true(accepted >= CASES / 6, `only ${accepted} accepted`);
        t.true(refused >= CASES / 20, `only ${refused} refused`);
        t.deepEqual(lab.exits, []);
    });

// ---------------------------------------------------------------------------------------------------------------
// Realistic graphs, computed and compared.

function f32Bytes(values: ArrayLike<number>) {
    return Buffer.from(Float32Array.from(values).buffer);
}

function readF32(bytes: Buffer) {
    return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
}

function halfBytes(values: ArrayLike<number>) {
    return Buffer.from(Uint16Array.from(Array.from(values, toHalf)).buffer);
}

/** q8_0: blocks of 32, an f16 scale and 32 int8s. */
function quantizeQ8(values: ArrayLike<number>) {
    const blocks = values.length / 32;
    const bytes = Buffer.alloc(blocks * 34);
    const dequantized = new Float64Array(values.length);
    for (let block = 0; block < blocks; block++) {
        let max = 0;
        for (let j = 0; j < 32; j++)
            max = Math.max(max, Math.abs(values[block * 32 + j]!));
        const scale = toHalf(max / 127);
        const d = fromHalf(scale);
        bytes.writeUInt16LE(scale, block * 34);
        for (let j = 0; j < 32; j++) {
            const q = d === 0 ? 0 : Math.max(-127, Math.min(127, Math.round(values[block * 32 + j]! / d))) || 0; // not -0
            bytes.writeInt8(q, block * 34 + 2 + j);
            dequantized[block * 32 + j] = Math.fround(d * q);
        }
    }
    return {bytes, dequantized};
}

const series = (count: number, seed: number) => {
    const r = new Rng(seed);
    return Float32Array.from({length: count}, () => Math.fround(r.normal()));
};

function near(t: ExecutionContext, actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number | ((index: number) => number), what: string) {
    t.is(actual.length, expected.length, `${what}: lengths`);
    let worst = 0;
    let at = -1;
    for (let index = 0; index < expected.length; index++) {
        const allowed = typeof tolerance === 'number' ? tolerance * Math.max(1, Math.abs(expected[index]!)) : tolerance(index);
        const error = Math.abs(actual[index]! - expected[index]!);
        if (!(error <= allowed) && (at < 0 || error > worst)) {
            worst = error;
            at = index;
        }
    }
    t.true(at < 0, `${what}: element ${at} is ${actual[at]}, not ${expected[at]}`);
}

/** One server for the realistic graphs: each computes, then its result is read back. */
async function realisticLab(t: ExecutionContext) {
    const lab = await openLab(t);
    const g = new GraphBuilder(lab.buffer);
    return {
        lab, g,
        set: (tensor: RpcTensor, bytes: Buffer) => lab.client.setTensor(tensor, bytes),
        async run(nodes: RpcTensor[]) {
            const refusal = lab.check(g.graph(nodes));
            t.is(refusal, undefined, refusal?.message);
            await lab.compute(g, nodes, t.title);
        },
        read: (tensor: RpcTensor) => lab.client.getTensor(tensor, nbytes(tensor))
    };
}

test.serial('realistic ADD, SUB, MUL, DIV broadcast rows and planes of b over a padded view of a, as float32 arithmetic does', async (t) => {
    const {g, set, run, read} = await realisticLab(t);
    const [n0, n1, n2] = [16, 3, 2];
    const owner = g.tensor({type: F32, ne: [n0 + 8, n1, n2]});
    const a = g.tensor({type: F32, ne: [n0, n1, n2], view: {of: owner, offset: 16, nb: [owner.nb[1], owner.nb[2], owner.nb[3]]}});
    const b = g.tensor({type: F32, ne: [n0, 1, n2]});
    const ownerValues = series((n0 + 8) * n1 * n2, 1);
    const bValues = series(n0 * n2, 2).map((value) => value + Math.sign(value) * 0.5);
    await set(owner, f32Bytes(ownerValues));
    await set(b, f32Bytes(bValues));
    const ops = {ADD: (x: number, y: number) => x + y, SUB: (x: number, y: number) => x - y, MUL: (x: number, y: number) => x * y, DIV: (x: number, y: number) => x / y} as const;
    const nodes = Object.keys(ops).map((op) => g.tensor({type: F32, ne: [n0, n1, n2], op: op as GgmlOpName, src: [a, b]}));
    await run(nodes);
    for (const [index, [op, apply]] of Object.entries(ops).entries()) {
        const out = readF32(await read(nodes[index]!));
        const expected: number[] = [];
        for (let i2 = 0; i2 < n2; i2++)
            for (let i1 = 0; i1 < n1; i1++)
                for (let i0 = 0; i0 < n0; i0++)
                    expected.push(Math.fround(apply(ownerValues[i2 * (n0 + 8) * n1 + i1 * (n0 + 8) + 4 + i0]!, bValues[i2 * n0 + i0]!)));
        t.deepEqual([...out], expected, op);
    }
});

test.serial('realistic RMS_NORM, alone and fused with the MUL that follows it (use count 1)', async (t) => {
    const {g, set, run, read} = await realisticLab(t);
    const [n0, n1] = [64, 5];
    const x = g.tensor({type: F32, ne: [n0, n1]});
    const w = g.tensor({type: F32, ne: [n0]});
    const xs = series(n0 * n1, 3);
    const ws = series(n0, 4);
    await set(x, f32Bytes(xs));
    await set(w, f32Bytes(ws));
    const norm = g.tensor({type: F32, ne: [n0, n1], op: 'RMS_NORM', src: [x], params: [f32(1e-6)]});
    await run([norm]);
    const normFused = g.tensor({type: F32, ne: [n0, n1], op: 'RMS_NORM', src: [x], params: [f32(1e-6)]});
    normFused.useCount = 1;
    const scaled = g.tensor({type: F32, ne: [n0, n1], op: 'MUL', src: [normFused, w]});
    await run([normFused, scaled]);
    const expected: number[] = [];
    const expectedScaled: number[] = [];
    for (let row = 0; row < n1; row++) {
        const values = xs.slice(row * n0, (row + 1) * n0);
        const scale = 1 / Math.sqrt(values.reduce((sum, v) => sum + v * v, 0) / n0 + 1e-6);
        for (const [i, v] of values.entries()) {
            expected.push(v * scale);
            expectedScaled.push(v * scale * ws[i]!);
        }
    }
    near(t, readF32(await read(norm)), expected, 1e-5, 'RMS_NORM');
    near(t, readF32(await read(scaled)), expectedScaled, 1e-5, 'RMS_NORM × w');
});

function matmulReference(weights: ArrayLike<number>, x: ArrayLike<number>, k: number, rows: number, columns: number) {
    const out: number[] = [];
    const scale: number[] = [];
    for (let column = 0; column < columns; column++)
        for (let row = 0; row < rows; row++) {
            let sum = 0;
            let magnitude = 0;
            for (let i = 0; i < k; i++) {
                sum += weights[row * k + i]! * x[column * k + i]!;
                magnitude += Math.abs(weights[row * k + i]! * x[column * k + i]!);
            }
            out.push(sum);
            scale.push(magnitude);
        }
    return {out, scale};
}

test.serial('realistic MUL_MAT: f32 (llamafile\'s tiles), f16 and q8_0 weights, broadcast over planes, with ggml_mul_mat_set_prec', async (t) => {
    const {g, set, run, read} = await realisticLab(t);
    const [k, rows, columns] = [64, 16, 5];
    const ws = series(k * rows, 5);
    const xs = series(k * columns * 2, 6);
    const x = g.tensor({type: F32, ne: [k, columns, 2]});
    await set(x, f32Bytes(xs));
    const w32 = g.tensor({type: F32, ne: [k, rows]});
    const w16 = g.tensor({type: F16, ne: [k, rows]});
    const w8 = g.tensor({type: Q8_0, ne: [k, rows]});
    const q8 = quantizeQ8(ws);
    await set(w32, f32Bytes(ws));
    await set(w16, halfBytes(ws));
    await set(w8, q8.bytes);
    const halves = Float64Array.from(ws, (value) => fromHalf(toHalf(value)));
    const cases = [[w32, ws, 1e-4], [w16, halves, 4e-3], [w8, q8.dequantized, 1.5e-2]] as const;
    const nodes = cases.map(([w], index) => g.tensor({type: F32, ne: [rows, columns, 2], op: 'MUL_MAT', src: [w, x], params: [index === 2 ? 10 : 0]}));
    await run(nodes);
    for (const [index, [w, values, tolerance]] of cases.entries()) {
        const {out, scale} = matmulReference(values, xs, k, rows, columns * 2);
        near(t, readF32(await read(nodes[index]!)), out, (i) => tolerance * scale[i]! + 1e-5, `MUL_MAT ${typeName(w.type)}`);
    }
});

test.serial('realistic MUL_MAT with GGML_HINT_SRC0_IS_HADAMARD: the fast Walsh-Hadamard transform of b\'s rows (llama_mul_mat_hadamard)', async (t) => {
    const {g, set, run, read} = await realisticLab(t);
    const [n, columns] = [16, 3];
    const rot = g.tensor({type: F32, ne: [n, n]});
    const x = g.tensor({type: F32, ne: [n, columns]});
    const xs = series(n * columns, 7);
    await set(x, f32Bytes(xs));
    const out = g.tensor({type: F32, ne: [n, columns], op: 'MUL_MAT', src: [rot, x], params: [0, 1]});
    await run([out]);
    const expected: number[] = [];
    for (let column = 0; column < columns; column++) {
        const row = Array.from(xs.slice(column * n, (column + 1) * n), (value) => value / Math.sqrt(n));
        for (let len = 1; len < n; len *= 2)
            for (let i = 0; i < n; i += 2 * len)
                for (let j = i; j < i + len; j++)
                    [row[j], row[j + len]] = [row[j]! + row[j + len]!, row[j]! - row[j + len]!];
        expected.push(...row);
    }
    near(t, readF32(await read(out)), expected, 1e-5, 'Hadamard');
});

test.serial('realistic CPY: f32 into an f16 view rounds as F16C does; ggml_cast\'s self-named CPY; q8_0 to f32 and f32 to a q8_0 tensor', async (t) => {
    const {g, set, run, read} = await realisticLab(t);
    const values = series(64 * 3, 8).map((value) => value * 100);
    const a = g.tensor({type: F32, ne: [64, 3]});
    await set(a, f32Bytes(values));
    const cache = g.tensor({type: F16, ne: [64, 4]});
    const slot = g.tensor({type: F16, ne: [64, 3], view: {of: cache, offset: 128}});
    const copy = g.tensor({type: F16, ne: [64, 3], op: 'CPY', src: [a, slot], view: {of: slot}});
    const cast = g.tensor({type: F16, ne: [64, 3], op: 'CPY', src: [a]});
    cast.src[1] = cast.id; // ggml_cast
    const quantized = g.tensor({type: Q8_0, ne: [64, 3]});
    const q8 = quantizeQ8(values);
    await set(quantized, q8.bytes);
    const dequantized = g.tensor({type: F32, ne: [64, 3], op: 'CPY', src: [quantized]});
    dequantized.src[1] = dequantized.id;
    const requantized = g.tensor({type: Q8_0, ne: [64, 3]});
    const quantize = g.tensor({type: Q8_0, ne: [64, 3], op: 'CPY', src: [a, requantized], view: {of: requantized}});
    const back = g.tensor({type: F32, ne: [64, 3], op: 'CPY', src: [quantize]});
    back.src[1] = back.id;
    await run([copy, cast, dequantized, quantize, back]);
    const halves = Array.from(values, toHalf);
    t.deepEqual([...new Uint16Array(new Uint8Array(await read(copy)).buffer)], halves, 'CPY f32 → f16');
    t.deepEqual([...new Uint16Array(new Uint8Array(await read(cast)).buffer)], halves, 'ggml_cast f32 → f16');
    t.deepEqual([...readF32(await read(dequantized))], [...q8.dequantized], 'CPY q8_0 → f32');
    near(t, readF32(await read(back)), values, (i) => 0.01 * Math.max(...values.slice(i - (i % 32), i - (i % 32) + 32).map(Math.abs)), 'f32 → q8_0 → f32');
});

test.serial('realistic PERMUTE, TRANSPOSE, VIEW and RESHAPE, made contiguous by CONT, move the elements where ggml says', async (t) => {
    const {g, set, run, read} = await realisticLab(t);
    const ne = [4, 3, 2, 2];
    const values = series(48, 9);
    const a = g.tensor({type: F32, ne});
    await set(a, f32Bytes(values));
    const at = (i0: number, i1: number, i2: number, i3: number) => values[((i3 * 2 + i2) * 3 + i1) * 4 + i0]!;
    // ggml_permute(a, 2, 0, 1, 3): dimension 0 of a becomes 2, 1 becomes 0, 2 becomes 1.
    const permuted = g.tensor({type: F32, ne: [3, 2, 4, 2], op: 'PERMUTE', src: [a], params: [2, 0, 1, 3], view: {of: a}});
    permuted.nb = [a.nb[1], a.nb[2], a.nb[0], a.nb[3]];
    const permutedCont = g.tensor({type: F32, ne: [3, 2, 4, 2], op: 'CONT', src: [permuted]});
    const transposed = g.tensor({type: F32, ne: [3, 4, 2, 2], op: 'TRANSPOSE', src: [a], view: {of: a}});
    transposed.nb = [a.nb[1], a.nb[0], a.nb[2], a.nb[3]];
    const transposedCont = g.tensor({type: F32, ne: [3, 4, 2, 2], op: 'CONT', src: [transposed]});
    const viewed = g.tensor({type: F32, ne: [2, 2, 2, 1], op: 'VIEW', src: [a], params: [4], view: {of: a, offset: 4, nb: [a.nb[1], a.nb[2], a.nb[3]]}});
    const viewedCont = g.tensor({type: F32, ne: [2, 2, 2, 1], op: 'CONT', src: [viewed]});
    const reshaped = g.tensor({type: F32, ne: [12, 4], op: 'RESHAPE', src: [a], view: {of: a, nb: [48, 192, 192]}});
    const reshapedCont = g.tensor({type: F32, ne: [8, 6], op: 'CONT', src: [reshaped]});
    await run([permuted, permutedCont, transposed, transposedCont, viewed, viewedCont, reshaped, reshapedCont]);
    const expect = (shape: number[], value: (i0: number, i1: number, i2: number, i3: number) => number) => {
        const out: number[] = [];
        for (let i3 = 0; i3 < shape[3]!; i3++)
            for (let i2 = 0; i2 < shape[2]!; i2++)
                for (let i1 = 0; i1 < shape[1]!; i1++)
                    for (let i0 = 0; i0 < shape[0]!; i0++)
                        out.push(value(i0, i1, i2, i3));
        return out;
    };
    t.deepEqual([...readF32(await read(permutedCont))], expect([3, 2, 4, 2], (i0, i1, i2, i3) => at(i2, i0, i1, i3)), 'PERMUTE');
    t.deepEqual([...readF32(await read(transposedCont))], expect([3, 4, 2, 2], (i0, i1, i2, i3) => at(i1, i0, i2, i3)), 'TRANSPOSE');
    t.deepEqual([...readF32(await read(viewedCont))], expect([2, 2, 2, 1], (i0, i1, i2) => at(i0 + 1, i1, i2, 0)), 'VIEW');
    t.deepEqual([...readF32(await read(reshapedCont))], [...values], 'RESHAPE');
});

test.serial('realistic GET_ROWS of f32, f16 and q8_0 rows, per plane, and SET_ROWS of f32 rows into an f16 cache', async (t) => {
    const {g, set, run, read} = await realisticLab(t);
    const values = series(64 * 5 * 2, 10);
    const q8 = quantizeQ8(values);
    const tables = [[F32, f32Bytes(values), values], [F16, halfBytes(values), Float64Array.from(values, (v) => fromHalf(toHalf(v)))], [Q8_0, q8.bytes, q8.dequantized]] as const;
    const indices = g.tensor({type: I32, ne: [3, 2]});
    const picks = [4, 0, 2, 1, 1, 3];
    await set(indices, Buffer.from(Int32Array.from(picks).buffer));
    const nodes: RpcTensor[] = [];
    for (const [type, bytes] of tables) {
        const table = g.tensor({type, ne: [64, 5, 2]});
        await set(table, bytes);
        nodes.push(g.tensor({type: F32, ne: [64, 3, 2], op: 'GET_ROWS', src: [table, indices]}));
    }
    const cache = g.tensor({type: F16, ne: [64, 6]});
    await set(cache, Buffer.alloc(64 * 6 * 2));
    const rows = g.tensor({type: F32, ne: [64, 2]});
    await set(rows, f32Bytes(values.slice(0, 128)));
    const at = g.tensor({type: I64, ne: [2]});
    await set(at, Buffer.from(BigInt64Array.of(5n, 1n).buffer));
    const stored = g.tensor({type: F16, ne: [64, 6], op: 'SET_ROWS', src: [rows, at, cache], view: {of: cache}});
    await run([...nodes, stored]);
    for (const [index, [type, , reference]] of tables.entries()) {
        const expected: number[] = [];
        for (const [pick, row] of picks.entries())
            expected.push(...Array.from(reference.slice((Math.floor(pick / 3) * 5 + row) * 64, (Math.floor(pick / 3) * 5 + row + 1) * 64), Math.fround));
        t.deepEqual([...readF32(await read(nodes[index]!))], expected, `GET_ROWS ${typeName(type)}`);
    }
    const cached = [...new Uint16Array(new Uint8Array(await read(stored)).buffer)];
    t.deepEqual(cached.slice(5 * 64, 6 * 64), Array.from(values.slice(0, 64), toHalf), 'SET_ROWS row 5');
    t.deepEqual(cached.slice(64, 128), Array.from(values.slice(64, 128), toHalf), 'SET_ROWS row 1');
});

test.serial('realistic SOFT_MAX with a scale and an f16 mask broadcast over heads, and with attention sinks', async (t) => {
    const {g, set, run, read} = await realisticLab(t);
    const [kv, q, heads] = [33, 4, 2];
    const values = series(kv * q * heads, 11);
    const maskValues = Array.from({length: kv * (q + 1)}, (_, i) => (i % kv) > (i / kv) * 8 + 5 ? Number.NEGATIVE_INFINITY : 0);
    const a = g.tensor({type: F32, ne: [kv, q, heads]});
    const mask = g.tensor({type: F16, ne: [kv, q + 1]});
    const sinks = g.tensor({type: F32, ne: [heads]});
    await set(a, f32Bytes(values));
    await set(mask, halfBytes(maskValues));
    await set(sinks, f32Bytes([0.5, -1]));
    const plain = g.tensor({type: F32, ne: [kv, q, heads], op: 'SOFT_MAX', src: [a, mask], params: [f32(0.125)]});
    const sunk = g.tensor({type: F32, ne: [kv, q, heads], op: 'SOFT_MAX', src: [a, mask, sinks], params: [f32(0.125)]});
    await run([plain, sunk]);
    for (const [out, withSinks] of [[plain, false], [sunk, true]] as const) {
        const expected: number[] = [];
        for (let h = 0; h < heads; h++)
            for (let row = 0; row < q; row++) {
                const logits = Array.from({length: kv}, (_, i) => values[(h * q + row) * kv + i]! * 0.125 + maskValues[row * kv + i]!);
                const sink = withSinks ? [0.5, -1][h]! : Number.NEGATIVE_INFINITY;
                const max = Math.max(sink, ...logits);
                const sum = logits.reduce((total, l) => total + Math.exp(l - max), 0) + Math.exp(sink - max);
                expected.push(...logits.map((l) => Math.exp(l - max) / sum));
            }
        near(t, readF32(await read(out)), expected, 1e-5, withSinks ? 'SOFT_MAX with sinks' : 'SOFT_MAX');
    }
});

test.serial('realistic ROPE (NeoX, and normal in place on a view of a cache) rotates the first n_dims of each head by its position', async (t) => {
    const {g, set, run, read} = await realisticLab(t);
    const [dim, heads, tokens, nDims] = [16, 2, 3, 8];
    const values = series(dim * heads * tokens, 12);
    const positions = [0, 5, 17];
    const a = g.tensor({type: F32, ne: [dim, heads, tokens]});
    const p = g.tensor({type: I32, ne: [tokens]});
    await set(a, f32Bytes(values));
    await set(p, Buffer.from(Int32Array.from(positions).buffer));
    const params = (mode: number) => [0, nDims, mode, 0, 4096, f32(10000), f32(1), 0, f32(1), f32(32), f32(1)];
    const neox = g.tensor({type: F32, ne: [dim, heads, tokens], op: 'ROPE', src: [a, p], params: params(2)});
    const cache = g.tensor({type: F32, ne: [dim, heads, tokens]});
    await set(cache, f32Bytes(values));
    const inPlace = g.tensor({type: F32, ne: [dim, heads, tokens], op: 'ROPE', src: [cache, p], params: params(0), view: {of: cache}});
    await run([neox, inPlace]);
    for (const [out, mode] of [[neox, 2], [inPlace, 0]] as const) {
        const expected = Array.from(values);
        for (let token = 0; token < tokens; token++)
            for (let head = 0; head < heads; head++) {
                const base = (token * heads + head) * dim;
                for (let i = 0; i < nDims / 2; i++) {
                    const theta = positions[token]! * 10000 ** (-2 * i / nDims);
                    const [x0, x1] = mode === 2 ? [base + i, base + i + nDims / 2] : [base + 2 * i, base + 2 * i + 1];
                    expected[x0] = values[x0]! * Math.cos(theta) - values[x1]! * Math.sin(theta);
                    expected[x1] = values[x0]! * Math.sin(theta) + values[x1]! * Math.cos(theta);
                }
            }
        near(t, readF32(await read(out)), expected, 1e-4, mode === 2 ? 'ROPE NeoX' : 'ROPE normal, in place');
    }
});

function attentionReference(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, mask: ArrayLike<number> | undefined,
    {dk, dv, queries, keys, heads, headsKv, scale}: {dk: number, dv: number, queries: number, keys: number, heads: number, headsKv: number, scale: number}) {
    // q [dk, queries, heads], k [dk, keys, headsKv], v [dv, keys, headsKv] → [dv, heads, queries]
    const out = new Float64Array(dv * heads * queries);
    for (let h = 0; h < heads; h++) {
        const hk = Math.floor(h / (heads / headsKv));
        for (let i = 0; i < queries; i++) {
            const logits = Array.from({length: keys}, (_, j) => {
                let dot = 0;
                for (let d = 0; d < dk; d++)
                    dot += q[(h * queries + i) * dk + d]! * k[(hk * keys + j) * dk + d]!;
                return dot * scale + (mask?.[i * keys + j] ?? 0);
            });
            const max = Math.max(...logits);
            const weights = logits.map((l) => Math.exp(l - max));
            const sum = weights.reduce((total, w) => total + w, 0);
            for (let d = 0; d < dv; d++)
                out[(i * heads + h) * dv + d] = weights.reduce((total, w, j) => total + w * v[(hk * keys + j) * dv + d]!, 0) / sum;
        }
    }
    return out;
}

test.serial('realistic FLASH_ATTN_EXT on f16 K and V: one query over split keys, a tile of 64 queries, a few queries with a causal mask', async (t) => {
    const {g, set, run, read} = await realisticLab(t);
    const [dk, heads, headsKv] = [32, 4, 2];
    for (const [queries, keys, masked] of [[1, 520, false], [64, 80, true], [3, 20, true]] as const) {
        const qs = series(dk * queries * heads, 13 + queries);
        const ks = Array.from(series(dk * keys * headsKv, 14 + keys), (value) => fromHalf(toHalf(value)));
        const vs = Array.from(series(dk * keys * headsKv, 15 + keys), (value) => fromHalf(toHalf(value)));
        const maskValues = masked ? Array.from({length: keys * queries}, (_, i) => (i % keys) > Math.floor(i / keys) + keys - queries ? Number.NEGATIVE_INFINITY : 0) : undefined;
        const q = g.tensor({type: F32, ne: [dk, queries, heads]});
        const k = g.tensor({type: F16, ne: [dk, keys, headsKv]});
        const v = g.tensor({type: F16, ne: [dk, keys, headsKv]});
        await set(q, f32Bytes(qs));
        await set(k, halfBytes(ks));
        await set(v, halfBytes(vs));
        let mask: RpcTensor | undefined;
        if (maskValues !== undefined) {
            mask = g.tensor({type: F16, ne: [keys, queries]});
            await set(mask, halfBytes(maskValues));
        }
        const scale = 1 / Math.sqrt(dk);
        const out = g.tensor({type: F32, ne: [dk, heads, queries], op: 'FLASH_ATTN_EXT', src: [q, k, v, mask], params: [f32(scale), 0, 0, 10]});
        await run([out]);
        const expected = attentionReference(qs, ks, vs, maskValues, {dk, dv: dk, queries, keys, heads, headsKv, scale});
        near(t, readF32(await read(out)), expected, 2e-2, `FLASH_ATTN_EXT ${queries} × ${keys}`);
    }
});

test.serial('realistic GLU: SwiGLU of a row\'s halves, swapped, and of two tensors; GELU-GLU in f16; SWIGLU_OAI with its alpha and limit', async (t) => {
    const {g, set, run, read} = await realisticLab(t);
    const [half, rows] = [16, 3];
    const values = series(2 * half * rows, 16);
    const a = g.tensor({type: F32, ne: [2 * half, rows]});
    await set(a, f32Bytes(values));
    const gate = g.tensor({type: F32, ne: [half, rows]});
    const up = g.tensor({type: F32, ne: [half, rows]});
    await set(gate, f32Bytes(values.slice(0, half * rows)));
    await set(up, f32Bytes(values.slice(half * rows)));
    const a16 = g.tensor({type: F16, ne: [2 * half, rows]});
    await set(a16, halfBytes(values));
    const swiglu = g.tensor({type: F32, ne: [half, rows], op: 'GLU', src: [a], params: [2, 0]});
    const swapped = g.tensor({type: F32, ne: [half, rows], op: 'GLU', src: [a], params: [2, 1]});
    const split = g.tensor({type: F32, ne: [half, rows], op: 'GLU', src: [gate, up], params: [2, 0]});
    const geglu = g.tensor({type: F16, ne: [half, rows], op: 'GLU', src: [a16], params: [1, 0]});
    const oai = g.tensor({type: F32, ne: [half, rows], op: 'GLU', src: [gate, up], params: [3, 0, f32(1.702), f32(7)]});
    await run([swiglu, swapped, split, geglu, oai]);
    const silu = (x: number) => x / (1 + Math.exp(-x));
    const pairs = (first: (row: number, i: number) => number, second: (row: number, i: number) => number, f: (x: number, y: number) => number) =>
        Array.from({length: half * rows}, (_, index) => f(first(Math.floor(index / half), index % half), second(Math.floor(index / half), index % half)));
    const left = (row: number, i: number) => values[row * 2 * half + i]!;
    const right = (row: number, i: number) => values[row * 2 * half + half + i]!;
    near(t, readF32(await read(swiglu)), pairs(left, right, (x, y) => silu(x) * y), 1e-5, 'SwiGLU');
    near(t, readF32(await read(swapped)), pairs(right, left, (x, y) => silu(x) * y), 1e-5, 'SwiGLU swapped');
    near(t, readF32(await read(split)), pairs((row, i) => values[row * half + i]!, (row, i) => values[half * rows + row * half + i]!, (x, y) => silu(x) * y), 1e-5, 'SwiGLU of two');
    const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
    const h = (x: number) => fromHalf(toHalf(x));
    near(t, Array.from(new Uint16Array(new Uint8Array(await read(geglu)).buffer), fromHalf), pairs((row, i) => h(left(row, i)), (row, i) => h(right(row, i)), (x, y) => gelu(x) * y), 1e-2, 'GEGLU f16');
    const oaiRef = (x: number, y: number) => {
        const gated = Math.min(x, 7);
        return gated / (1 + Math.exp(-1.702 * gated)) * (Math.max(-7, Math.min(7, y)) + 1);
    };
    near(t, readF32(await read(oai)), pairs((row, i) => values[row * half + i]!, (row, i) => values[half * rows + row * half + i]!, oaiRef), 1e-5, 'SWIGLU_OAI');
});

// ---------------------------------------------------------------------------------------------------------------
// Graphs that passed earlier versions of the checks and ended a server (each verified on a real one, two threads), now refused.

/** A buffer for graphs that are only checked: large, never allocated. */
const CHECKED_ONLY: LabBuffer = {handle: 0x5eedn, base: 0x7f00_0000_0000n, size: 1n << 30n};

/** A tensor's bytes moved to the end of its buffer. */
function atEnd(g: GraphBuilder, tensor: RpcTensor, bytes: number) {
    tensor.data = g.buffer.base + g.buffer.size - BigInt(bytes);
    return tensor;
}

const HOSTILE: [string, (g: GraphBuilder) => RpcTensor[], RegExp][] = [
    ['SWIGLU_OAI on f16 (no kernel: GGML_ABORT)', (g) => {
        const a = g.tensor({type: F16, ne: [8, 2]});
        return [g.tensor({type: F16, ne: [4, 2], op: 'GLU', src: [a], params: [3, 0, f32(1.7), f32(7)]})];
    }, /SWIGLU_OAI takes f32/],
    ['MUL_MAT of b with one element per row, strided (GGML_ASSERT(nb10 == ggml_type_size(src1->type)))', (g) => {
        const w = g.tensor({type: F32, ne: [1, 4]});
        const b = g.tensor({type: F32, ne: [1, 3]});
        const strided = g.tensor({type: F32, ne: [1, 3], view: {of: b, nb: [4, 12, 12]}});
        strided.nb = [8, 4, 12, 12];
        return [g.tensor({type: F32, ne: [4, 3], op: 'MUL_MAT', src: [w, strided]})];
    }, /elements of the second operand must be packed/],
    ['ADD of a strided one-element row (GGML_ASSERT(nb00 == sizeof(src0_t)))', (g) => {
        const owner = g.tensor({type: F32, ne: [4, 4]});
        const a = g.tensor({type: F32, ne: [1, 4], view: {of: owner, nb: [16, 64, 64]}});
        a.nb = [8, 16, 64, 64];
        return [g.tensor({type: F32, ne: [1, 4], op: 'ADD', src: [a, a]})];
    }, /elements of the first operand must be packed/],
    ['multimodal ROPE whose sections sum, in C ints, to 0 (SIGFPE)', (g) => {
        const a = g.tensor({type: F32, ne: [8, 2, 3]});
        const p = g.tensor({type: I32, ne: [12]});
        return [g.tensor({type: F32, ne: [8, 2, 3], op: 'ROPE', src: [a, p], params: [0, 8, 8, 0, 0, f32(10000), f32(1), 0, f32(1), f32(32), f32(1), 0x7fffffff, 0x7fffffff, 2]})];
    }, /sections longer than the row/],
    ['multimodal ROPE with sections longer than the row (GGML_ASSERT(sect_dims <= ne0))', (g) => {
        const a = g.tensor({type: F32, ne: [8, 2, 3]});
        const p = g.tensor({type: I32, ne: [12]});
        return [g.tensor({type: F32, ne: [8, 2, 3], op: 'ROPE', src: [a, p], params: [0, 8, 8, 0, 0, f32(10000), f32(1), 0, f32(1), f32(32), f32(1), 16, 16, 16]})];
    }, /sections longer than the row/],
    ['ROPE rotating no dimension (the copy of the other channels loops for ever)', (g) => {
        const a = g.tensor({type: F32, ne: [8, 1, 1]});
        const p = g.tensor({type: I32, ne: [1]});
        return [g.tensor({type: F32, ne: [8, 1, 1], op: 'ROPE', src: [a, p], params: [0, 0, 0, 0, 0, f32(10000), f32(1), 0, f32(1), f32(32), f32(1)]})];
    }, /0 rotated dimensions/],
    ['ROPE frequency factors at the buffer\'s end, read for every pair of a long row (SIGSEGV)', (g) => {
        const a = g.tensor({type: F32, ne: [1 << 20, 1, 1]});
        const p = g.tensor({type: I32, ne: [1]});
        const factors = atEnd(g, g.tensor({type: F32, ne: [8]}), 32);
        return [g.tensor({type: F32, ne: [1 << 20, 1, 1], op: 'ROPE', src: [a, p, factors], params: [0, 16, 2, 0, 0, f32(10000), f32(1), 0, f32(1), f32(32), f32(1)]})];
    }, /reach outside their buffer/],
    ['SET_ROWS into iq2_xxs (from_float is NULL: SIGSEGV)', (g) => {
        const cache = g.tensor({type: IQ2_XXS, ne: [256, 4]});
        const rows = g.tensor({type: F32, ne: [256, 1]});
        const at = g.tensor({type: I32, ne: [1]});
        return [g.tensor({type: IQ2_XXS, ne: [256, 4], op: 'SET_ROWS', src: [rows, at, cache], view: {of: cache}})];
    }, /destination is iq2_xxs/],
    ['GLU whose result has a row dimension of 1 and a huge nb[1] (ggml_is_contiguous_1 counts it: GGML_ASSERT)', (g) => {
        const a = g.tensor({type: F32, ne: [8, 1, 64]});
        const out = g.tensor({type: F32, ne: [4, 1, 64], op: 'GLU', src: [a], params: [2, 0]});
        out.nb = [4, 1 << 24, 16, 16 * 64];
        return [out];
    }, /contiguous above dimension 1/],
    ['FLASH_ATTN_EXT into an ordered, not dense view at the buffer\'s end (rows written at row × nb[1]: SIGSEGV)', (g) => {
        const q = g.tensor({type: F32, ne: [16, 2, 1]});
        const k = g.tensor({type: F16, ne: [16, 8, 1]});
        const v = g.tensor({type: F16, ne: [16, 8, 1]});
        const owner = atEnd(g, g.tensor({type: F32, ne: [(1 << 18) + 16]}), (1 << 20) + 64);
        const out = g.tensor({type: F32, ne: [16, 1, 2, 1], op: 'FLASH_ATTN_EXT', src: [q, k, v], params: [f32(0.25)], view: {of: owner}});
        out.nb = [4, 1 << 20, 1 << 20, 1 << 21];
        return [out];
    }, /result must be a packed array/],
    ['FLASH_ATTN_EXT with heads of 2^25 elements (512 bytes of scratch per element a thread, 34 GB: std::bad_alloc)', (g) => {
        const q = g.tensor({type: F32, ne: [1 << 25, 1, 1]});
        const k = g.tensor({type: F16, ne: [1 << 25, 1, 1]});
        const v = g.tensor({type: F16, ne: [16, 1, 1]});
        return [g.tensor({type: F32, ne: [16, 1, 1], op: 'FLASH_ATTN_EXT', src: [q, k, v], params: [f32(1)]})];
    }, /heads of 33554432/],
    ['RMS_NORM into a one-byte-strided view at the buffer\'s end (packed rows written past it: SIGSEGV)', (g) => {
        const x = g.tensor({type: F32, ne: [1 << 16, 2]});
        const owner = atEnd(g, g.tensor({type: F32, ne: [(1 << 14) + 1]}), (1 << 16) + 4);
        const out = g.tensor({type: F32, ne: [1 << 16, 2], op: 'RMS_NORM', src: [x], params: [f32(1e-5)], view: {of: owner}});
        out.nb = [1, 1, 1, 1];
        return [out];
    }, /elements of the result must be packed/],
    ['a CONT of a strided quantized view into another shape (dup_bytes sizes its rows 32 times too long: SIGSEGV)', (g) => {
        const owner = g.tensor({type: Q8_0, ne: [64, 1024]});
        const view = g.tensor({type: Q8_0, ne: [32, 1024], view: {of: owner, nb: [owner.nb[1], owner.nb[2], owner.nb[3]]}});
        return [atEnd(g, g.tensor({type: Q8_0, ne: [32 * 1024], op: 'CONT', src: [view]}), 34 * 1024)];
    }, /quantized copy that reshapes a strided source/],
    ['ROPE of odd rows (the other channels copied in pairs: one element written past the tensor)', (g) => {
        const a = g.tensor({type: F32, ne: [7, 2, 3]});
        const p = g.tensor({type: I32, ne: [3]});
        return [g.tensor({type: F32, ne: [7, 2, 3], op: 'ROPE', src: [a, p], params: [0, 4, 2, 0, 0, f32(10000), f32(1), 0, f32(1), f32(32), f32(1)]})];
    }, /rows of 7 elements/]
];

test.serial('graphs that once passed the checks and ended a server (GGML_ASSERT, GGML_ABORT, SIGFPE, SIGSEGV, a hang, bad_alloc) are refused', (t) => {
    const buffers = {get: (handle: bigint) => handle === CHECKED_ONLY.handle ? CHECKED_ONLY : undefined};
    for (const [what, build, reason] of HOSTILE) {
        const g = new GraphBuilder(CHECKED_ONLY);
        const payload = g.graph(build(g));
        const error = t.throws(() => checkGraph(payload, buffers), {instanceOf: GraphCheckError}, what);
        t.regex(error?.message ?? '', reason, what);
    }
});

test.serial('a GET_TENSOR or SET_TENSOR region must lie in the tensor, not just its buffer (ggml_backend_tensor_get\'s GGML_ASSERT ended the server)', (t) => {
    const buffers = {get: (handle: bigint) => handle === CHECKED_ONLY.handle ? CHECKED_ONLY : undefined};
    const g = new GraphBuilder(CHECKED_ONLY);
    const tensor = shapeTensor(g.tensor({type: F16, ne: [64, 3]}), 'the tensor');
    t.notThrows(() => checkRegion(tensor, buffers, 0n, 384n, 'GET_TENSOR'));
    t.notThrows(() => checkRegion(tensor, buffers, 128n, 256n, 'GET_TENSOR'));
    t.throws(() => checkRegion(tensor, buffers, 0n, 512n, 'GET_TENSOR'), {message: /outside its tensor's 384 bytes/});
    t.throws(() => checkRegion(tensor, buffers, 384n, 2n, 'SET_TENSOR'), {message: /outside its tensor's 384 bytes/});
});

test.serial('the contiguity predicates the rules use are ggml\'s own: ggml_is_contiguous_0/1/2 and _rows of the libggml-base the server loads', async (t) => {
    const files = await prepareRpcServerDir(await testRpcBinaries());
    const lib = koffi.load(join(files.serverPath, '..', 'libggml-base.so.0'));
    // struct ggml_tensor begins: enum ggml_type type; (padding); buffer pointer; int64_t ne[4]; size_t nb[4].
    const predicates = [0, 1, 2].map((n) => lib.func(`bool ggml_is_contiguous_${n}(void *)`));
    const rows = lib.func('bool ggml_is_contiguous_rows(void *)');
    const r = new Rng(seedOf('contiguity'));
    const struct = Buffer.alloc(512);
    let differences = 0;
    for (let index = 0; index < 3_000; index++) {
        const type = r.pick([F32, F16, Q8_0, Q4_K, I32]);
        const {typeSize, blockSize} = traitsOf(type);
        const ne = [blockSize * r.int(1, 3), r.pick([1, 1, 2, 3]), r.pick([1, 1, 2]), r.pick([1, 2])];
        const nb = [...packedStrides(type, ne)];
        for (let mutations = r.int(0, 2); mutations > 0; mutations--) {
            const dim = r.int(0, 3);
            nb[dim] = r.pick([0, typeSize, nb[dim]! * 2, nb[dim]! + typeSize, 1 << 20, nb[(dim + 1) % 4]!]);
        }
        struct.fill(0);
        struct.writeInt32LE(type, 0);
        for (let dim = 0; dim < 4; dim++) {
            struct.writeBigInt64LE(BigInt(ne[dim]!), 16 + 8 * dim);
            struct.writeBigUInt64LE(BigInt(nb[dim]!), 48 + 8 * dim);
        }
        const tensor = {type, ne, nb, traits: traitsOf(type)} as unknown as Parameters<typeof isContiguousN>[0];
        const ours = [0, 1, 2].map((n) => isContiguousN(tensor, n)).concat(isContiguousRows(tensor));
        const ggml = predicates.map((predicate) => predicate(struct) as boolean).concat(rows(struct) as boolean);
        if (ours.join() !== ggml.join() && differences++ < 5)
            t.log(`${typeName(type)} ne=[${ne}] nb=[${nb}]: ours ${ours}, ggml's ${ggml} (contiguous_0, _1, _2, rows)`);
    }
    t.is(differences, 0);
});
