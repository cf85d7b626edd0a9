import {setTimeout as sleep} from 'node:timers/promises';
import test, {type ExecutionContext} from 'ava';
import {checkGraph} from '../inference/sharded/tunnel/ggml/graph-check.js';
import {GGML_TYPES, GGML_UNARY_OP_NAMES, type GgmlOpName, GgmlType} from '../inference/sharded/tunnel/ggml/ggml-tables.js';
import type {RpcTensor} from '../inference/sharded/tunnel/ggml/rpc-tensor.js';
import {GraphCheckError, type GraphRule} from '../inference/sharded/tunnel/ggml/tensor-check.js';
import {directConnection, directLab, f32, floats, GraphBuilder, guardedConnection, ints, type LabBuffer, labServer, readFloats, readInts, RpcLabClient, tableOf, type TensorSpec} from '../harness/rpc-lab.js';
import {float16BitsToFloat32, float32ToFloat16Bits} from '../engine/gguf/float16.js';
import {SeededRandom as Rng} from '../harness/seeded-random.js';

/**
 * The contracts of the element-wise, reduction, shape and indexing ops (op-rules-elementwise.ts; docs/peer-protocol.md,
 * "Graph checks") against a real rpc-server: a node of each op as llama.cpp's graphs build it passes the checks
 * and computes through the host's guard (to a JS reference where cheap); seeded random nodes (shapes, types,
 * strides and views, op_params, sources) either fail the checks with a rule or run on a server with no guard,
 * which must survive each; and the dangerous mistakes found in ggml's kernels are refused.
 */

const {F32, F16, BF16, I16, I32, Q8_0} = GgmlType;
const REMOVED_TYPE = 4;
const unaryOp = (name: typeof GGML_UNARY_OP_NAMES[number]) => GGML_UNARY_OP_NAMES.indexOf(name);




function within<T>(promise: Promise<T>, ms: number) {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([promise, new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no reply in ${ms} ms`)), ms);
    })]).finally(() => clearTimeout(timer));
}

function close(t: ExecutionContext, actual: readonly number[], expected: readonly number[], what: string, tolerance = 1e-4) {
    t.is(actual.length, expected.length, `${what}: length`);
    const wrong = expected.findIndex((value, index) => !(Object.is(value, actual[index])
        || Math.abs(actual[index]! - value) <= tolerance * Math.max(1, Math.abs(value))));
    t.is(wrong, -1, `${what}: element ${wrong} is ${actual[wrong]}, expected ${expected[wrong]}`);
}

/** A view of `of` (its owner's bytes) with shape `ne` and all four strides given. */
function viewOf(g: GraphBuilder, of: RpcTensor, type: number, ne: readonly number[], nb: readonly number[], offset = 0) {
    const view = g.tensor({type, ne, view: {of, offset, nb: nb.slice(1)}});
    view.nb[0] = nb[0]!;
    return view;
}

/** A node that is a view with all four strides given, of a new tensor large enough. */
function nodeView(g: GraphBuilder, spec: TensorSpec, nb: readonly number[]) {
    const size = GGML_TYPES[spec.type]!.typeSize;
    const extent = spec.ne.reduce((bytes, n, dim) => bytes + (n - 1) * nb[dim]!, size);
    const owner = g.tensor({type: spec.type, ne: [Math.ceil(extent / size)]});
    const node = g.tensor({...spec, view: {of: owner, nb: nb.slice(1)}});
    node.nb[0] = nb[0]!;
    return node;
}

/** `scale` · sin(0.731 i + phase + 0.1): varied, reproducible, never 0. */
function wave(count: number, phase = 0, scale = 1) {
    return Array.from({length: count}, (_, index) => scale * Math.sin(index * 0.731 + phase + 0.1));
}

// ----------------------------------------------------------------------------------------------------------------
// 1. Nodes as llama.cpp builds them, through the host's guard.

interface Realistic {
    /** The nodes to compute, in order (the last one's result goes to `check`). */
    nodes: RpcTensor[],
    inputs: [RpcTensor, Buffer][]
}

/**
 * Builds nodes on a fresh server through the guard: checkGraph accepts them, the server computes them and lives.
 * `check` gets the last node's result, and a way to read any other's.
 */
async function realistic(t: ExecutionContext, build: (g: GraphBuilder) => Realistic,
    check?: (result: Buffer, read: (tensor: RpcTensor) => Promise<Buffer>) => unknown) {
    const {port, exits} = await labServer(t);
    let refused: Error | undefined;
    const client = new RpcLabClient(guardedConnection(port, {onRefused: (error) => refused = error}));
    t.teardown(() => client.close());
    await client.hello();
    const buffer = await client.buffer(1n << 22n);
    const g = new GraphBuilder(buffer);
    const {nodes, inputs} = build(g);
    for (const [tensor, bytes] of inputs)
        await client.setTensor(tensor, bytes);
    const payload = g.graph(nodes);
    t.notThrows(() => checkGraph(payload, tableOf(buffer)));
    await client.graphCompute(payload);
    const read = (tensor: RpcTensor) => client.getTensor(tensor, GraphBuilder.bytes(tensor));
    if (check !== undefined)
        await check(await read(nodes.at(-1)!), read);
    t.true(await client.alive());
    t.is(refused, undefined);
    t.deepEqual(exits, []);
}

test.serial('ADD_ID as a MoE expert bias (llama-graph.cpp): each token\'s rows get the biases of its experts, picked by argsort_top_k in the graph', async (t) => {
    const [nFf, nUsed, nTokens, nExperts] = [16, 2, 3, 4];
    const x = wave(nFf * nUsed * nTokens);
    const bias = wave(nFf * nExperts, 1);
    const scores = wave(nExperts * nTokens, 2);
    await realistic(t, (g) => {
        const probs = g.tensor({type: F32, ne: [nExperts, nTokens]});
        const sorted = g.tensor({type: I32, ne: [nExperts, nTokens], op: 'ARGSORT', src: [probs], params: [1]});
        const ids = g.tensor({type: I32, ne: [nUsed, nTokens], op: 'VIEW', src: [sorted], view: {of: sorted, nb: [4 * nExperts, 4 * nExperts * nTokens, 4 * nExperts * nTokens]}});
        const a = g.tensor({type: F32, ne: [nFf, nUsed, nTokens]});
        const b = g.tensor({type: F32, ne: [nFf, nExperts]});
        const node = g.tensor({type: F32, ne: [nFf, nUsed, nTokens], op: 'ADD_ID', src: [a, b, ids]});
        return {nodes: [sorted, ids, node], inputs: [[probs, floats(scores)], [a, floats(x)], [b, floats(bias)]]};
    }, (bytes) => {
        const expected = x.map((value, index) => {
            const [i, row] = [index % nFf, Math.floor(index / nFf)];
            const token = Math.floor(row / nUsed);
            const tokenScores = scores.slice(token * nExperts, token * nExperts + nExperts);
            const expert = tokenScores.map((_, e) => e).sort((p, q) => tokenScores[q]! - tokenScores[p]!)[row % nUsed]!;
            return value + bias[expert * nFf + i]!;
        });
        close(t, readFloats(bytes), expected, 'ADD_ID');
    });
});

for (const [op, reference, positive] of [
    ['SQR', (x: number) => x * x, false],
    ['SQRT', Math.sqrt, true],
    ['LOG', Math.log, true]
] as const) {
    test.serial(`${op} of activations (gemma3n's ggml_sqrt(ggml_sum_rows(ggml_sqr(x))), a sampler's log): element by element`, async (t) => {
        const x = wave(64 * 3).map((value) => positive ? Math.abs(value) + 0.01 : value);
        await realistic(t, (g) => {
            const a = g.tensor({type: F32, ne: [64, 3]});
            return {nodes: [g.tensor({type: F32, ne: [64, 3], op, src: [a]})], inputs: [[a, floats(x)]]};
        }, (bytes) => close(t, readFloats(bytes), x.map(reference), op));
    });
}

test.serial('SUM of a sampler\'s mask (llama-sampler.cpp\'s ggml_sum): one f32', async (t) => {
    const x = wave(100);
    await realistic(t, (g) => {
        const a = g.tensor({type: F32, ne: [100]});
        return {nodes: [g.tensor({type: F32, ne: [1], op: 'SUM', src: [a]})], inputs: [[a, floats(x)]]};
    }, (bytes) => close(t, readFloats(bytes), [x.reduce((sum, value) => sum + value, 0)], 'SUM'));
});

for (const op of ['SUM_ROWS', 'MEAN'] as const) {
    test.serial(`${op} of [64, 3, 2] activations (deepseek32's indexer scores, gemma3n's mean): one value per row`, async (t) => {
        const x = wave(64 * 6);
        await realistic(t, (g) => {
            const a = g.tensor({type: F32, ne: [64, 3, 2]});
            return {nodes: [g.tensor({type: F32, ne: [1, 3, 2], op, src: [a]})], inputs: [[a, floats(x)]]};
        }, (bytes) => close(t, readFloats(bytes), Array.from({length: 6}, (_, row) =>
            x.slice(row * 64, row * 64 + 64).reduce((sum, value) => sum + value, 0) / (op === 'MEAN' ? 64 : 1)), op));
    });
}

test.serial('CUMSUM of a delta-net chunk\'s gates (ggml_cumsum of a cont\'d transpose): running sums per row', async (t) => {
    const x = wave(8 * 4);
    await realistic(t, (g) => {
        const a = g.tensor({type: F32, ne: [8, 4]});
        return {nodes: [g.tensor({type: F32, ne: [8, 4], op: 'CUMSUM', src: [a]})], inputs: [[a, floats(x)]]};
    }, (bytes) => close(t, readFloats(bytes), x.map((_, index) =>
        x.slice(index - (index % 8), index + 1).reduce((sum, value) => sum + value, 0)), 'CUMSUM'));
});

test.serial('ARGMAX of logits [100, 3] (a greedy sampler, dflash\'s draft chain): each row\'s best index', async (t) => {
    const x = wave(300, 0.3);
    await realistic(t, (g) => {
        const a = g.tensor({type: F32, ne: [100, 3]});
        return {nodes: [g.tensor({type: I32, ne: [3], op: 'ARGMAX', src: [a]})], inputs: [[a, floats(x)]]};
    }, (bytes) => t.deepEqual(readInts(bytes), [0, 1, 2].map((row) => {
        const values = x.slice(row * 100, row * 100 + 100);
        return values.indexOf(Math.max(...values));
    })));
});

test.serial('REPEAT as ggml_repeat_4d (gemma3n\'s altup, deepseek2\'s k_pe over heads): the source tiled', async (t) => {
    const x = wave(16 * 3);
    await realistic(t, (g) => {
        const a = g.tensor({type: F32, ne: [16, 1, 3]});
        return {nodes: [g.tensor({type: F32, ne: [16, 4, 3], op: 'REPEAT', src: [a]})], inputs: [[a, floats(x)]]};
    }, (bytes) => close(t, readFloats(bytes), Array.from({length: 16 * 4 * 3}, (_, index) =>
        x[(index % 16) + 16 * Math.floor(index / 64)]!), 'REPEAT'));
});

test.serial('CONCAT of q_nope and a strided q_pe along dim 0 (deepseek2\'s MLA): [12 + 4, heads, tokens]', async (t) => {
    const nope = wave(12 * 4 * 3);
    const pe = wave(8 * 4 * 3, 2);
    await realistic(t, (g) => {
        const a = g.tensor({type: F32, ne: [12, 4, 3]});
        const whole = g.tensor({type: F32, ne: [8, 4, 3]});
        const b = viewOf(g, whole, F32, [4, 4, 3], [4, 32, 128, 384], 16); // the rotated half of each head
        return {nodes: [g.tensor({type: F32, ne: [16, 4, 3], op: 'CONCAT', src: [a, b], params: [0]})], inputs: [[a, floats(nope)], [whole, floats(pe)]]};
    }, (bytes) => close(t, readFloats(bytes), Array.from({length: 16 * 12}, (_, index) => {
        const [i, row] = [index % 16, Math.floor(index / 16)];
        return i < 12 ? nope[row * 12 + i]! : pe[row * 8 + 4 + i - 12]!;
    }), 'CONCAT'));
});

function normalize(values: number[], eps: number) {
    const mean = values.reduce((sum, value) => sum + value, 0) / values.length;
    const variance = values.reduce((sum, value) => sum + (value - mean) ** 2, 0) / values.length;
    return values.map((value) => (value - mean) / Math.sqrt(variance + eps));
}

test.serial('NORM of [64, 3] (build_norm\'s LLM_NORM): each row to mean 0, variance 1', async (t) => {
    const x = wave(64 * 3, 0, 3);
    await realistic(t, (g) => {
        const a = g.tensor({type: F32, ne: [64, 3]});
        return {nodes: [g.tensor({type: F32, ne: [64, 3], op: 'NORM', src: [a], params: [f32(1e-5)]})], inputs: [[a, floats(x)]]};
    }, (bytes) => close(t, readFloats(bytes), [0, 1, 2].flatMap((row) => normalize(x.slice(row * 64, row * 64 + 64), 1e-5)), 'NORM', 1e-3));
});

test.serial('GROUP_NORM as wavtokenizer\'s posnet builds it: [length, 1, channels] in 4 groups of channels', async (t) => {
    const [length, channels, groups] = [10, 8, 4];
    const x = wave(length * channels, 0, 2);
    await realistic(t, (g) => {
        const a = g.tensor({type: F32, ne: [length, 1, channels]});
        return {nodes: [g.tensor({type: F32, ne: [length, 1, channels], op: 'GROUP_NORM', src: [a], params: [groups, f32(1e-6)]})], inputs: [[a, floats(x)]]};
    }, (bytes) => {
        const size = length * channels / groups;
        close(t, readFloats(bytes), Array.from({length: groups}, (_, group) => normalize(x.slice(group * size, group * size + size), 1e-6)).flat(), 'GROUP_NORM', 1e-3);
    });
});

test.serial('L2_NORM of q [16, 4, 3] (bailingmoe3\'s delta-net q and k): each row to unit length', async (t) => {
    const x = wave(16 * 12, 0, 2);
    await realistic(t, (g) => {
        const a = g.tensor({type: F32, ne: [16, 4, 3]});
        return {nodes: [g.tensor({type: F32, ne: [16, 4, 3], op: 'L2_NORM', src: [a], params: [f32(1e-6)]})], inputs: [[a, floats(x)]]};
    }, (bytes) => close(t, readFloats(bytes), Array.from({length: 12}, (_, row) => {
        const values = x.slice(row * 16, row * 16 + 16);
        const norm = Math.sqrt(values.reduce((sum, value) => sum + value * value, 0));
        return values.map((value) => value / norm);
    }).flat(), 'L2_NORM'));
});

test.serial('SCALE (ggml_scale of kq) and ggml_scale_bias (a sampler\'s 1 - cdf): a·s + b', async (t) => {
    const x = wave(32 * 4);
    await realistic(t, (g) => {
        const a = g.tensor({type: F32, ne: [32, 4]});
        const scaled = g.tensor({type: F32, ne: [32, 4], op: 'SCALE', src: [a], params: [f32(0.125), f32(0)]});
        return {nodes: [scaled, g.tensor({type: F32, ne: [32, 4], op: 'SCALE', src: [scaled], params: [f32(-1), f32(0.9)]})], inputs: [[a, floats(x)]]};
    }, (bytes) => close(t, readFloats(bytes), x.map((value) => 0.9 - value * 0.125), 'SCALE'));
});

test.serial('SET as ggml_set_1d (chameleon\'s image logits) and ggml_set_inplace (delta-net\'s output chunks)', async (t) => {
    const logits = wave(40);
    const image = wave(8, 3);
    const v = wave(8 * 4 * 3, 1);
    const chunk = wave(8 * 4, 2);
    await realistic(t, (g) => {
        const cur = g.tensor({type: F32, ne: [40]});
        const img = g.tensor({type: F32, ne: [8]});
        const set1d = g.tensor({type: F32, ne: [40], op: 'SET', src: [cur, img], params: [160, 160, 160, 4 * 12, 0]});
        const state = g.tensor({type: F32, ne: [8, 4, 3]});
        const ch = g.tensor({type: F32, ne: [8, 4, 1]});
        const inplace = g.tensor({type: F32, ne: [8, 4, 3], op: 'SET', src: [state, ch], params: [32, 128, 384, 2 * 128, 1], view: {of: state}});
        return {nodes: [set1d, inplace], inputs: [[cur, floats(logits)], [img, floats(image)], [state, floats(v)], [ch, floats(chunk)]]};
    }, (bytes) => close(t, readFloats(bytes), v.map((value, index) => index >= 64 ? chunk[index - 64]! : value), 'SET in place'));
});

test.serial('FILL then DIAG as delta-net builds its identity (ggml_diag(ggml_fill(ggml_view_1d(attn, CS, 0), 1)))', async (t) => {
    const cs = 8;
    await realistic(t, (g) => {
        const attn = g.tensor({type: F32, ne: [cs, cs, 2]});
        const row = g.tensor({type: F32, ne: [cs], view: {of: attn}});
        const ones = g.tensor({type: F32, ne: [cs], op: 'FILL', src: [row], params: [f32(1)]});
        return {nodes: [ones, g.tensor({type: F32, ne: [cs, cs], op: 'DIAG', src: [ones]})], inputs: [[attn, floats(wave(cs * cs * 2))]]};
    }, (bytes) => close(t, readFloats(bytes), Array.from({length: cs * cs}, (_, index) => index % (cs + 1) === 0 ? 1 : 0), 'identity'));
});

test.serial('FILL of a mask with -inf (llama-graph.cpp\'s kq_mask_all), f16', async (t) => {
    await realistic(t, (g) => {
        const mask = g.tensor({type: F16, ne: [32, 4]});
        return {nodes: [g.tensor({type: F16, ne: [32, 4], op: 'FILL', src: [mask], params: [f32(-Infinity)]})], inputs: []};
    }, (bytes) => t.true(Array.from({length: 128}, (_, index) => bytes.readUInt16LE(2 * index)).every((bits) => bits === 0xfc00)));
});

test.serial('ROPE_BACK undoes ROPE as deepseek4 de-ropes its attention output (NeoX, 8 of 32 dims rotated after 24)', async (t) => {
    const [width, heads, tokens] = [32, 2, 3];
    const x = wave(width * heads * tokens);
    const params = [0, 8, 2, 0, 4096, f32(10000), f32(1), f32(0), f32(1), f32(32), f32(1), 0, 0, 0, 0, 24];
    await realistic(t, (g) => {
        const a = g.tensor({type: F32, ne: [width, heads, tokens]});
        const positions = g.tensor({type: I32, ne: [tokens]});
        const roped = g.tensor({type: F32, ne: [width, heads, tokens], op: 'ROPE', src: [a, positions], params});
        const back = g.tensor({type: F32, ne: [width, heads, tokens], op: 'ROPE_BACK', src: [roped, positions], params});
        return {nodes: [roped, back], inputs: [[a, floats(x)], [positions, ints([5, 6, 900])]]};
    }, (bytes) => close(t, readFloats(bytes), x, 'ROPE_BACK ∘ ROPE', 1e-3));
});

test.serial('CLAMP as llama-graph.cpp uses it: qkv to ±limit, a weight sum to [6.1e-5, inf)', async (t) => {
    const x = wave(48 * 3, 0, 2);
    await realistic(t, (g) => {
        const a = g.tensor({type: F32, ne: [48, 3]});
        const qkv = g.tensor({type: F32, ne: [48, 3], op: 'CLAMP', src: [a], params: [f32(-0.5), f32(0.5)]});
        return {nodes: [qkv, g.tensor({type: F32, ne: [48, 3], op: 'CLAMP', src: [qkv], params: [f32(6.103515625e-5), f32(Infinity)]})], inputs: [[a, floats(x)]]};
    }, (bytes) => close(t, readFloats(bytes), x.map((value) => Math.max(Math.fround(6.103515625e-5), Math.min(0.5, Math.max(-0.5, value)))), 'CLAMP'));
});

test.serial('IM2COL as wavtokenizer\'s ggml_conv_1d_ph builds it: an f16 kernel [3, 4, 5] over [10, 4], padding 1, into f16', async (t) => {
    const [k, channels, length] = [3, 4, 10];
    const x = wave(length * channels);
    await realistic(t, (g) => {
        const kernel = g.tensor({type: F16, ne: [k, channels, 5]});
        const b = g.tensor({type: F32, ne: [length, channels]});
        return {nodes: [g.tensor({type: F16, ne: [channels * k, length, 1], op: 'IM2COL', src: [kernel, b], params: [1, 0, 1, 0, 1, 0, 0]})], inputs: [[b, floats(x)]]};
    }, (bytes) => close(t, Array.from({length: bytes.length / 2}, (_, index) => float16BitsToFloat32(bytes.readUInt16LE(2 * index))),
        Array.from({length: channels * k * length}, (_, index) => {
            const [column, position] = [index % (channels * k), Math.floor(index / (channels * k))];
            const [channel, tap] = [Math.floor(column / k), column % k];
            const at = position + tap - 1;
            return at < 0 || at >= length ? 0 : float16BitsToFloat32(float32ToFloat16Bits(x[channel * length + at]!));
        }), 'IM2COL', 2e-3));
});

test.serial('POOL_2D as minimax-m3 builds its block scores: max over blocks of 4 along the keys', async (t) => {
    const [keys, heads, seqs, block] = [16, 2, 2, 4];
    const x = wave(keys * heads * seqs, 0, 3);
    await realistic(t, (g) => {
        const a = g.tensor({type: F32, ne: [keys, heads, 1, seqs]});
        return {nodes: [g.tensor({type: F32, ne: [keys / block, heads, 1, seqs], op: 'POOL_2D', src: [a], params: [0, block, 1, block, 1, 0, 0]})], inputs: [[a, floats(x)]]};
    }, (bytes) => close(t, readFloats(bytes), Array.from({length: keys / block * heads * seqs}, (_, index) =>
        Math.max(...x.slice(index * block, index * block + block))), 'POOL_2D'));
});

test.serial('PAD as llama-graph.cpp pads the logits (ggml_pad(t_logits, 0, 1, 0, 0)) and delta-net pads q (ggml_pad_ext)', async (t) => {
    const x = wave(10 * 3);
    await realistic(t, (g) => {
        const a = g.tensor({type: F32, ne: [10, 3]});
        const logits = g.tensor({type: F32, ne: [10, 4], op: 'PAD', src: [a], params: [0, 0, 0, 1]});
        return {nodes: [logits, g.tensor({type: F32, ne: [12, 5], op: 'PAD', src: [logits], params: [1, 1, 0, 1]})], inputs: [[a, floats(x)]]};
    }, (bytes) => close(t, readFloats(bytes), Array.from({length: 60}, (_, index) => {
        const [i, row] = [index % 12 - 1, Math.floor(index / 12)];
        return i < 0 || i >= 10 || row >= 3 ? 0 : x[row * 10 + i]!;
    }), 'PAD'));
});

test.serial('ARANGE as minimax-m3 numbers a block (ggml_arange(0, blk, 1))', async (t) => {
    await realistic(t, (g) => ({nodes: [g.tensor({type: F32, ne: [8], op: 'ARANGE', params: [f32(0), f32(8), f32(1)]})], inputs: []}),
        (bytes) => t.deepEqual(readFloats(bytes), [0, 1, 2, 3, 4, 5, 6, 7]));
});

test.serial('ARGSORT of a sampler\'s logits, descending (llama-sampler.cpp\'s ggml_argsort)', async (t) => {
    const logits = wave(20, 0.5);
    await realistic(t, (g) => {
        const a = g.tensor({type: F32, ne: [20]});
        return {nodes: [g.tensor({type: I32, ne: [20], op: 'ARGSORT', src: [a], params: [1]})], inputs: [[a, floats(logits)]]};
    }, (bytes) => t.deepEqual(readInts(bytes), logits.map((_, index) => index).sort((a, b) => logits[b]! - logits[a]!)));
});

test.serial('TOP_K of logits [50, 2] (a backend top-k sampler, deepseek32\'s indexer): the k best of each row', async (t) => {
    const x = wave(100, 0.2);
    await realistic(t, (g) => {
        const a = g.tensor({type: F32, ne: [50, 2]});
        return {nodes: [g.tensor({type: I32, ne: [5, 2], op: 'TOP_K', src: [a]})], inputs: [[a, floats(x)]]};
    }, (bytes) => {
        const got = readInts(bytes);
        for (const row of [0, 1]) {
            const values = x.slice(row * 50, row * 50 + 50);
            const best = values.map((_, index) => index).sort((a, b) => values[b]! - values[a]!).slice(0, 5);
            t.deepEqual(got.slice(row * 5, row * 5 + 5).sort((a, b) => a - b), best.sort((a, b) => a - b));
        }
    });
});

test.serial('TRI as delta-net masks a chunk (ggml_tri(kb, GGML_TRI_TYPE_LOWER)) on [8, 8, 2]', async (t) => {
    const x = wave(128);
    await realistic(t, (g) => {
        const a = g.tensor({type: F32, ne: [8, 8, 2]});
        return {nodes: [g.tensor({type: F32, ne: [8, 8, 2], op: 'TRI', src: [a], params: [3]})], inputs: [[a, floats(x)]]};
    }, (bytes) => close(t, readFloats(bytes), x.map((value, index) => index % 8 < Math.floor(index / 8) % 8 ? value : 0), 'TRI'));
});

/** XIELU's parameters as ggml_xielu stores them (alpha_n, alpha_p, beta, eps), and each unary op's JS reference. */
const XIELU_PARAMS = [0.8, 0.6, 0.5, -1e-6] as const;
const gelu = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
const erf = (v: number) => { // Abramowitz-Stegun 7.1.26
    const z = 1 / (1 + 0.3275911 * Math.abs(v));
    return Math.sign(v) * (1 - (((((1.061405429 * z - 1.453152027) * z) + 1.421413741) * z - 0.284496736) * z + 0.254829592) * z * Math.exp(-v * v));
};
const xielu = (v: number) => {
    const [alphaN, alphaP, beta, eps] = XIELU_PARAMS;
    return v > 0 ? alphaP * v * v + beta * v : (Math.expm1(Math.min(v, eps)) - v) * alphaN + beta * v;
};
const unaryReferences = new Map<string, (v: number) => number>([
    ['ABS', Math.abs], ['SGN', Math.sign], ['NEG', (v) => -v], ['STEP', (v) => v > 0 ? 1 : 0], ['TANH', Math.tanh],
    ['ELU', (v) => v > 0 ? v : Math.expm1(v)], ['RELU', (v) => Math.max(0, v)], ['SIGMOID', (v) => 1 / (1 + Math.exp(-v))], ['GELU', gelu],
    ['GELU_QUICK', (v) => v / (1 + Math.exp(-1.702 * v))], ['SILU', (v) => v / (1 + Math.exp(-v))],
    ['HARDSWISH', (v) => v * Math.min(1, Math.max(0, (v + 3) / 6))], ['HARDSIGMOID', (v) => Math.min(1, Math.max(0, (v + 3) / 6))],
    ['EXP', Math.exp], ['EXPM1', Math.expm1], ['SOFTPLUS', (v) => v > 20 ? v : Math.log1p(Math.exp(v))],
    ['GELU_ERF', (v) => 0.5 * v * (1 + erf(v / Math.SQRT2))], ['XIELU', xielu], ['FLOOR', Math.floor], ['CEIL', Math.ceil],
    ['ROUND', Math.round], ['TRUNC', Math.trunc]
]);

test.serial('UNARY: each op of GGML_UNARY_OP_NAMES on [32, 2] activations, in one graph, to a JS reference', async (t) => {
    const x = wave(64, 0, 4);
    const nodes = new Map<string, RpcTensor>();
    await realistic(t, (g) => {
        const a = g.tensor({type: F32, ne: [32, 2]});
        for (const name of GGML_UNARY_OP_NAMES)
            nodes.set(name, g.tensor({type: F32, ne: [32, 2], op: 'UNARY', src: [a],
                params: name === 'XIELU' ? [unaryOp(name), ...XIELU_PARAMS.map(f32)] : [unaryOp(name)]}));
        return {nodes: [...nodes.values()], inputs: [[a, floats(x)]]};
    }, async (_, read) => {
        for (const [name, node] of nodes)
            close(t, readFloats(await read(node)), x.map((v) => unaryReferences.get(name)!(Math.fround(v))),
                name, ['GELU', 'GELU_QUICK', 'GELU_ERF'].includes(name) ? 1e-2 : 1e-4);
    });
});

// ----------------------------------------------------------------------------------------------------------------
// 2. Seeded random nodes: refused with a rule, or run by a server with no guard, which lives.

type Fill = (r: Rng, type: number, bytes: number) => Buffer;

interface SourcePlan {
    type: number,
    ne: number[],
    fill?: Fill
}

/** A node to build: its op, type, shape, op_params and sources; `inplace` makes it a view of that source. */
interface Plan {
    op: GgmlOpName,
    type: number,
    ne: number[],
    params: number[],
    srcs: (SourcePlan | undefined)[],
    inplace?: number
}

const MUTANT_TYPES = [F32, F32, F16, BF16, I32, I16, Q8_0, REMOVED_TYPE];
const EDGE_PARAMS = [0, 1, -1, 2, 3, 4, 8, 24, 40, 1 << 20, 2 ** 31 - 1, -(2 ** 31), f32(NaN), f32(Infinity), f32(-Infinity),
    f32(1e-5), f32(-1), f32(0.5), f32(3e38)];

/** Mostly small, some NaN and infinities: what an untrusted peer may write. */
function hostileFloat(r: Rng) {
    const u = r.next();
    return u < 0.01 ? NaN : u < 0.02 ? Infinity : u < 0.03 ? -Infinity : (r.next() - 0.5) * 8;
}

const anyData: Fill = (r, type, bytes) => {
    const data = Buffer.alloc(bytes);
    if (type === F32)
        for (let at = 0; at + 4 <= bytes; at += 4)
            data.writeFloatLE(hostileFloat(r), at);
    else if (type === F16)
        for (let at = 0; at + 2 <= bytes; at += 2)
            data.writeUInt16LE(float32ToFloat16Bits(hostileFloat(r)), at);
    else if (type === I32)
        for (let at = 0; at + 4 <= bytes; at += 4)
            data.writeInt32LE(r.int(-1000, 1000), at);
    else
        for (let at = 0; at < bytes; at++)
            data[at] = r.int(0, 255);
    return data;
};

/** Valid row indices below `limit()` (checked by the kernel at run time, with an abort: a hostile value is no bug here). */
const indices = (limit: () => number): Fill => (r, type, bytes) => {
    if (type !== I32)
        return anyData(r, type, bytes);
    const data = Buffer.alloc(bytes);
    for (let at = 0; at + 4 <= bytes; at += 4)
        data.writeInt32LE(r.int(0, Math.max(0, limit() - 1)), at);
    return data;
};

function mutateShape(r: Rng, ne: number[]) {
    const dim = r.int(0, 3);
    ne[dim] = r.pick([ne[dim]! + 1, Math.max(1, ne[dim]! - 1), ne[dim]! * 2, 1, ne[dim]! + r.int(2, 9)]);
}

/** One or two of: a type, a dimension, an op parameter, a source gone, added or swapped, the result over a source or not. */
function mutate(r: Rng, plan: Plan) {
    for (let count = r.int(1, 2); count > 0; count--) {
        const present = plan.srcs.flatMap((source, slot) => source === undefined ? [] : [slot]);
        const source = present.length === 0 ? undefined : plan.srcs[r.pick(present)];
        switch (r.int(0, 9)) {
            case 0: if (source !== undefined) source.type = r.pick(MUTANT_TYPES); break;
            case 1: plan.type = r.pick(MUTANT_TYPES); break;
            case 2: if (source !== undefined) mutateShape(r, source.ne); break;
            case 3: mutateShape(r, plan.ne); break;
            case 4: plan.params[r.int(0, 15)] = r.pick(EDGE_PARAMS); break;
            case 5: {
                const slot = r.int(0, Math.max(0, plan.params.length - 1));
                const value = plan.params[slot] ?? 0;
                plan.params[slot] = r.pick([value + 1, value - 1, value * 2, -value, 0]) | 0;
                break;
            }
            case 6: if (present.length > 0) plan.srcs[r.pick(present)] = undefined; break;
            case 7: plan.srcs[r.int(0, 4)] = {type: r.pick([F32, I32]), ne: [r.int(1, 8), r.int(1, 3), 1, 1]}; break;
            case 8: if (present.length >= 2) {
                const [a, b] = [r.pick(present), r.pick(present)];
                [plan.srcs[a], plan.srcs[b]] = [plan.srcs[b], plan.srcs[a]];
            } break;
            default: plan.inplace = plan.inplace === undefined && present.length > 0 ? r.pick(present) : undefined;
        }
    }
}

/** Builds a plan's tensors in one buffer: sources packed or (sometimes) views with other strides; the data to write. */
class Materializer {
    readonly g: GraphBuilder;
    readonly data: [RpcTensor, Buffer][] = [];

    constructor(private readonly r: Rng, buffer: LabBuffer) {
        this.g = new GraphBuilder(buffer);
    }

    /** Strides for `ne` other than packed ones: padded, transposed, permuted, element-strided, odd or overlapping. */
    private strides(type: number, ne: readonly number[]): number[] {
        const {r} = this;
        const traits = GGML_TYPES[type];
        const size = traits?.typeSize ?? 4;
        const row = Math.max(1, Math.floor(size * ne[0]! / (traits?.blockSize ?? 1)));
        const dense = [size, row, row * ne[1]!, row * ne[1]! * ne[2]!];
        switch (r.pick(['padded', 'transposed', 'permuted', 'element', 'ones', 'overlap', 'broadcast'])) {
            case 'padded': {
                const pad = size * r.int(1, 4);
                const nb1 = row + pad;
                const nb2 = nb1 * ne[1]! + r.pick([0, pad]);
                return [size, nb1, nb2, nb2 * ne[2]! + r.pick([0, pad])];
            }
            case 'transposed':
                return [size * ne[1]!, size, size * ne[0]! * ne[1]!, size * ne[0]! * ne[1]! * ne[2]!];
            case 'permuted': {
                const order = [0, 1, 2, 3];
                for (let index = 3; index > 0; index--) {
                    const other = r.int(0, index);
                    [order[index], order[other]] = [order[other]!, order[index]!];
                }
                const nb = [0, 0, 0, 0];
                let stride = size;
                for (const dim of order) {
                    nb[dim] = stride;
                    stride *= ne[dim]!;
                }
                return nb;
            }
            case 'element': {
                const element = r.pick([2 * size, 1, 3, size + 1]);
                return [element, element * ne[0]!, element * ne[0]! * ne[1]!, element * ne[0]! * ne[1]! * ne[2]!];
            }
            case 'ones':
                return dense.map((nb, dim) => ne[dim] === 1 && dim > 0 ? r.pick([0, 4, 1000, 7 * row]) : nb);
            case 'overlap':
                return [size, Math.max(1, Math.floor(row / 2)), row * ne[1]! / 2, row * ne[1]! * ne[2]! / 2].map(Math.floor);
            default: {
                const nb = [...dense];
                nb[r.int(1, 3)] = 0;
                return nb;
            }
        }
    }

    /** `ggml_nbytes` of a shape and strides. */
    private static extent(type: number, ne: readonly number[], nb: readonly number[]) {
        const traits = GGML_TYPES[type];
        const blocks = traits?.blockSize ?? 1;
        let bytes = blocks === 1 ? traits?.typeSize ?? 4 : Math.floor(ne[0]! * nb[0]! / blocks);
        for (let dim = blocks === 1 ? 0 : 1; dim < 4; dim++)
            bytes += (ne[dim]! - 1) * nb[dim]!;
        return bytes;
    }

    /** A new tensor to view, of `bytes` at least, filled by `fill`. */
    private owner(type: number, bytes: number, fill: Fill | undefined) {
        const ownerType = GGML_TYPES[type]?.blockSize === 1 ? type : GgmlType.I8;
        const size = GGML_TYPES[ownerType]!.typeSize;
        const owner = this.g.tensor({type: ownerType, ne: [Math.max(1, Math.ceil(bytes / size))]});
        if (fill !== undefined)
            this.data.push([owner, fill(this.r, ownerType, GraphBuilder.bytes(owner))]);
        return owner;
    }

    private strided(type: number, ne: readonly number[], fill: Fill | undefined, spec: {op?: GgmlOpName, src?: (RpcTensor | undefined)[], params?: number[]} = {}) {
        const nb = this.strides(type, ne);
        // Mostly whole elements in, sometimes a byte or two (misaligned data).
        const offset = this.r.chance(0.1) ? this.r.int(1, 3) : (GGML_TYPES[type]?.typeSize ?? 4) * this.r.int(0, 3);
        const owner = this.owner(type, offset + Math.max(1, Materializer.extent(type, ne, nb)), fill);
        const view = this.g.tensor({type, ne, view: {of: owner, offset, nb: nb.slice(1)}, ...spec});
        view.nb[0] = nb[0]!;
        return view;
    }

    source(plan: SourcePlan) {
        const fill = plan.fill ?? anyData;
        if (this.r.chance(0.25))
            return this.strided(plan.type, plan.ne, fill);
        const tensor = this.g.tensor({type: plan.type, ne: plan.ne});
        this.data.push([tensor, fill(this.r, plan.type, GraphBuilder.bytes(tensor))]);
        return tensor;
    }

    node(plan: Plan) {
        const src = plan.srcs.map((source) => source === undefined ? undefined : this.source(source));
        const spec = {type: plan.type, ne: plan.ne, op: plan.op, src, params: plan.params};
        const target = plan.inplace === undefined ? undefined : src[plan.inplace];
        if (target !== undefined)
            return this.g.tensor({...spec, view: {of: target}});
        if (this.r.chance(0.15))
            return this.strided(plan.type, plan.ne, undefined, {op: plan.op, src, params: plan.params});
        return this.g.tensor(spec);
    }
}

function describe(tensors: RpcTensor[], nodeId: bigint) {
    return tensors.map((tensor) => `${tensor.id === nodeId ? 'NODE ' : ''}#${tensor.id} type ${tensor.type} ne ${tensor.ne.join('×')} nb ${tensor.nb.join(',')}`
        + `${tensor.viewSrc === 0n ? '' : ` view of #${tensor.viewSrc}+${tensor.viewOffs}`} src ${tensor.src.filter((id) => id !== 0n).map((id) => `#${id}`).join(',')}`
        + ` params ${Array.from(tensor.opParams).join(',')}`).join('\n');
}

/**
 * `cases` seeded plans of `op`, half of them mutated: each through checkGraph; a refused one must say which rule it
 * broke, an accepted one runs on a server with no guard (2 threads), which must answer after it. A server that
 * dies or hangs fails the test with the case (unless it ended on one of `dataChecks`, the kernel's own GGML_ASSERT
 * on hostile contents); a new one takes over, so that one run lists every such case.
 */
function property(op: GgmlOpName, seed: number, plan: (r: Rng) => Plan,
    {cases = 200, minAccepted = 40, minRefused = 20, dataChecks = [] as string[]} = {}) {
    test.serial(`${op}: ${cases} seeded random nodes, each refused with a rule or computed by a server with no guard that lives`, async (t) => {
        const start = () => directLab(t, 2, 1n << 24n);
        let {lab, client, buffer} = await start();
        const r = new Rng(seed);
        let accepted = 0;
        const refused = new Map<GraphRule, number>();
        const deaths: string[] = [];
        let endedByDataCheck = 0;
        for (let index = 0; index < cases; index++) {
            const drawn = plan(r);
            if (r.chance(0.5))
                mutate(r, drawn);
            const built = new Materializer(r, buffer);
            let node: RpcTensor;
            try {
                node = built.node(drawn);
            } catch (error) {
                if (error instanceof RangeError) // a lab buffer too small for the draw: draw again
                    continue;
                throw error;
            }
            const payload = built.g.graph([node]);
            try {
                checkGraph(payload, tableOf(buffer));
            } catch (error) {
                if (!(error instanceof GraphCheckError))
                    throw new Error(`case ${index}: the contract threw ${String(error)}\n${describe(built.g.tensors, node.id)}`);
                refused.set(error.rule, (refused.get(error.rule) ?? 0) + 1);
                continue;
            }
            accepted++;
            for (const [tensor, bytes] of built.data)
                await client.setTensor(tensor, bytes);
            await client.graphCompute(payload);
            const alive = await within(client.alive(), 5_000).then(() => true, () => false);
            if (!alive) {
                for (let waited = 0; waited < 10_000 && lab.exits.length === 0; waited += 100)
                    await sleep(100);
                if (lab.exits[0]?.signal === 'SIGABRT' && lab.lines.some((line) => dataChecks.some((check) => line.includes(check))))
                    endedByDataCheck++;
                else
                    deaths.push(`case ${index}: ${JSON.stringify(lab.exits)} ${lab.lines.slice(-3).join(' | ')}\n${describe(built.g.tensors, node.id)}`);
                client.close();
                await lab.server.stop();
                ({lab, client, buffer} = await start());
            }
        }
        const refusedTotal = [...refused.values()].reduce((sum, count) => sum + count, 0);
        t.log(`${op}: ${accepted} accepted and computed${endedByDataCheck === 0 ? '' : ` (${endedByDataCheck} ended by the kernel's data check)`}, `
            + `${refusedTotal} refused (${[...refused].map(([rule, count]) => `${rule} ${count}`).join(', ')})`);
        t.deepEqual(deaths, [], 'the server died or hung');
        t.true(accepted >= minAccepted, `only ${accepted} accepted`);
        t.true(refusedTotal >= minRefused, `only ${refusedTotal} refused`);
    });
}

/** A random shape: up to 4 dimensions, a few thousand elements at most. */
function shape(r: Rng, max = [48, 6, 4, 2]) {
    return max.map((limit) => r.chance(0.3) ? 1 : r.int(1, limit));
}

const sameShape = (op: GgmlOpName, types: number[], params: (r: Rng) => number[] = () => []) => (r: Rng): Plan => {
    const type = r.pick(types);
    const ne = shape(r);
    return {op, type, ne: [...ne], params: params(r), srcs: [{type, ne}], inplace: r.chance(0.2) ? 0 : undefined};
};

property('ADD_ID', 101, (r) => {
    const [n, used, tokens, experts] = [r.int(1, 40), r.int(1, 4), r.int(1, 5), r.int(1, 8)];
    const plan: Plan = {op: 'ADD_ID', type: F32, ne: [n, used, tokens, 1], params: [], srcs: [
        {type: F32, ne: [n, used, tokens, 1]}, {type: F32, ne: [n, experts, 1, 1]}, {type: I32, ne: [used, tokens, 1, 1]}
    ]};
    plan.srcs[2]!.fill = indices(() => plan.srcs[1]?.ne[1] ?? 1);
    return plan;
}, {dataChecks: ['GGML_ASSERT(i11 >= 0 && i11 < ne11)']});

for (const [op, seed] of [['SQR', 102], ['SQRT', 103], ['LOG', 104]] as const)
    property(op, seed, sameShape(op, [F32, F32, F16]), {cases: 150, minAccepted: 30});

property('SUM', 105, (r) => ({op: 'SUM', type: F32, ne: [1, 1, 1, 1], params: [], srcs: [{type: F32, ne: shape(r)}]}));

for (const [op, seed] of [['SUM_ROWS', 106], ['MEAN', 107]] as const)
    property(op, seed, (r) => {
        const ne = shape(r);
        return {op, type: F32, ne: [1, ne[1]!, ne[2]!, ne[3]!], params: [], srcs: [{type: F32, ne}]};
    }, {cases: 150, minAccepted: 30});

property('CUMSUM', 108, sameShape('CUMSUM', [F32]));

property('ARGMAX', 109, (r) => {
    const [n, rows] = [r.int(1, 100), r.int(1, 8)];
    return {op: 'ARGMAX', type: I32, ne: [rows, 1, 1, 1], params: [], srcs: [{type: F32, ne: [n, rows, 1, 1]}]};
});

property('REPEAT', 110, (r) => {
    const type = r.pick([F32, F16]);
    const ne = shape(r, [16, 4, 3, 2]);
    return {op: 'REPEAT', type, ne: ne.map((n) => n * r.pick([1, 1, 2, 3])), params: [], srcs: [{type, ne}]};
});

property('CONCAT', 111, (r) => {
    const type = r.pick([F32, F16]);
    const dim = r.int(0, 3);
    const a = shape(r, [24, 5, 3, 2]);
    const b = a.map((n, d) => d === dim ? r.int(1, 6) : n);
    return {op: 'CONCAT', type, ne: a.map((n, d) => n + (d === dim ? b[d]! : 0)), params: [dim], srcs: [{type, ne: a}, {type, ne: b}]};
});

for (const [op, seed] of [['NORM', 112], ['L2_NORM', 113]] as const)
    property(op, seed, sameShape(op, [F32], (r) => [f32(r.pick([1e-5, 1e-6, 0, 1e-12]))]), {cases: 150, minAccepted: 30});

property('GROUP_NORM', 114, (r) => {
    const [length, channels] = [r.int(1, 20), r.int(1, 16)];
    const ne = [length, 1, channels, r.int(1, 2)];
    return {op: 'GROUP_NORM', type: F32, ne: [...ne], params: [r.int(1, channels), f32(r.pick([1e-6, 1e-5]))], srcs: [{type: F32, ne}],
        inplace: r.chance(0.2) ? 0 : undefined};
});

property('SCALE', 115, sameShape('SCALE', [F32], (r) => [f32(r.pick([0.125, 1, -1, 0, 2.5])), f32(r.pick([0, 0, 1, -Infinity, 0.9]))]));

property('SET', 116, (r) => {
    const a = [r.int(1, 24), r.int(1, 5), r.int(1, 3), 1];
    const inplace = r.int(0, 1);
    if (r.chance(0.3)) { // ggml_set_1d
        const total = a[0]! * a[1]! * a[2]!;
        const length = r.int(1, total);
        return {op: 'SET', type: F32, ne: [...a], params: [4 * a[0]!, 4 * a[0]! * a[1]!, 4 * total, 4 * r.int(0, total - length), inplace],
            srcs: [{type: F32, ne: a}, {type: F32, ne: [length, 1, 1, 1]}], inplace: inplace === 1 ? 0 : undefined};
    }
    const b = [r.int(1, a[0]!), r.int(1, a[1]!), r.int(1, a[2]!), 1];
    const offset = 4 * (r.int(0, a[0]! - b[0]!) + a[0]! * (r.int(0, a[1]! - b[1]!) + a[1]! * r.int(0, a[2]! - b[2]!)));
    return {op: 'SET', type: F32, ne: [...a], params: [4 * a[0]!, 4 * a[0]! * a[1]!, 4 * a[0]! * a[1]! * a[2]!, offset, inplace],
        srcs: [{type: F32, ne: a}, {type: F32, ne: b}], inplace: inplace === 1 ? 0 : undefined};
});

property('DIAG', 117, (r) => {
    const [n, k2, k3] = [r.int(1, 24), r.int(1, 3), r.int(1, 2)];
    return {op: 'DIAG', type: F32, ne: [n, n, k2, k3], params: [], srcs: [{type: F32, ne: [n, 1, k2, k3]}]};
});

property('ROPE_BACK', 118, (r) => {
    const mode = r.pick([0, 2, 2, 8, 24, 40]);
    const width = mode === 24 ? 4 * r.int(1, 8) : 2 * r.int(1, 16);
    const [heads, tokens] = [r.int(1, 4), r.int(1, 4)];
    let nDims = mode === 24 ? width / 2 : 2 * r.int(1, width / 2);
    const offset = mode === 24 || r.chance(0.6) ? 0 : 2 * r.int(0, (width - nDims) / 2);
    if (r.chance(0.05))
        nDims = 0;
    const sections = [0, 0, 0, 0];
    if ((mode & 8) !== 0) {
        let left = width;
        for (let index = 0; index < 4; index++) {
            sections[index] = r.int(index === 0 ? 1 : 0, Math.min(left, 8));
            left -= sections[index]!;
        }
    }
    const params = [0, nDims, mode, 0, r.pick([0, 4096]), f32(10000), f32(r.pick([1, 0.25])), f32(r.pick([0, 1])), f32(1), f32(32), f32(1),
        ...sections, offset];
    const srcs: (SourcePlan | undefined)[] = [{type: r.pick([F32, F32, F16]), ne: [width, heads, tokens, 1]},
        {type: I32, ne: [tokens * ((mode & 8) !== 0 ? 4 : 1), 1, 1, 1]}];
    if (r.chance(0.3))
        srcs.push({type: F32, ne: [r.pick([width / 2, nDims / 2, width]), 1, 1, 1]});
    return {op: 'ROPE_BACK', type: srcs[0]!.type, ne: [width, heads, tokens, 1], params, srcs};
}, {cases: 250});

property('CLAMP', 119, sameShape('CLAMP', [F32, F16], (r) => [f32(r.pick([-1, -Infinity, 6.1e-5, -3.4e38])), f32(r.pick([1, Infinity, 0.5]))]));

property('IM2COL', 120, (r) => {
    const dstType = r.pick([F16, F32]);
    const imageType = dstType === F16 ? r.pick([F32, F16]) : F32;
    const kernelType = r.pick([F16, F32]);
    const out = (size: number, k: number, s: number, p: number, d: number) => Math.trunc((size + 2 * p - d * (k - 1) - 1) / s) + 1;
    if (r.chance(0.5)) { // ggml_conv_1d
        const [k, channels, length, batch] = [r.int(1, 5), r.int(1, 4), r.int(1, 16), r.int(1, 2)];
        const [s0, p0, d0] = [r.int(1, 2), r.int(0, Math.floor(k / 2)), r.int(1, 2)];
        return {op: 'IM2COL', type: dstType, ne: [channels * k, Math.max(1, out(length, k, s0, p0, d0)), batch, 1], params: [s0, 0, p0, 0, d0, 0, 0],
            srcs: [{type: kernelType, ne: [k, channels, r.int(1, 3), 1]}, {type: imageType, ne: [length, channels, batch, 1]}]};
    }
    const [kw, kh, channels, width, height, batch] = [r.int(1, 3), r.int(1, 3), r.int(1, 3), r.int(1, 10), r.int(1, 8), r.int(1, 2)];
    const [s0, s1, p0, p1, d0, d1] = [r.int(1, 2), r.int(1, 2), r.int(0, 1), r.int(0, 1), r.int(1, 2), r.int(1, 2)];
    return {op: 'IM2COL', type: dstType, ne: [channels * kh * kw, Math.max(1, out(width, kw, s0, p0, d0)), Math.max(1, out(height, kh, s1, p1, d1)), batch],
        params: [s0, s1, p0, p1, d0, d1, 1], srcs: [{type: kernelType, ne: [kw, kh, channels, r.int(1, 2)]}, {type: imageType, ne: [width, height, channels, batch]}]};
});

property('POOL_2D', 121, (r) => {
    const ne = [r.int(1, 24), r.int(1, 8), r.int(1, 3), r.int(1, 2)];
    const [k0, k1] = [r.int(1, Math.min(4, ne[0]!)), r.int(1, Math.min(4, ne[1]!))];
    const [s0, s1, p0, p1] = [r.int(1, 3), r.int(1, 3), r.int(0, Math.floor(k0 / 2)), r.int(0, Math.floor(k1 / 2))];
    const out = [Math.floor((ne[0]! + 2 * p0 - k0) / s0) + 1, Math.floor((ne[1]! + 2 * p1 - k1) / s1) + 1, ne[2]!, ne[3]!];
    return {op: 'POOL_2D', type: F32, ne: out, params: [r.int(0, 1), k0, k1, s0, s1, p0, p1], srcs: [{type: r.pick([F32, F16]), ne}]};
});

property('PAD', 122, (r) => {
    const ne = shape(r, [24, 5, 3, 2]);
    const padding = Array.from({length: 8}, (_, slot) => slot % 2 === 0 && r.chance(0.5) ? 0 : r.int(0, 3));
    return {op: 'PAD', type: F32, ne: ne.map((n, dim) => n + padding[2 * dim]! + padding[2 * dim + 1]!), params: [...padding, 0], srcs: [{type: F32, ne}]};
});

property('ARANGE', 123, (r) => {
    const start = r.int(-5, 5) * r.pick([1, 0.5]);
    const step = r.pick([1, 0.5, 2, 0.25, 3]);
    const stop = start + r.int(1, 40) * step - r.pick([0, step / 2]);
    const steps = Math.ceil(Math.fround(Math.fround(stop - start) / step));
    return {op: 'ARANGE', type: F32, ne: [steps, 1, 1, 1], params: [f32(start), f32(stop), f32(step)], srcs: []};
}, {cases: 150, minAccepted: 30, minRefused: 10});

property('ARGSORT', 124, (r) => {
    const ne = shape(r, [64, 6, 3, 1]);
    return {op: 'ARGSORT', type: I32, ne: [...ne], params: [r.int(0, 1)], srcs: [{type: F32, ne}]};
});

property('TOP_K', 125, (r) => {
    const ne = shape(r, [64, 6, 3, 1]);
    return {op: 'TOP_K', type: I32, ne: [r.int(1, ne[0]!), ne[1]!, ne[2]!, ne[3]!], params: [], srcs: [{type: F32, ne}]};
});

property('TRI', 126, (r) => {
    const n = r.int(1, 16);
    const ne = [n, n, r.int(1, 3), r.int(1, 2)];
    return {op: 'TRI', type: F32, ne: [...ne], params: [r.int(0, 3)], srcs: [{type: F32, ne}]};
});

property('FILL', 127, sameShape('FILL', [F32, F16], (r) => [f32(r.pick([0, 1, -Infinity, -0.5]))]));

property('UNARY', 128, (r) => {
    const op = r.int(0, GGML_UNARY_OP_NAMES.length - 1);
    const params = op === unaryOp('XIELU') ? [op, f32(0.8), f32(0.6), f32(0.5), f32(-1e-6)] : [op];
    return sameShape('UNARY', [F32, F32, F16], () => params)(r);
}, {cases: 300});

// ----------------------------------------------------------------------------------------------------------------
// 3. The dangerous mistakes, refused (no server needed: the checks are pure).

function offline() {
    const buffer: LabBuffer = {handle: 7n, size: 1n << 30n, base: 1n << 32n}; // addresses only: nothing is allocated
    return {g: new GraphBuilder(buffer), table: tableOf(buffer)};
}

/** checkGraph's verdict on the node `build` makes: undefined when accepted. */
function verdict(build: (g: GraphBuilder) => RpcTensor) {
    const {g, table} = offline();
    const node = build(g);
    try {
        checkGraph(g.graph([node]), table);
        return undefined;
    } catch (error) {
        if (error instanceof GraphCheckError)
            return error;
        throw error;
    }
}

function accepts(t: ExecutionContext, build: (g: GraphBuilder) => RpcTensor) {
    const error = verdict(build);
    t.is(error, undefined, error?.message);
}

function refuses(t: ExecutionContext, rule: GraphRule, build: (g: GraphBuilder) => RpcTensor, message?: RegExp) {
    const error = verdict(build);
    t.is(error?.rule, rule, error?.message ?? 'accepted');
    if (message !== undefined)
        t.regex(error?.message ?? '', message);
}

test.serial('ADD_ID refuses f16 operands (the kernel aborts), ids that do not match the rows, and an unpacked result row', (t) => {
    const node = ({type = F32 as number, idsNe = [2, 3]} = {}) => (g: GraphBuilder) => g.tensor({type: F32, ne: [16, 2, 3], op: 'ADD_ID',
        src: [g.tensor({type, ne: [16, 2, 3]}), g.tensor({type, ne: [16, 4]}), g.tensor({type: I32, ne: idsNe})]});
    accepts(t, node());
    refuses(t, 'op-type', node({type: F16}));
    refuses(t, 'op-shape', node({idsNe: [3, 3]}));
    refuses(t, 'op-shape', node({idsNe: [2, 2]}));
    refuses(t, 'strides', (g) => nodeView(g, {type: F32, ne: [16, 2, 3], op: 'ADD_ID',
        src: [g.tensor({type: F32, ne: [16, 2, 3]}), g.tensor({type: F32, ne: [16, 4]}), g.tensor({type: I32, ne: [2, 3]})]}, [8, 128, 256, 768]));
    // ids read across int32 boundaries: garbage ids (the kernel would abort on them).
    refuses(t, 'strides', (g) => g.tensor({type: F32, ne: [16, 2, 3], op: 'ADD_ID', src: [g.tensor({type: F32, ne: [16, 2, 3]}), g.tensor({type: F32, ne: [16, 4]}),
        viewOf(g, g.tensor({type: I32, ne: [12]}), I32, [2, 3], [4, 6, 18, 18])]}), /aligned/);
    // A result over its own ids overwrites them with sums while it reads them.
    refuses(t, 'view', (g) => {
        const ids = g.tensor({type: I32, ne: [96]});
        return g.tensor({type: F32, ne: [16, 2, 3], op: 'ADD_ID', src: [g.tensor({type: F32, ne: [16, 2, 3]}), g.tensor({type: F32, ne: [16, 4]}),
            viewOf(g, ids, I32, [2, 3], [4, 8, 24, 24])], view: {of: ids, nb: [64, 128, 384]}});
    }, /overlaps the ids/);
});

test.serial('SQR, SQRT, LOG refuse a result of another type (the kernel aborts on the pair) or shape, and rows that are not packed', (t) => {
    for (const op of ['SQR', 'SQRT', 'LOG'] as const) {
        accepts(t, (g) => g.tensor({type: F16, ne: [8, 2], op, src: [g.tensor({type: F16, ne: [8, 2]})]}));
        refuses(t, 'op-type', (g) => g.tensor({type: F32, ne: [8, 2], op, src: [g.tensor({type: F16, ne: [8, 2]})]}));
        refuses(t, 'op-type', (g) => g.tensor({type: BF16, ne: [8, 2], op, src: [g.tensor({type: BF16, ne: [8, 2]})]}));
        refuses(t, 'op-shape', (g) => g.tensor({type: F32, ne: [8, 3], op, src: [g.tensor({type: F32, ne: [8, 2]})]}));
        refuses(t, 'strides', (g) => {
            const owner = g.tensor({type: F32, ne: [32]});
            return g.tensor({type: F32, ne: [8, 2], op, src: [viewOf(g, owner, F32, [8, 2], [8, 64, 128, 128])]});
        });
    }
});

test.serial('SUM refuses an f16 result of an f32 sum (the kernel writes 4 bytes into 2) and a strided source (read as an array: an assert only)', (t) => {
    accepts(t, (g) => g.tensor({type: F32, ne: [1], op: 'SUM', src: [g.tensor({type: F32, ne: [100]})]}));
    refuses(t, 'op-type', (g) => g.tensor({type: F16, ne: [1], op: 'SUM', src: [g.tensor({type: F32, ne: [100]})]}));
    refuses(t, 'strides', (g) => {
        const owner = g.tensor({type: F32, ne: [200]});
        return g.tensor({type: F32, ne: [1], op: 'SUM', src: [viewOf(g, owner, F32, [100], [8, 800, 800, 800])]});
    });
});

test.serial('SUM_ROWS and MEAN refuse a result with fewer or more rows than the source (MEAN\'s shape checks are asserts)', (t) => {
    for (const op of ['SUM_ROWS', 'MEAN'] as const) {
        accepts(t, (g) => g.tensor({type: F32, ne: [1, 3, 2], op, src: [g.tensor({type: F32, ne: [64, 3, 2]})]}));
        refuses(t, 'op-shape', (g) => g.tensor({type: F32, ne: [1, 2, 2], op, src: [g.tensor({type: F32, ne: [64, 3, 2]})]}));
        refuses(t, 'op-shape', (g) => g.tensor({type: F32, ne: [1, 3, 4], op, src: [g.tensor({type: F32, ne: [64, 3, 2]})]}));
        refuses(t, 'op-type', (g) => g.tensor({type: F16, ne: [1, 3, 2], op, src: [g.tensor({type: F16, ne: [64, 3, 2]})]}));
    }
});

test.serial('CUMSUM refuses another shape and f16 (the kernel aborts)', (t) => {
    accepts(t, (g) => g.tensor({type: F32, ne: [8, 4], op: 'CUMSUM', src: [g.tensor({type: F32, ne: [8, 4]})]}));
    refuses(t, 'op-shape', (g) => g.tensor({type: F32, ne: [9, 4], op: 'CUMSUM', src: [g.tensor({type: F32, ne: [8, 4]})]}));
    refuses(t, 'op-type', (g) => g.tensor({type: F16, ne: [8, 4], op: 'CUMSUM', src: [g.tensor({type: F16, ne: [8, 4]})]}));
});

test.serial('ARGMAX refuses a 3-D source (the kernel walks ne[1] rows only) and a result shorter than the rows (written past its end)', (t) => {
    accepts(t, (g) => g.tensor({type: I32, ne: [3], op: 'ARGMAX', src: [g.tensor({type: F32, ne: [100, 3]})]}));
    refuses(t, 'op-shape', (g) => g.tensor({type: I32, ne: [3], op: 'ARGMAX', src: [g.tensor({type: F32, ne: [100, 3, 2]})]}));
    refuses(t, 'op-shape', (g) => g.tensor({type: I32, ne: [2], op: 'ARGMAX', src: [g.tensor({type: F32, ne: [100, 3]})]}));
});

test.serial('REPEAT refuses a result of another type (the kernel copies source-sized elements) and one the source does not tile', (t) => {
    accepts(t, (g) => g.tensor({type: F16, ne: [16, 4, 3], op: 'REPEAT', src: [g.tensor({type: F16, ne: [16, 1, 3]})]}));
    refuses(t, 'op-type', (g) => g.tensor({type: F32, ne: [16, 4, 3], op: 'REPEAT', src: [g.tensor({type: F16, ne: [16, 1, 3]})]}));
    refuses(t, 'op-shape', (g) => g.tensor({type: F16, ne: [16, 4, 4], op: 'REPEAT', src: [g.tensor({type: F16, ne: [16, 1, 3]})]}));
});

test.serial('CONCAT refuses dimension 4, sources that differ outside the dimension (read past the second), and mixed types', (t) => {
    const node = ({dim = 0, bNe = [4, 4, 3], bType = F32 as number} = {}) => (g: GraphBuilder) => g.tensor({type: F32, ne: [16, 4, 3], op: 'CONCAT',
        src: [g.tensor({type: F32, ne: [12, 4, 3]}), g.tensor({type: bType, ne: bNe})], params: [dim]});
    accepts(t, node());
    refuses(t, 'op-params', node({dim: 4}));
    refuses(t, 'op-params', node({dim: -1}));
    refuses(t, 'op-shape', node({bNe: [4, 3, 3]}));
    refuses(t, 'op-type', node({bType: F16}));
});

test.serial('NORM and L2_NORM refuse a NaN or negative epsilon (the kernels GGML_ASSERT eps >= 0)', (t) => {
    for (const op of ['NORM', 'L2_NORM'] as const) {
        accepts(t, (g) => g.tensor({type: F32, ne: [64, 3], op, src: [g.tensor({type: F32, ne: [64, 3]})], params: [f32(1e-5)]}));
        for (const eps of [NaN, -1e-5, Infinity])
            refuses(t, 'op-params', (g) => g.tensor({type: F32, ne: [64, 3], op, src: [g.tensor({type: F32, ne: [64, 3]})], params: [f32(eps)]}));
    }
});

test.serial('GROUP_NORM refuses 0 groups (SIGFPE: the kernel divides by them), more groups than channels (a loop of up to 2^31), and a strided result row', (t) => {
    const node = (groups: number) => (g: GraphBuilder) => g.tensor({type: F32, ne: [10, 1, 8], op: 'GROUP_NORM', src: [g.tensor({type: F32, ne: [10, 1, 8]})], params: [groups, f32(1e-6)]});
    accepts(t, node(4));
    accepts(t, node(8));
    refuses(t, 'op-params', node(0), /0 groups/);
    refuses(t, 'op-params', node(-3));
    refuses(t, 'op-params', node(9));
    refuses(t, 'op-params', node(2 ** 31 - 1));
    refuses(t, 'strides', (g) => nodeView(g, {type: F32, ne: [10, 1, 8], op: 'GROUP_NORM', src: [g.tensor({type: F32, ne: [10, 1, 8]})], params: [4, f32(1e-6)]},
        [8, 80, 80, 640]));
});

test.serial('SCALE refuses a source whose 1-element dimension has a foreign stride: contiguous to ggml, but the kernel reads row r at r·nb[1]', (t) => {
    accepts(t, (g) => g.tensor({type: F32, ne: [8, 1, 4], op: 'SCALE', src: [g.tensor({type: F32, ne: [8, 1, 4]})], params: [f32(0.5), f32(0)]}));
    refuses(t, 'strides', (g) => {
        const owner = g.tensor({type: F32, ne: [32]});
        return g.tensor({type: F32, ne: [8, 1, 4], op: 'SCALE', src: [viewOf(g, owner, F32, [8, 1, 4], [4, 100_000, 32, 128])], params: [f32(0.5), f32(0)]});
    }, /rows/);
    refuses(t, 'op-type', (g) => g.tensor({type: F16, ne: [8, 4], op: 'SCALE', src: [g.tensor({type: F16, ne: [8, 4]})], params: [f32(0.5), f32(0)]}));
});

test.serial('SET refuses a last row ending past the result (ggml\'s own check stops one element short), negative strides or offset (they wrap to size_t), and a flag of 2', (t) => {
    // a [8, 4] f32 (128 bytes), b [4, 2] written at row stride 32.
    const node = (params: number[], inplace = false) => (g: GraphBuilder) => {
        const a = g.tensor({type: F32, ne: [8, 4]});
        return g.tensor({type: F32, ne: [8, 4], op: 'SET', src: [a, g.tensor({type: F32, ne: [4, 2]})], params, ...(inplace ? {view: {of: a}} : {})});
    };
    accepts(t, node([32, 128, 128, 32 * 2 + 16, 0])); // the last row ends at the last byte
    accepts(t, node([32, 128, 128, 16, 1], true));
    refuses(t, 'op-params', node([32, 128, 128, 32 * 2 + 20, 0]), /writes 132 bytes into 128/); // ggml's assert: 20 + 3·4 + 32 = 128 ≤ 128
    refuses(t, 'op-params', node([-32, 128, 128, 96, 0]));
    refuses(t, 'op-params', node([32, 128, 128, -4, 0]));
    refuses(t, 'op-params', node([32, 128, 128, 0, 2]));
    refuses(t, 'view', node([32, 128, 128, 0, 1]));
    refuses(t, 'op-type', (g) => g.tensor({type: F32, ne: [8, 4], op: 'SET', src: [g.tensor({type: F32, ne: [8, 4]}), g.tensor({type: F16, ne: [4, 2]})], params: [32, 128, 128, 0, 0]}));
});

test.serial('DIAG refuses a source that is no row vector and a result that is not its square', (t) => {
    accepts(t, (g) => g.tensor({type: F32, ne: [8, 8], op: 'DIAG', src: [g.tensor({type: F32, ne: [8]})]}));
    refuses(t, 'op-shape', (g) => g.tensor({type: F32, ne: [8, 8, 2], op: 'DIAG', src: [g.tensor({type: F32, ne: [8, 2]})]}));
    refuses(t, 'op-shape', (g) => g.tensor({type: F32, ne: [8, 7], op: 'DIAG', src: [g.tensor({type: F32, ne: [8]})]}));
});

test.serial('ROPE_BACK refuses 0 rotated dimensions (the copy loop never ends), and what ROPE refuses: odd rows, mode 1, wrapping sections (SIGFPE)', (t) => {
    const node = ({nDims = 8, mode = 2, width = 32, offset = 24, sections = [0, 0, 0, 0]} = {}) => (g: GraphBuilder) => {
        const a = g.tensor({type: F32, ne: [width, 2, 3]});
        const positions = g.tensor({type: I32, ne: [(mode & 8) !== 0 ? 12 : 3]});
        return g.tensor({type: F32, ne: [width, 2, 3], op: 'ROPE_BACK', src: [a, positions],
            params: [0, nDims, mode, 0, 4096, f32(10000), f32(1), f32(0), f32(1), f32(32), f32(1), ...sections, offset]});
    };
    accepts(t, node());
    accepts(t, node({mode: 8, offset: 0, sections: [2, 1, 1, 0]}));
    refuses(t, 'op-params', node({nDims: 0, offset: 0}), /0 rotated dimensions/);
    refuses(t, 'op-shape', node({width: 33, offset: 0}));
    refuses(t, 'op-params', node({mode: 1}));
    refuses(t, 'op-params', node({mode: 8, offset: 0, sections: [2 ** 30, 2 ** 30, 2 ** 30, 2 ** 30]}));
});

test.serial('CLAMP refuses rows that are not one after another (the kernel walks row r at r·nb[1]) and a bf16 source (abort)', (t) => {
    accepts(t, (g) => g.tensor({type: F32, ne: [8, 2, 3], op: 'CLAMP', src: [g.tensor({type: F32, ne: [8, 2, 3]})], params: [f32(-1), f32(1)]}));
    refuses(t, 'strides', (g) => {
        const owner = g.tensor({type: F32, ne: [8 * 2 * 3 * 2]});
        return g.tensor({type: F32, ne: [8, 2, 3], op: 'CLAMP', src: [viewOf(g, owner, F32, [8, 2, 3], [4, 32, 128, 384])], params: [f32(-1), f32(1)]});
    });
    refuses(t, 'op-type', (g) => g.tensor({type: BF16, ne: [8, 2], op: 'CLAMP', src: [g.tensor({type: BF16, ne: [8, 2]})], params: [f32(-1), f32(1)]}));
});

test.serial('IM2COL refuses a result that is not the builder\'s shape (the kernel writes a flat array by it), a zero stride or dilation, and a strided image', (t) => {
    const node = ({ne = [12, 10, 1], params = [1, 0, 1, 0, 1, 0, 0], image = undefined as number[] | undefined} = {}) => (g: GraphBuilder) => {
        const kernel = g.tensor({type: F16, ne: [3, 4, 5]});
        let b = g.tensor({type: F32, ne: [10, 4]});
        if (image !== undefined)
            b = viewOf(g, g.tensor({type: F32, ne: [200]}), F32, [10, 4], image);
        return g.tensor({type: F16, ne, op: 'IM2COL', src: [kernel, b], params});
    };
    accepts(t, node());
    refuses(t, 'op-shape', node({ne: [12, 11, 1]}));
    refuses(t, 'op-shape', node({ne: [12, 10, 2]}));
    refuses(t, 'op-params', node({params: [0, 0, 1, 0, 1, 0, 0]}));
    refuses(t, 'op-params', node({params: [1, 0, 1, 0, 0, 0, 0]}));
    refuses(t, 'op-params', node({params: [1, 0, 1, 0, 1, 0, 2]}));
    refuses(t, 'strides', node({image: [4, 80, 320, 320]}));
});

test.serial('POOL_2D refuses a source plane stride short of a plane (the kernel steps through bytes by nb[2], writing a plane each), op COUNT (abort), and windows that overlap too much', (t) => {
    const node = ({params = [0, 4, 1, 4, 1, 0, 0], ne = [4, 2, 1, 2], source = undefined as number[] | undefined} = {}) => (g: GraphBuilder) => {
        let a = g.tensor({type: F32, ne: [16, 2, 1, 2]});
        if (source !== undefined)
            a = viewOf(g, g.tensor({type: F32, ne: [64]}), F32, [16, 2, 1, 2], source);
        return g.tensor({type: F32, ne, op: 'POOL_2D', src: [a], params});
    };
    accepts(t, node());
    refuses(t, 'strides', node({source: [4, 64, 4, 128]}));
    refuses(t, 'op-params', node({params: [2, 4, 1, 4, 1, 0, 0]}));
    refuses(t, 'op-params', node({params: [0, 0, 1, 4, 1, 0, 0], ne: [4, 2, 1, 2]}));
    refuses(t, 'op-shape', node({params: [0, 4, 1, 4, 1, 0, 0], ne: [5, 2, 1, 2]}));
    // A 2048-wide window at stride 1 over a 4096-wide plane: 2049 outputs each reading 2048 values.
    refuses(t, 'op-params', (g) => g.tensor({type: F32, ne: [2049], op: 'POOL_2D', src: [g.tensor({type: F32, ne: [4096]})], params: [0, 2048, 1, 1, 1, 0, 0]}), /too many times/);
});

test.serial('PAD refuses negative padding, circular padding (llama.cpp never asks for it), a result of another size, and a strided result (written as a flat array)', (t) => {
    const node = (params: number[], ne = [11, 3]) => (g: GraphBuilder) => g.tensor({type: F32, ne, op: 'PAD', src: [g.tensor({type: F32, ne: [10, 3]})], params});
    accepts(t, node([0, 1, 0, 0, 0, 0, 0, 0, 0]));
    refuses(t, 'op-params', node([2, -1, 0, 0, 0, 0, 0, 0, 0]));
    refuses(t, 'op-params', node([0, 1, 0, 0, 0, 0, 0, 0, 1]));
    refuses(t, 'op-shape', node([0, 1, 0, 0, 0, 0, 0, 0, 0], [12, 3]));
    refuses(t, 'strides', (g) => nodeView(g, {type: F32, ne: [11, 3], op: 'PAD', src: [g.tensor({type: F32, ne: [10, 3]})], params: [0, 1]}, [4, 48, 144, 144]));
});

test.serial('ARANGE refuses a count the kernel\'s float arithmetic does not reach (GGML_ASSERT), NaN and infinite bounds, a zero or negative step, and a 2-D result', (t) => {
    const node = (params: number[], ne = [8]) => (g: GraphBuilder) => g.tensor({type: F32, ne, op: 'ARANGE', params});
    accepts(t, node([f32(0), f32(8), f32(1)]));
    accepts(t, node([f32(0), f32(1), f32(0.1)], [10]));
    refuses(t, 'op-shape', node([f32(0), f32(8), f32(1)], [9]));
    refuses(t, 'op-shape', node([f32(0), f32(8), f32(1)], [4, 2]));
    refuses(t, 'op-params', node([f32(NaN), f32(8), f32(1)]));
    refuses(t, 'op-params', node([f32(0), f32(Infinity), f32(1)]));
    refuses(t, 'op-params', node([f32(0), f32(8), f32(0)]));
    refuses(t, 'op-params', node([f32(8), f32(0), f32(-1)]));
    refuses(t, 'op-params', node([f32(-3e38), f32(3e38), f32(1e38)]));
    refuses(t, 'sources', (g) => g.tensor({type: F32, ne: [8], op: 'ARANGE', src: [g.tensor({type: F32, ne: [8]})], params: [f32(0), f32(8), f32(1)]}));
});

test.serial('ARGSORT refuses a result over its source (std::sort by values it overwrites runs off the row: SIGSEGV) or with overlapping rows, source rows not one after another (read at r·nb[1]), a result wider than the source, and order 2 (abort)', (t) => {
    refuses(t, 'view', (g) => {
        const a = g.tensor({type: F32, ne: [46, 5, 2]});
        return g.tensor({type: I32, ne: [46, 5, 2], op: 'ARGSORT', src: [a], params: [1], view: {of: a}});
    }, /overlaps the source/);
    accepts(t, (g) => g.tensor({type: I32, ne: [20, 3], op: 'ARGSORT', src: [g.tensor({type: F32, ne: [20, 3]})], params: [1]}));
    refuses(t, 'strides', (g) => {
        const owner = g.tensor({type: F32, ne: [20 * 3 * 2]});
        return g.tensor({type: I32, ne: [20, 1, 3], op: 'ARGSORT', src: [viewOf(g, owner, F32, [20, 1, 3], [4, 8000, 80, 240])], params: [1]});
    });
    refuses(t, 'op-shape', (g) => g.tensor({type: I32, ne: [21, 3], op: 'ARGSORT', src: [g.tensor({type: F32, ne: [20, 3]})], params: [1]}));
    refuses(t, 'op-params', (g) => g.tensor({type: I32, ne: [20, 3], op: 'ARGSORT', src: [g.tensor({type: F32, ne: [20, 3]})], params: [2]}));
    // Result rows that overlap: two threads sort index arrays that share bytes.
    refuses(t, 'strides', (g) => nodeView(g, {type: I32, ne: [20, 3], op: 'ARGSORT', src: [g.tensor({type: F32, ne: [20, 3]})], params: [1]}, [4, 40, 120, 120]));
});

test.serial('TOP_K refuses k larger than the row (a partial sort past its end), rows of more than 2^24 (per-thread scratch), and a result over its source', (t) => {
    refuses(t, 'view', (g) => {
        const a = g.tensor({type: F32, ne: [50, 2]});
        return g.tensor({type: I32, ne: [5, 2], op: 'TOP_K', src: [a], view: {of: a}});
    });
    accepts(t, (g) => g.tensor({type: I32, ne: [5, 2], op: 'TOP_K', src: [g.tensor({type: F32, ne: [50, 2]})]}));
    refuses(t, 'op-shape', (g) => g.tensor({type: I32, ne: [51, 2], op: 'TOP_K', src: [g.tensor({type: F32, ne: [50, 2]})]}));
    refuses(t, 'op-shape', (g) => g.tensor({type: I32, ne: [5, 3], op: 'TOP_K', src: [g.tensor({type: F32, ne: [50, 2]})]}));
    accepts(t, (g) => g.tensor({type: I32, ne: [5], op: 'TOP_K', src: [g.tensor({type: F32, ne: [2 ** 24]})]}));
    refuses(t, 'op-shape', (g) => g.tensor({type: I32, ne: [5], op: 'TOP_K', src: [g.tensor({type: F32, ne: [2 ** 24 + 1]})]}));
});

test.serial('TRI refuses triangle type 4 (abort), a non-square source, and a strided result row', (t) => {
    const node = (type: number, ne = [8, 8, 2]) => (g: GraphBuilder) => g.tensor({type: F32, ne, op: 'TRI', src: [g.tensor({type: F32, ne})], params: [type]});
    accepts(t, node(3));
    refuses(t, 'op-params', node(4));
    refuses(t, 'op-params', node(-1));
    refuses(t, 'op-shape', node(3, [8, 7, 2]));
    refuses(t, 'strides', (g) => nodeView(g, {type: F32, ne: [8, 8], op: 'TRI', src: [g.tensor({type: F32, ne: [8, 8]})], params: [3]}, [8, 64, 512, 512]));
});

test.serial('FILL refuses a result of another type than the source (the kernel writes the source\'s type) and a result with unpacked rows', (t) => {
    accepts(t, (g) => g.tensor({type: F16, ne: [32, 4], op: 'FILL', src: [g.tensor({type: F16, ne: [32, 4]})], params: [f32(-Infinity)]}));
    refuses(t, 'op-type', (g) => g.tensor({type: F32, ne: [32, 4], op: 'FILL', src: [g.tensor({type: F16, ne: [32, 4]})], params: [f32(0)]}));
    refuses(t, 'strides', (g) => nodeView(g, {type: F32, ne: [32, 4], op: 'FILL', src: [g.tensor({type: F32, ne: [32, 4]})], params: [f32(0)]}, [8, 256, 1024, 1024]));
});

test.serial('UNARY refuses op 22 (abort), an f16 result of an f32 source (GELU and SILU write in the source\'s type), and XIELU on rows that are not one after another', (t) => {
    const node = (params: number[], type: number = F32, srcNb?: number[]) => (g: GraphBuilder) => {
        let a = g.tensor({type: F32, ne: [8, 2, 3]});
        if (srcNb !== undefined)
            a = viewOf(g, g.tensor({type: F32, ne: [8 * 2 * 3 * 2]}), F32, [8, 2, 3], srcNb);
        return g.tensor({type, ne: [8, 2, 3], op: 'UNARY', src: [a], params});
    };
    accepts(t, node([unaryOp('SILU')]));
    accepts(t, node([unaryOp('SILU')], F32, [4, 32, 128, 384]));
    accepts(t, node([unaryOp('XIELU'), f32(0.8), f32(0.6), f32(0.5), f32(-1e-6)]));
    refuses(t, 'op-params', node([GGML_UNARY_OP_NAMES.length]));
    refuses(t, 'op-params', node([-1]));
    refuses(t, 'op-type', node([unaryOp('GELU')], F16));
    refuses(t, 'strides', node([unaryOp('XIELU'), f32(0.8), f32(0.6), f32(0.5), f32(-1e-6)], F32, [4, 32, 128, 384]));
    refuses(t, 'op-params', node([unaryOp('SILU'), 1]));
});

test.serial('MUL_MAT_ID\'s CPU kernel checks expert ids only with an assert: a hostile id in a leaf kills a server with no guard, and checkGraph refuses that graph (ids from no sort; test/rpc-op-rules-moe.test.ts)', async (t) => {
    const build = (g: GraphBuilder) => {
        const experts = g.tensor({type: F32, ne: [16, 8, 4]});
        const b = g.tensor({type: F32, ne: [16, 2, 3]});
        const ids = g.tensor({type: I32, ne: [2, 3]});
        return {ids, node: g.tensor({type: F32, ne: [8, 2, 3], op: 'MUL_MAT_ID', src: [experts, b, ids]})};
    };
    refuses(t, 'sources', (g) => build(g).node, /no ARGSORT's or TOP_K's result/);
    const {port, exits} = await labServer(t);
    const client = new RpcLabClient(directConnection(port));
    t.teardown(() => client.close());
    await client.hello();
    const buffer = await client.buffer(1n << 20n);
    const g = new GraphBuilder(buffer);
    const {ids, node} = build(g);
    const payload = g.graph([node]);
    t.is(t.throws(() => checkGraph(payload, tableOf(buffer)), {instanceOf: GraphCheckError})?.rule, 'sources');
    await client.setTensor(ids, ints([0, 1, 2, 1_000_000, 3, 0]));
    await client.graphCompute(payload);
    await t.throwsAsync(within(client.alive(), 5_000));
    await sleep(200);
    t.is(exits.length, 1);
    t.not(exits[0]?.signal, null);
});

test.serial('ADD_ID\'s ids are checked by its kernel at run time: a hostile id ends the server with GGML_ASSERT (SIGABRT), not a wild read', async (t) => {
    const {port, exits, lines} = await labServer(t);
    const client = new RpcLabClient(directConnection(port));
    t.teardown(() => client.close());
    await client.hello();
    const buffer = await client.buffer(1n << 20n);
    const g = new GraphBuilder(buffer);
    const ids = g.tensor({type: I32, ne: [2, 3]});
    const node = g.tensor({type: F32, ne: [16, 2, 3], op: 'ADD_ID', src: [g.tensor({type: F32, ne: [16, 2, 3]}), g.tensor({type: F32, ne: [16, 4]}), ids]});
    const payload = g.graph([node]);
    t.notThrows(() => checkGraph(payload, tableOf(buffer)));
    await client.setTensor(ids, ints([0, 1, 2, 4, 3, 0]));
    await client.graphCompute(payload);
    await t.throwsAsync(within(client.alive(), 5_000));
    await sleep(200);
    t.deepEqual(exits.map((exit) => exit.signal), ['SIGABRT']);
    t.true(lines.some((line) => line.includes('GGML_ASSERT(i11 >= 0 && i11 < ne11)')), lines.slice(-5).join('\n'));
});
