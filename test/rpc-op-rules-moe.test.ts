import {setTimeout as sleep} from 'node:timers/promises';
import test, {type ExecutionContext} from 'ava';
import {float16BitsToFloat32 as f16Value, float32ToFloat16Bits as f16Bits} from '../engine/gguf/float16.js';
import {checkGraph} from '../inference/sharded/tunnel/ggml/graph-check.js';
import {GGML_GLU_OP_NAMES, GGML_TYPES, GGML_UNARY_OP_NAMES, GgmlType} from '../inference/sharded/tunnel/ggml/ggml-tables.js';
import type {RpcTensor} from '../inference/sharded/tunnel/ggml/rpc-tensor.js';
import {GraphCheckError, type GraphRule} from '../inference/sharded/tunnel/ggml/tensor-check.js';
import {directLab, f32, floats, GraphBuilder, guardedConnection, ints, type LabBuffer, labServer, readFloats, readInts, RpcLabClient, tableOf} from '../harness/rpc-lab.js';
import {SeededRandom as Rng} from '../harness/seeded-random.js';

/**
 * MUL_MAT_ID's provenance contract (op-rules-elementwise.ts; docs/peer-protocol.md, "Graph checks"): its CPU kernel
 * trusts the expert ids it reads from tensor data, so the host accepts only ids that an ARGSORT or TOP_K of the same
 * graph wrote, over rows no longer than the expert count, read where the sort wrote and rewritten by no node in
 * between. MoE layers as llama.cpp builds them (build_moe_ffn) pass and compute right through the host's guard; ids
 * from anywhere else are refused; seeded mutated MoE layers are each refused or computed by a server with no guard,
 * which must live.
 */

const {F32, F16, I32, Q8_0} = GgmlType;
const Q4_0 = 2;
const glu = (name: typeof GGML_GLU_OP_NAMES[number]) => GGML_GLU_OP_NAMES.indexOf(name);
const SIGMOID = GGML_UNARY_OP_NAMES.indexOf('SIGMOID');
/** ggml_argsort's GGML_SORT_ORDER_DESC (ggml_argsort_top_k's order). */
const DESC = 1;
/** A hostile expert id: filed under it, a row lands far outside the kernel's map. */
const HOSTILE_ID = 1_000_000;


/** `scale` · sin(0.731 i + phase + 0.1): varied, reproducible, never 0. */
function wave(count: number, phase = 0, scale = 1) {
    return Array.from({length: count}, (_, index) => scale * Math.sin(index * 0.731 + phase + 0.1));
}

/** Expert weights in `type`: their bytes, and their values as the kernel reads them. */
function expertWeights(type: number, count: number, phase: number) {
    const source = wave(count, phase, 0.5);
    if (type === F32)
        return {bytes: floats(source), values: source.map(Math.fround)};
    if (type === F16) {
        const bits = source.map(f16Bits);
        return {bytes: Buffer.from(Uint16Array.from(bits).buffer), values: bits.map(f16Value)};
    }
    // q8_0: per 32 values an f16 scale and 32 int8s.
    const bytes = Buffer.alloc(count / 32 * 34);
    const values: number[] = [];
    for (let block = 0; block < count / 32; block++) {
        const scale = f16Bits(0.004 + 0.002 * (block % 5));
        bytes.writeUInt16LE(scale, block * 34);
        for (let at = 0; at < 32; at++) {
            const q = Math.round(127 * Math.sin((block * 32 + at) * 1.37 + phase));
            bytes.writeInt8(q, block * 34 + 2 + at);
            values.push(f16Value(scale) * q);
        }
    }
    return {bytes, values};
}

/**
 * An f32 activation row as the kernel multiplies it by experts of `type`: converted to the type's `vec_dot_type`
 * (f16; q8_0 per ggml's quantize_row_q8_0_ref) and back.
 */
function asMultiplied(type: number, row: readonly number[]) {
    if (type === F32)
        return row.map(Math.fround);
    if (type === F16)
        return row.map((value) => f16Value(f16Bits(value)));
    const out: number[] = [];
    for (let start = 0; start < row.length; start += 32) {
        const block = row.slice(start, start + 32).map(Math.fround);
        const amax = Math.max(...block.map(Math.abs));
        const d = Math.fround(amax / 127);
        const id = d === 0 ? 0 : Math.fround(1 / d);
        const scale = f16Value(f16Bits(d));
        for (const value of block) {
            const x = Math.fround(value * id);
            out.push(scale * Math.sign(x) * Math.round(Math.abs(x)));
        }
    }
    return out;
}

/** Expert e's matrix [k, n] (values laid out as ggml's [k, n, experts]) times `row`. */
function expertTimes(weights: readonly number[], e: number, k: number, n: number, row: readonly number[]) {
    return Array.from({length: n}, (_, r) => {
        let sum = 0;
        let magnitude = 0;
        for (let i = 0; i < k; i++) {
            const term = weights[(e * n + r) * k + i]! * row[i]!;
            sum += term;
            magnitude += Math.abs(term);
        }
        return {sum, magnitude};
    });
}

function closeTo(t: ExecutionContext, actual: readonly number[], expected: readonly {sum: number, magnitude: number}[], what: string, relative: number) {
    t.is(actual.length, expected.length, `${what}: length`);
    const wrong = expected.findIndex(({sum, magnitude}, index) => !(Math.abs(actual[index]! - sum) <= relative * magnitude + 1e-6));
    t.is(wrong, -1, `${what}: element ${wrong} is ${actual[wrong]}, expected ${expected[wrong]?.sum}`);
}

/** The indices of `row`'s values, largest first (ggml_argsort, descending). */
function argsortDesc(row: readonly number[]) {
    return row.map((_, index) => index).sort((a, b) => row[b]! - row[a]!);
}

function softmax(row: readonly number[]) {
    const max = Math.max(...row);
    const exps = row.map((value) => Math.exp(value - max));
    const sum = exps.reduce((total, value) => total + value, 0);
    return exps.map((value) => value / sum);
}

function packedStrides(type: number, ne: readonly number[]) {
    const traits = GGML_TYPES[type]!;
    const nb1 = traits.typeSize * ne[0]! / traits.blockSize;
    return [nb1, nb1 * (ne[1] ?? 1), nb1 * (ne[1] ?? 1) * (ne[2] ?? 1)];
}

/** `ggml_reshape_*`: `a` seen packed in another shape. */
function reshape(g: GraphBuilder, a: RpcTensor, ne: number[]) {
    return g.tensor({type: a.type, ne, op: 'RESHAPE', src: [a], view: {of: a, nb: packedStrides(a.type, ne)}});
}

/** `ggml_view_*`: a window of `a` with strides nb[1..3] at a byte offset (which ggml keeps in op_params). */
function view(g: GraphBuilder, a: RpcTensor, ne: number[], nb: number[], offset = 0) {
    return g.tensor({type: a.type, ne, op: 'VIEW', src: [a], view: {of: a, offset, nb}, params: [offset, 0]});
}

/** `ggml_argsort_top_k(probs, k)`: the ARGSORT (descending) of probs' rows and the view of each row's first k. */
function argsortTopK(g: GraphBuilder, probs: RpcTensor, k: number) {
    const sort = g.tensor({type: I32, ne: probs.ne, op: 'ARGSORT', src: [probs], params: [DESC]});
    return {sort, top: view(g, sort, [k, ...probs.ne.slice(1)], sort.nb.slice(1))};
}

/** Starts a server and connects through the host's guard, with a buffer: for layers as llama.cpp builds them. */
async function guarded(t: ExecutionContext) {
    const {port, exits} = await labServer(t);
    let refused: Error | undefined;
    const client = new RpcLabClient(guardedConnection(port, {onRefused: (error) => refused = error}));
    t.teardown(() => client.close());
    await client.hello();
    const buffer = await client.buffer(1n << 22n);
    const read = async (tensor: RpcTensor) => client.getTensor(tensor, GraphBuilder.bytes(tensor));
    return {
        g: new GraphBuilder(buffer),
        read,
        readFloats: async (tensor: RpcTensor) => readFloats(await read(tensor)),
        async run(g: GraphBuilder, nodes: RpcTensor[], inputs: [RpcTensor, Buffer][]) {
            for (const [tensor, bytes] of inputs)
                await client.setTensor(tensor, bytes);
            const payload = g.graph(nodes);
            t.notThrows(() => checkGraph(payload, tableOf(buffer)));
            await client.graphCompute(payload);
        },
        async done() {
            t.true(await client.alive());
            t.is(refused, undefined);
            t.deepEqual(exits, []);
        }
    };
}

// ----------------------------------------------------------------------------------------------------------------
// 1. MoE layers as llama.cpp builds them, through the host's guard.

test.serial('a Qwen3-MoE/Mixtral FFN (build_moe_ffn: softmax router, argsort_top_k, normalised weights, q8_0 experts) passes the guard and computes right', async (t) => {
    const [embd, ff, experts, used, tokens] = [64, 32, 8, 2, 5];
    const xs = wave(embd * tokens, 0.2);
    const router = wave(embd * experts, 1.3, 0.4);
    const upW = expertWeights(Q8_0, embd * ff * experts, 0.1);
    const gateW = expertWeights(Q8_0, embd * ff * experts, 0.7);
    const downW = expertWeights(Q8_0, ff * embd * experts, 1.9);
    const lab = await guarded(t);
    const {g} = lab;
    const x = g.tensor({type: F32, ne: [embd, tokens]});
    const gateInp = g.tensor({type: F32, ne: [embd, experts]});
    const logits = g.tensor({type: F32, ne: [experts, tokens], op: 'MUL_MAT', src: [gateInp, x]});
    const probs = g.tensor({type: F32, ne: [experts, tokens], op: 'SOFT_MAX', src: [logits], params: [f32(1), f32(0)]});
    const {sort, top: selected} = argsortTopK(g, probs, used);
    const probs3 = reshape(g, probs, [1, experts, tokens]);
    const picked = g.tensor({type: F32, ne: [1, used, tokens], op: 'GET_ROWS', src: [probs3, selected]});
    const picked2 = reshape(g, picked, [used, tokens]);
    const sum = g.tensor({type: F32, ne: [1, tokens], op: 'SUM_ROWS', src: [picked2]});
    const clamped = g.tensor({type: F32, ne: [1, tokens], op: 'CLAMP', src: [sum], params: [f32(6.103515625e-5), f32(Infinity)]});
    const normed = g.tensor({type: F32, ne: [used, tokens], op: 'DIV', src: [picked2, clamped]});
    const weights = reshape(g, normed, [1, used, tokens]);
    const cur = reshape(g, x, [embd, 1, tokens]);
    const upExps = g.tensor({type: Q8_0, ne: [embd, ff, experts]});
    const gateExps = g.tensor({type: Q8_0, ne: [embd, ff, experts]});
    const downExps = g.tensor({type: Q8_0, ne: [ff, embd, experts]});
    const up = g.tensor({type: F32, ne: [ff, used, tokens], op: 'MUL_MAT_ID', src: [upExps, cur, selected]});
    const gate = g.tensor({type: F32, ne: [ff, used, tokens], op: 'MUL_MAT_ID', src: [gateExps, cur, selected]});
    const act = g.tensor({type: F32, ne: [ff, used, tokens], op: 'GLU', src: [gate, up], params: [glu('SWIGLU'), 0]});
    const down = g.tensor({type: F32, ne: [embd, used, tokens], op: 'MUL_MAT_ID', src: [downExps, act, selected]});
    const weighted = g.tensor({type: F32, ne: [embd, used, tokens], op: 'MUL', src: [down, weights]});
    // moe_out: the experts' rows added up, as build_moe_ffn does through views.
    const slots = [0, 1].map((slot) => view(g, weighted, [embd, tokens], [weighted.nb[2], weighted.nb[2] * tokens, weighted.nb[2] * tokens], slot * weighted.nb[1]));
    const out = g.tensor({type: F32, ne: [embd, tokens], op: 'ADD', src: slots});
    await lab.run(g, [logits, probs, sort, selected, probs3, picked, picked2, sum, clamped, normed, weights, cur, up, gate, act, down, weighted, ...slots, out],
        [[x, floats(xs)], [gateInp, floats(router)], [upExps, upW.bytes], [gateExps, gateW.bytes], [downExps, downW.bytes]]);

    const sorted = readInts(await lab.read(sort));
    const gateOut = await lab.readFloats(gate);
    const actOut = await lab.readFloats(act);
    const downOut = await lab.readFloats(down);
    const weightsOut = await lab.readFloats(normed);
    const outOut = await lab.readFloats(out);
    for (let token = 0; token < tokens; token++) {
        const row = xs.slice(token * embd, token * embd + embd);
        const p = softmax(Array.from({length: experts}, (_, e) => router.slice(e * embd, e * embd + embd).reduce((s, w, i) => s + w * row[i]!, 0)));
        t.deepEqual(sorted.slice(token * experts, token * experts + experts), argsortDesc(p), `token ${token}'s experts, best first`);
        const chosen = argsortDesc(p).slice(0, used);
        const total = chosen.reduce((s, e) => s + p[e]!, 0);
        closeTo(t, weightsOut.slice(token * used, token * used + used), chosen.map((e) => ({sum: p[e]! / total, magnitude: 1e-2})), `token ${token}'s weights`, 1e-3);
        for (const [slot, e] of chosen.entries()) {
            const at = (token * used + slot);
            closeTo(t, gateOut.slice(at * ff, at * ff + ff), expertTimes(gateW.values, e, embd, ff, asMultiplied(Q8_0, row)), `token ${token}'s gate by expert ${e}`, 5e-4);
            closeTo(t, downOut.slice(at * embd, at * embd + embd), expertTimes(downW.values, e, ff, embd, asMultiplied(Q8_0, actOut.slice(at * ff, at * ff + ff))),
                `token ${token}'s down by expert ${e}`, 5e-4);
        }
        const expected = Array.from({length: embd}, (_, i) => {
            const terms = chosen.map((_e, slot) => downOut[(token * used + slot) * embd + i]! * weightsOut[token * used + slot]!);
            return {sum: terms.reduce((s, term) => s + term, 0), magnitude: terms.reduce((s, term) => s + Math.abs(term), 0)};
        });
        closeTo(t, outOut.slice(token * embd, token * embd + embd), expected, `token ${token}'s output`, 1e-5);
    }
    await lab.done();
});

test.serial('a gpt-oss FFN (ggml_top_k of biased logits, softmax of the picked weights, f32 experts, ADD_ID biases, swiglu_oai) passes the guard and computes right', async (t) => {
    const [embd, ff, experts, used, tokens] = [32, 32, 8, 3, 4];
    const xs = wave(embd * tokens, 0.5);
    const router = wave(embd * experts, 2.1, 0.4);
    const routerBias = wave(experts, 0.9, 0.1);
    const upW = expertWeights(F32, embd * ff * experts, 0.3);
    const gateW = expertWeights(F32, embd * ff * experts, 1.1);
    const downW = expertWeights(F32, ff * embd * experts, 2.3);
    const [upB, gateB, downB] = [wave(ff * experts, 0.2, 0.1), wave(ff * experts, 1.2, 0.1), wave(embd * experts, 2.2, 0.1)];
    const lab = await guarded(t);
    const {g} = lab;
    const x = g.tensor({type: F32, ne: [embd, tokens]});
    const gateInp = g.tensor({type: F32, ne: [embd, experts]});
    const gateInpB = g.tensor({type: F32, ne: [experts]});
    const raw = g.tensor({type: F32, ne: [experts, tokens], op: 'MUL_MAT', src: [gateInp, x]});
    const logits = g.tensor({type: F32, ne: [experts, tokens], op: 'ADD', src: [raw, gateInpB]});
    const selected = g.tensor({type: I32, ne: [used, tokens], op: 'TOP_K', src: [logits]});
    const logits3 = reshape(g, logits, [1, experts, tokens]);
    const picked = g.tensor({type: F32, ne: [1, used, tokens], op: 'GET_ROWS', src: [logits3, selected]});
    const picked2 = reshape(g, picked, [used, tokens]);
    const soft = g.tensor({type: F32, ne: [used, tokens], op: 'SOFT_MAX', src: [picked2], params: [f32(1), f32(0)]});
    const weights = reshape(g, soft, [1, used, tokens]);
    const cur = reshape(g, x, [embd, 1, tokens]);
    const [upExps, gateExps] = [0, 1].map(() => g.tensor({type: F32, ne: [embd, ff, experts]}));
    const downExps = g.tensor({type: F32, ne: [ff, embd, experts]});
    const [upBias, gateBias] = [0, 1].map(() => g.tensor({type: F32, ne: [ff, experts]}));
    const downBias = g.tensor({type: F32, ne: [embd, experts]});
    const up = g.tensor({type: F32, ne: [ff, used, tokens], op: 'MUL_MAT_ID', src: [upExps!, cur, selected]});
    const upBiased = g.tensor({type: F32, ne: [ff, used, tokens], op: 'ADD_ID', src: [up, upBias!, selected]});
    const gate = g.tensor({type: F32, ne: [ff, used, tokens], op: 'MUL_MAT_ID', src: [gateExps!, cur, selected]});
    const gateBiased = g.tensor({type: F32, ne: [ff, used, tokens], op: 'ADD_ID', src: [gate, gateBias!, selected]});
    const act = g.tensor({type: F32, ne: [ff, used, tokens], op: 'GLU', src: [gateBiased, upBiased], params: [glu('SWIGLU_OAI'), 0, f32(1.702), f32(7)]});
    const down = g.tensor({type: F32, ne: [embd, used, tokens], op: 'MUL_MAT_ID', src: [downExps, act, selected]});
    const downBiased = g.tensor({type: F32, ne: [embd, used, tokens], op: 'ADD_ID', src: [down, downBias, selected]});
    const weighted = g.tensor({type: F32, ne: [embd, used, tokens], op: 'MUL', src: [downBiased, weights]});
    await lab.run(g, [raw, logits, selected, logits3, picked, picked2, soft, weights, cur, up, upBiased, gate, gateBiased, act, down, downBiased, weighted], [
        [x, floats(xs)], [gateInp, floats(router)], [gateInpB, floats(routerBias)], [upExps!, upW.bytes], [gateExps!, gateW.bytes], [downExps, downW.bytes],
        [upBias!, floats(upB)], [gateBias!, floats(gateB)], [downBias, floats(downB)]
    ]);

    const ids = readInts(await lab.read(selected));
    const gateOut = await lab.readFloats(gateBiased);
    const upOut = await lab.readFloats(upBiased);
    const actOut = await lab.readFloats(act);
    const weightedOut = await lab.readFloats(weighted);
    for (let token = 0; token < tokens; token++) {
        const row = xs.slice(token * embd, token * embd + embd);
        const l = Array.from({length: experts}, (_, e) => router.slice(e * embd, e * embd + embd).reduce((s, w, i) => s + w * row[i]!, 0) + routerBias[e]!);
        const chosen = ids.slice(token * used, token * used + used);
        // TOP_K's order is unspecified (the kernel swaps the first two): the set is the k best.
        t.deepEqual([...chosen].sort(), argsortDesc(l).slice(0, used).sort(), `token ${token}'s experts`);
        const w = softmax(chosen.map((e) => l[e]!));
        for (const [slot, e] of chosen.entries()) {
            const at = token * used + slot;
            const biased = (values: number[], bias: number[], n: number, k: number) =>
                expertTimes(values, e, k, n, row).map(({sum, magnitude}, r) => ({sum: sum + bias[e * n + r]!, magnitude: magnitude + 1}));
            closeTo(t, gateOut.slice(at * ff, at * ff + ff), biased(gateW.values, gateB, ff, embd), `token ${token}'s biased gate by expert ${e}`, 1e-5);
            const swiglu = Array.from({length: ff}, (_, r) => {
                const gx = Math.min(gateOut[at * ff + r]!, 7);
                const uy = Math.min(Math.max(upOut[at * ff + r]!, -7), 7);
                return {sum: gx / (1 + Math.exp(-1.702 * gx)) * (uy + 1), magnitude: 1};
            });
            closeTo(t, actOut.slice(at * ff, at * ff + ff), swiglu, `token ${token}'s swiglu_oai`, 1e-4);
            const downRef = expertTimes(downW.values, e, ff, embd, actOut.slice(at * ff, at * ff + ff))
                .map(({sum, magnitude}, r) => ({sum: (sum + downB[e * embd + r]!) * w[slot]!, magnitude: magnitude + 1}));
            closeTo(t, weightedOut.slice(at * embd, at * embd + embd), downRef, `token ${token}'s weighted down by expert ${e}`, 1e-5);
        }
    }
    await lab.done();
});

test.serial('a DeepSeek-V3 FFN (sigmoid router with a selection bias, group-limited routing through ARGSORT, GET_ROWS, FILL and SET_ROWS before the final sort, f16 experts, scaled weights) passes the guard and computes right', async (t) => {
    const [embd, ff, experts, used, tokens, groups, groupsUsed, scale] = [64, 32, 16, 4, 3, 4, 2, 2.5];
    const perGroup = experts / groups;
    const xs = wave(embd * tokens, 1.7);
    const router = wave(embd * experts, 0.4, 0.3);
    const selectionBias = wave(experts, 3.1, 0.05);
    const upW = expertWeights(F16, embd * ff * experts, 0.9);
    const gateW = expertWeights(F16, embd * ff * experts, 1.5);
    const downW = expertWeights(F16, ff * embd * experts, 2.7);
    const lab = await guarded(t);
    const {g} = lab;
    const x = g.tensor({type: F32, ne: [embd, tokens]});
    const gateInp = g.tensor({type: F32, ne: [embd, experts]});
    const bias = g.tensor({type: F32, ne: [experts]});
    const logits = g.tensor({type: F32, ne: [experts, tokens], op: 'MUL_MAT', src: [gateInp, x]});
    const probs = g.tensor({type: F32, ne: [experts, tokens], op: 'UNARY', src: [logits], params: [SIGMOID]});
    const selection = g.tensor({type: F32, ne: [experts, tokens], op: 'ADD', src: [probs, bias]});
    // The groups' scores: the sum of each group's two best; the best groups kept, the rest masked to -inf.
    const grouped = reshape(g, selection, [perGroup, groups, tokens]);
    const inGroup = argsortTopK(g, grouped, 2);
    const grouped4 = reshape(g, grouped, [1, perGroup, groups, tokens]);
    const best2 = g.tensor({type: F32, ne: [1, 2, groups, tokens], op: 'GET_ROWS', src: [grouped4, inGroup.top]});
    const best2r = reshape(g, best2, [2, groups, tokens]);
    const groupSum = g.tensor({type: F32, ne: [1, groups, tokens], op: 'SUM_ROWS', src: [best2r]});
    const groupScores = reshape(g, groupSum, [groups, tokens]);
    const bestGroups = argsortTopK(g, groupScores, groupsUsed);
    const kept = g.tensor({type: F32, ne: [perGroup, groupsUsed, tokens], op: 'GET_ROWS', src: [grouped, bestGroups.top]});
    const filled = g.tensor({type: F32, ne: [perGroup, groups, tokens], op: 'FILL', src: [grouped], params: [f32(-Infinity)]});
    const masked = g.tensor({type: F32, ne: [perGroup, groups, tokens], op: 'SET_ROWS', src: [kept, bestGroups.top, filled], view: {of: filled}});
    const masked2 = reshape(g, masked, [experts, tokens]);
    const {sort, top: selected} = argsortTopK(g, masked2, used);
    const probs3 = reshape(g, probs, [1, experts, tokens]);
    const picked = g.tensor({type: F32, ne: [1, used, tokens], op: 'GET_ROWS', src: [probs3, selected]});
    const picked2 = reshape(g, picked, [used, tokens]);
    const sum = g.tensor({type: F32, ne: [1, tokens], op: 'SUM_ROWS', src: [picked2]});
    const clamped = g.tensor({type: F32, ne: [1, tokens], op: 'CLAMP', src: [sum], params: [f32(6.103515625e-5), f32(Infinity)]});
    const normed = g.tensor({type: F32, ne: [used, tokens], op: 'DIV', src: [picked2, clamped]});
    const normed3 = reshape(g, normed, [1, used, tokens]);
    const weights = g.tensor({type: F32, ne: [1, used, tokens], op: 'SCALE', src: [normed3], params: [f32(scale), f32(0)]});
    const cur = reshape(g, x, [embd, 1, tokens]);
    const [upExps, gateExps] = [0, 1].map(() => g.tensor({type: F16, ne: [embd, ff, experts]}));
    const downExps = g.tensor({type: F16, ne: [ff, embd, experts]});
    const up = g.tensor({type: F32, ne: [ff, used, tokens], op: 'MUL_MAT_ID', src: [upExps!, cur, selected]});
    const gate = g.tensor({type: F32, ne: [ff, used, tokens], op: 'MUL_MAT_ID', src: [gateExps!, cur, selected]});
    const act = g.tensor({type: F32, ne: [ff, used, tokens], op: 'GLU', src: [gate, up], params: [glu('SWIGLU'), 0]});
    const down = g.tensor({type: F32, ne: [embd, used, tokens], op: 'MUL_MAT_ID', src: [downExps, act, selected]});
    const weighted = g.tensor({type: F32, ne: [embd, used, tokens], op: 'MUL', src: [down, weights]});
    await lab.run(g, [logits, probs, selection, grouped, inGroup.sort, inGroup.top, grouped4, best2, best2r, groupSum, groupScores, bestGroups.sort, bestGroups.top,
        kept, filled, masked, masked2, sort, selected, probs3, picked, picked2, sum, clamped, normed, normed3, weights, cur, up, gate, act, down, weighted], [
        [x, floats(xs)], [gateInp, floats(router)], [bias, floats(selectionBias)], [upExps!, upW.bytes], [gateExps!, gateW.bytes], [downExps, downW.bytes]
    ]);

    const sorted = readInts(await lab.read(sort));
    const gateOut = await lab.readFloats(gate);
    const weightsOut = await lab.readFloats(weights);
    for (let token = 0; token < tokens; token++) {
        const row = xs.slice(token * embd, token * embd + embd);
        const p = Array.from({length: experts}, (_, e) => 1 / (1 + Math.exp(-router.slice(e * embd, e * embd + embd).reduce((s, w, i) => s + w * row[i]!, 0))));
        const s = p.map((value, e) => value + selectionBias[e]!);
        const groupScore = Array.from({length: groups}, (_, group) => {
            const members = s.slice(group * perGroup, group * perGroup + perGroup).sort((a, b) => b - a);
            return members[0]! + members[1]!;
        });
        const keptGroups = argsortDesc(groupScore).slice(0, groupsUsed);
        const maskedRow = s.map((value, e) => keptGroups.includes(Math.floor(e / perGroup)) ? value : -Infinity);
        const chosen = argsortDesc(maskedRow).slice(0, used);
        t.deepEqual(sorted.slice(token * experts, token * experts + used), chosen, `token ${token}'s experts, from its best groups`);
        const total = chosen.reduce((sumOf, e) => sumOf + p[e]!, 0);
        closeTo(t, weightsOut.slice(token * used, token * used + used), chosen.map((e) => ({sum: scale * p[e]! / total, magnitude: 1e-2})), `token ${token}'s weights`, 1e-3);
        for (const [slot, e] of chosen.entries()) {
            const at = token * used + slot;
            closeTo(t, gateOut.slice(at * ff, at * ff + ff), expertTimes(gateW.values, e, embd, ff, asMultiplied(F16, row)), `token ${token}'s gate by expert ${e}`, 1e-4);
        }
    }
    await lab.done();
});

// ----------------------------------------------------------------------------------------------------------------
// 2. A MoE layer with a twist, for the refusals and the property test.

interface MoeShape {
    embd: number,
    ff: number,
    experts: number,
    used: number,
    tokens: number,
    expertType: number,
    select: 'argsort' | 'top_k'
}

const SHAPE: MoeShape = {embd: 32, ff: 32, experts: 8, used: 2, tokens: 3, expertType: Q8_0, select: 'argsort'};

interface Twist {
    /** Router rows, the sort's row length (the expert count when unset). */
    width?: number,
    /** The experts' n_as (the expert count when unset). */
    nAs?: number,
    /** The ids are a leaf the peer fills (with a hostile id), not the sort's result. */
    leafIds?: boolean,
    /** The ids' view of the sort's result: its byte offset, row stride and shape. */
    idsOffset?: number,
    idsNb1?: number,
    idsNe?: [number, number],
    /** A node that writes a hostile id over the ids: a CPY into them, or a SCALE whose result lies over them. */
    writer?: {at: 'before' | 'between' | 'after', kind: 'cpy' | 'scale'},
    /** Where the sort is in the node list: before the matmuls, after them, or not there at all. */
    sortAt?: 'after' | 'absent',
    clearSortFlag?: boolean,
    /** The activations in f16, the result a row short, the experts transposed. */
    activationType?: number,
    shortResult?: boolean,
    transposed?: boolean,
    /** The router's logits hold NaN and infinities. */
    hostileLogits?: boolean
}

interface Moe {
    nodes: RpcTensor[],
    inputs: [RpcTensor, Buffer][],
    sort: RpcTensor,
    ids: RpcTensor,
    up: RpcTensor
}

/** build_moe_ffn's expert path (router MUL_MAT, SOFT_MAX, the sort, GET_ROWS of the weights, up, gate, GLU, down), with a twist. */
function moe(g: GraphBuilder, shape: MoeShape, twist: Twist = {}, r = new Rng(1)): Moe {
    const {embd, ff, experts, used, tokens, expertType} = shape;
    const width = twist.width ?? experts;
    const nAs = twist.nAs ?? experts;
    const inputs: [RpcTensor, Buffer][] = [];
    const leaf = (type: number, ne: number[], bytes?: Buffer) => {
        const tensor = g.tensor({type, ne});
        const size = GraphBuilder.bytes(tensor);
        inputs.push([tensor, bytes ?? Buffer.from(Array.from({length: size}, () => r.int(0, 255)))]);
        return tensor;
    };
    const hostile = (count: number) => ints(Array.from({length: count}, () => r.pick([HOSTILE_ID, -HOSTILE_ID, nAs, 2 ** 31 - 1])));
    const x = leaf(F32, [embd, tokens], floats(wave(embd * tokens, r.next())));
    const router = leaf(F32, [embd, width], floats(wave(embd * width, r.next(), 0.3)
        .map((value, index) => twist.hostileLogits && index % 7 === 0 ? r.pick([NaN, Infinity, -Infinity]) : value)));
    const logits = g.tensor({type: F32, ne: [width, tokens], op: 'MUL_MAT', src: [router, x]});
    const probs = g.tensor({type: F32, ne: [width, tokens], op: 'SOFT_MAX', src: [logits], params: [f32(1), f32(0)]});
    const nodes: RpcTensor[] = [logits, probs];
    const listSort: RpcTensor[] = [];
    let sort: RpcTensor;
    let ids: RpcTensor;
    if (shape.select === 'argsort') {
        sort = g.tensor({type: I32, ne: [width, tokens], op: 'ARGSORT', src: [probs], params: [DESC]});
        const [ne0, ne1] = twist.idsNe ?? [used, tokens];
        const nb1 = twist.idsNb1 ?? sort.nb[1];
        ids = view(g, sort, [ne0, ne1], [nb1, nb1 * ne1, nb1 * ne1], twist.idsOffset ?? 0);
        listSort.push(sort, ids);
    } else {
        sort = g.tensor({type: I32, ne: [used, tokens], op: 'TOP_K', src: [probs]});
        ids = sort;
        if (twist.idsOffset !== undefined || twist.idsNb1 !== undefined || twist.idsNe !== undefined) {
            const [ne0, ne1] = twist.idsNe ?? [used, tokens];
            const nb1 = twist.idsNb1 ?? sort.nb[1];
            ids = view(g, sort, [ne0, ne1], [nb1, nb1 * ne1, nb1 * ne1], twist.idsOffset ?? 0);
        }
        listSort.push(...new Set([sort, ids]));
    }
    if (twist.leafIds)
        ids = leaf(I32, [used, tokens], hostile(used * tokens));
    if (twist.clearSortFlag)
        sort.flags = 0;
    const writer = () => {
        const bytes = GraphBuilder.bytes(sort);
        if (twist.writer!.kind === 'cpy') {
            const from = leaf(I32, [...ids.ne], hostile(ids.ne[0] * ids.ne[1]));
            return g.tensor({type: I32, ne: [...ids.ne], op: 'CPY', src: [from, ids], view: {of: ids}});
        }
        // f32s over the ids' bytes: 1e9's bits as an id.
        const from = leaf(F32, [bytes / 4], floats(Array.from({length: bytes / 4}, () => 1e9)));
        return g.tensor({type: F32, ne: [bytes / 4], op: 'SCALE', src: [from], params: [f32(1), f32(0)], view: {of: sort, nb: packedStrides(F32, [bytes / 4])}});
    };
    if (twist.writer?.at === 'before')
        nodes.push(writer());
    if (twist.sortAt === undefined)
        nodes.push(...listSort);
    if (twist.writer?.at === 'between')
        nodes.push(writer());
    const probs3 = reshape(g, probs, [1, width, tokens]);
    const cur = reshape(g, x, [embd, 1, tokens]);
    const bType = twist.activationType ?? F32;
    const b = bType === F32 ? cur : g.tensor({type: bType, ne: [embd, 1, tokens], op: 'CPY', src: [cur]});
    if (b !== cur)
        b.src[1] = b.id; // ggml_cast: a CPY into itself
    const experts3 = (k: number, n: number, transposed = false) => {
        if (!transposed)
            return leaf(expertType, [k, n, nAs]);
        const owner = leaf(F32, [k * n * nAs]);
        const tensor = g.tensor({type: F32, ne: [k, n, nAs], view: {of: owner, nb: [4, 4 * k * n, 4 * k * n]}});
        tensor.nb[0] = 4 * n;
        return tensor;
    };
    const upExps = experts3(embd, ff, twist.transposed);
    const gateExps = experts3(embd, ff);
    const downExps = experts3(ff, embd);
    const rows = twist.shortResult ? ff - 1 : ff;
    const weights = g.tensor({type: F32, ne: [1, ids.ne[0], tokens], op: 'GET_ROWS', src: [probs3, ids]});
    const up = g.tensor({type: F32, ne: [rows, ids.ne[0], ids.ne[1]], op: 'MUL_MAT_ID', src: [upExps, b, ids]});
    const gate = g.tensor({type: F32, ne: [ff, ids.ne[0], ids.ne[1]], op: 'MUL_MAT_ID', src: [gateExps, cur, ids]});
    const act = g.tensor({type: F32, ne: [ff, ids.ne[0], ids.ne[1]], op: 'GLU', src: [gate, up], params: [glu('SWIGLU'), 0]});
    const down = g.tensor({type: F32, ne: [embd, ids.ne[0], ids.ne[1]], op: 'MUL_MAT_ID', src: [downExps, act, ids]});
    nodes.push(probs3, weights, cur, ...(b === cur ? [] : [b]), up, gate, act, down);
    if (twist.sortAt === 'after')
        nodes.push(...listSort);
    if (twist.writer?.at === 'after')
        nodes.push(writer());
    return {nodes, inputs, sort, ids, up};
}

// ----------------------------------------------------------------------------------------------------------------
// 3. The refusals (no server needed: the checks are pure), and the one crash they prevent.

function offline() {
    const buffer: LabBuffer = {handle: 7n, size: 1n << 30n, base: 1n << 32n}; // addresses only: nothing is allocated
    return {g: new GraphBuilder(buffer), table: tableOf(buffer)};
}

function verdict(build: (g: GraphBuilder) => RpcTensor[]) {
    const {g, table} = offline();
    try {
        checkGraph(g.graph(build(g)), table);
        return undefined;
    } catch (error) {
        if (error instanceof GraphCheckError)
            return error;
        throw error;
    }
}

function accepts(t: ExecutionContext, build: (g: GraphBuilder) => RpcTensor[], what?: string) {
    const error = verdict(build);
    t.is(error, undefined, `${what ?? ''} ${error?.message ?? ''}`);
}

function refuses(t: ExecutionContext, rule: GraphRule, build: (g: GraphBuilder) => RpcTensor[], message?: RegExp) {
    const error = verdict(build);
    t.is(error?.rule, rule, error?.message ?? 'accepted');
    if (message !== undefined)
        t.regex(error?.message ?? '', message);
}

const layer = (twist: Twist = {}, shape: Partial<MoeShape> = {}) => (g: GraphBuilder) => moe(g, {...SHAPE, ...shape}, twist).nodes;

test.serial('MUL_MAT_ID accepts ids an ARGSORT (through ggml_argsort_top_k\'s view) or a TOP_K of the same graph wrote, for f32, f16 and quantized experts, read by several matmuls', (t) => {
    for (const select of ['argsort', 'top_k'] as const)
        for (const expertType of [F32, F16, Q8_0, Q4_0])
            accepts(t, layer({}, {select, expertType}), `${select} ${expertType}`);
    // Rows shorter than the experts' count, a view of the second best onward, and every token reading one row: all written by the sort.
    accepts(t, layer({width: 6}));
    accepts(t, layer({idsOffset: 4, idsNe: [3, 3]}));
    accepts(t, layer({idsNb1: 0}));
    // Overwritten before the sort (which writes every byte again) or after the last reader: no matter.
    accepts(t, layer({writer: {at: 'before', kind: 'cpy'}}));
    accepts(t, layer({writer: {at: 'after', kind: 'scale'}}));
    accepts(t, layer({hostileLogits: true}));
});

test.serial('MUL_MAT_ID refuses ids from a leaf the peer fills, and ids computed otherwise than by a sort (gguf tables, grovemoe\'s cast)', (t) => {
    refuses(t, 'sources', layer({leafIds: true}), /no ARGSORT's or TOP_K's result/);
    // DeepSeek V4's hash layers: ids looked up in a table of the model's (weights the peer uploaded).
    refuses(t, 'sources', (g) => {
        const table = g.tensor({type: I32, ne: [2, 100]});
        const tokens = g.tensor({type: I32, ne: [3]});
        const ids = g.tensor({type: I32, ne: [2, 3], op: 'GET_ROWS', src: [table, tokens]});
        const node = g.tensor({type: F32, ne: [16, 2, 3], op: 'MUL_MAT_ID', src: [g.tensor({type: F32, ne: [32, 16, 8]}), g.tensor({type: F32, ne: [32, 1, 3]}), ids]});
        return [ids, node];
    });
    // GroveMoE: the argsort's ids cast to f32, scaled, and cast back.
    refuses(t, 'sources', (g) => {
        const probs = g.tensor({type: F32, ne: [8, 3]});
        const {sort, top} = argsortTopK(g, probs, 2);
        const asF32 = g.tensor({type: F32, ne: [2, 3], op: 'CPY', src: [top]});
        asF32.src[1] = asF32.id;
        const scaled = g.tensor({type: F32, ne: [2, 3], op: 'SCALE', src: [asF32], params: [f32(0.5), f32(0)]});
        const ids = g.tensor({type: I32, ne: [2, 3], op: 'CPY', src: [scaled]});
        ids.src[1] = ids.id;
        const node = g.tensor({type: F32, ne: [16, 2, 3], op: 'MUL_MAT_ID', src: [g.tensor({type: F32, ne: [32, 16, 4]}), g.tensor({type: F32, ne: [32, 1, 3]}), ids]});
        return [sort, top, asF32, scaled, ids, node];
    });
});

test.serial('MUL_MAT_ID refuses ids sorted out of rows longer than its expert count (ARGSORT or TOP_K over more columns than experts)', (t) => {
    refuses(t, 'op-shape', layer({width: 9}), /rows of 9 for 8 experts/);
    refuses(t, 'op-shape', layer({nAs: 7}), /rows of 8 for 7 experts/);
    refuses(t, 'op-shape', layer({width: 12}, {select: 'top_k'}), /rows of 12 for 8 experts/);
    accepts(t, layer({width: 12, nAs: 12}, {select: 'top_k'}));
});

test.serial('MUL_MAT_ID refuses a node between the sort and it that writes over the ids (a CPY into them, a SCALE whose result lies there), and its own result over them', (t) => {
    for (const kind of ['cpy', 'scale'] as const)
        for (const select of ['argsort', 'top_k'] as const)
            refuses(t, 'view', layer({writer: {at: 'between', kind}}, {select}), /writes over the expert ids between their sort and this node/);
    refuses(t, 'view', (g) => {
        const {sort, top} = argsortTopK(g, g.tensor({type: F32, ne: [8, 3]}), 2);
        const node = g.tensor({type: F32, ne: [1, 2, 3], op: 'MUL_MAT_ID', src: [g.tensor({type: F32, ne: [32, 1, 8]}), g.tensor({type: F32, ne: [32, 1, 3]}), top],
            view: {of: sort, nb: [4, 8, 24]}});
        return [sort, top, node];
    }, /overlaps the expert ids/);
});

test.serial('MUL_MAT_ID refuses ids read where the sort did not write them: misaligned, straddling two sorted rows, rows not whole sorted rows apart, beyond a sort inside a larger tensor, or a TOP_K with gaps between rows', (t) => {
    refuses(t, 'view', layer({idsOffset: 2}), /whole aligned int32s/);
    // Every token's ids from the end of the first sorted row into the second.
    refuses(t, 'view', layer({idsOffset: 4 * 7, idsNb1: 0}), /reach past what their sort wrote/);
    refuses(t, 'strides', layer({idsNb1: 4 * 8 + 4}), /not whole sorted rows/);
    refuses(t, 'strides', layer({idsNb1: 4}, {select: 'top_k'}), /not whole sorted rows/);
    // A sort that is a view into a larger tensor, and ids that view that tensor past the sort's bytes.
    refuses(t, 'sources', (g) => {
        const owner = g.tensor({type: I32, ne: [8 * 4]});
        const sort = g.tensor({type: I32, ne: [8, 3], op: 'ARGSORT', src: [g.tensor({type: F32, ne: [8, 3]})], params: [DESC], view: {of: owner, nb: [32, 96, 96]}});
        const ids = view(g, owner, [2, 4], [32, 128, 128], 0);
        const node = g.tensor({type: F32, ne: [16, 2, 4], op: 'MUL_MAT_ID', src: [g.tensor({type: F32, ne: [32, 16, 8]}), g.tensor({type: F32, ne: [32, 1, 4]}), ids]});
        return [sort, ids, node];
    }, /no ARGSORT's or TOP_K's result/);
    refuses(t, 'strides', (g) => {
        const owner = g.tensor({type: I32, ne: [4 * 3]});
        const sort = g.tensor({type: I32, ne: [2, 3], op: 'TOP_K', src: [g.tensor({type: F32, ne: [8, 3]})], view: {of: owner, nb: [16, 48, 48]}});
        const node = g.tensor({type: F32, ne: [16, 2, 3], op: 'MUL_MAT_ID', src: [g.tensor({type: F32, ne: [32, 16, 8]}), g.tensor({type: F32, ne: [32, 1, 3]}), sort]});
        return [sort, node];
    }, /packed array/);
    refuses(t, 'op-type', (g) => {
        const {sort} = argsortTopK(g, g.tensor({type: F32, ne: [8, 3]}), 2);
        const ids = g.tensor({type: F32, ne: [2, 3], op: 'VIEW', src: [sort], view: {of: sort, nb: [32, 96, 96]}});
        const node = g.tensor({type: F32, ne: [16, 2, 3], op: 'MUL_MAT_ID', src: [g.tensor({type: F32, ne: [32, 16, 8]}), g.tensor({type: F32, ne: [32, 1, 3]}), ids]});
        return [sort, node];
    });
});

test.serial('MUL_MAT_ID refuses a sort the server would not have run before it: listed after it, not listed, without the compute flag, or too far before it', (t) => {
    refuses(t, 'sources', layer({sortAt: 'after'}), /not a node computed before this one/);
    refuses(t, 'sources', layer({sortAt: 'absent'}), /not a node computed before this one/);
    refuses(t, 'sources', layer({clearSortFlag: true}), /not flagged for computing/);
    const far = (count: number) => (g: GraphBuilder) => {
        const {sort, top} = argsortTopK(g, g.tensor({type: F32, ne: [8, 3]}), 2);
        const spacers = Array.from({length: count}, () => g.tensor({type: F32, ne: [4], op: 'SCALE', src: [g.tensor({type: F32, ne: [4]})], params: [f32(1), f32(0)]}));
        const node = g.tensor({type: F32, ne: [16, 2, 3], op: 'MUL_MAT_ID', src: [g.tensor({type: F32, ne: [32, 16, 8]}), g.tensor({type: F32, ne: [32, 1, 3]}), top]});
        return [sort, top, ...spacers, node];
    };
    accepts(t, far(1022));
    refuses(t, 'sources', far(1023), /sorted 1025 nodes earlier/);
});

test.serial('MUL_MAT_ID refuses what its builder and kernel assert: f16 activations, a result of another shape, transposed experts, 4-D experts, ids and activations that disagree, op params, a row map too large for the work buffer', (t) => {
    refuses(t, 'op-type', layer({activationType: F16}));
    refuses(t, 'op-shape', layer({shortResult: true}));
    refuses(t, 'strides', layer({transposed: true}, {expertType: F32}), /transposed/);
    const node = ({as = [32, 16, 8, 1], b = [32, 1, 3], result = [16, 2, 3], params = [] as number[], width = 8, used = 2, tokens = 3} = {}) => (g: GraphBuilder) => {
        const {sort, top} = argsortTopK(g, g.tensor({type: F32, ne: [width, tokens]}), used);
        return [sort, top, g.tensor({type: F32, ne: result, op: 'MUL_MAT_ID', src: [g.tensor({type: F32, ne: as}), g.tensor({type: F32, ne: b}), top], params})];
    };
    accepts(t, node());
    accepts(t, node({b: [32, 2, 3]}));
    refuses(t, 'op-shape', node({as: [32, 16, 8, 2]}));
    refuses(t, 'op-shape', node({b: [32, 1, 4], result: [16, 2, 4], tokens: 3}));
    refuses(t, 'op-shape', node({b: [32, 3, 3], result: [16, 2, 3]}));
    refuses(t, 'op-shape', node({b: [64, 1, 3]}));
    refuses(t, 'op-params', node({params: [1]}));
    // 2^21 experts of one row, 8 ids each for 4 tokens: 2^21 × (8 × 32 + 72) bytes of map.
    accepts(t, node({as: [32, 1, 2 ** 16], width: 8, used: 8, b: [32, 1, 4], result: [1, 8, 4], tokens: 4}));
    refuses(t, 'op-shape', node({as: [32, 1, 2 ** 21], width: 8, used: 8, b: [32, 1, 4], result: [1, 8, 4], tokens: 4}), /row map larger/);
});

function within<T>(promise: Promise<T>, ms: number) {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([promise, new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no reply in ${ms} ms`)), ms);
    })]).finally(() => clearTimeout(timer));
}

// ----------------------------------------------------------------------------------------------------------------
// 4. Seeded mutated MoE layers: each refused, or computed by a server with no guard that lives.

const CASES = 300;

function drawShape(r: Rng): MoeShape {
    const experts = r.int(1, 10);
    return {
        embd: 32 * r.int(1, 3), ff: 32 * r.int(1, 2), experts, used: r.int(1, Math.min(experts, 4)), tokens: r.int(1, 6),
        expertType: r.pick([F32, F16, Q8_0, Q4_0]), select: r.pick(['argsort', 'top_k'] as const)
    };
}

/** One or more twists; those marked `fatal` would end a server that ran them. */
function drawTwist(r: Rng, shape: MoeShape): {twist: Twist, fatal: boolean} {
    const twist: Twist = {};
    let fatal = false;
    for (let count = r.int(0, 2); count > 0; count--) {
        switch (r.int(0, 11)) {
            case 0: twist.width = Math.max(1, shape.experts + r.pick([-1, 1, 2, 5])); break;
            case 1: twist.nAs = Math.max(1, shape.experts + r.pick([-2, -1, 1, 3])); break;
            case 2: twist.leafIds = true; fatal = true; break;
            case 3: twist.idsOffset = r.pick([1, 2, 4, 8, 12, 4 * shape.experts - 4]); break;
            case 4: twist.idsNb1 = r.pick([0, 4, 4 * shape.experts + 4, 8 * shape.experts]); break;
            case 5: twist.idsNe = [Math.max(1, shape.used + r.pick([-1, 1, 2])), Math.max(1, shape.tokens + r.pick([-1, 0, 1]))]; break;
            case 6: {
                const at = r.pick(['before', 'between', 'after'] as const);
                twist.writer = {at, kind: r.pick(['cpy', 'scale'] as const)};
                fatal ||= at === 'between';
                break;
            }
            case 7: twist.sortAt = r.pick(['after', 'absent'] as const); break;
            case 8: twist.clearSortFlag = true; break;
            case 9: twist.activationType = F16; break;
            case 10: twist.shortResult = true; break;
            default: twist.hostileLogits = true;
        }
    }
    return {twist, fatal};
}

test.serial(`MUL_MAT_ID: ${CASES} seeded mutated MoE layers, each refused with a rule or computed by a server with no guard that lives`, async (t) => {
    const start = () => directLab(t, 2, 1n << 24n);
    let {lab, client, buffer} = await start();
    const r = new Rng(2024);
    let accepted = 0;
    // Hostile ids written before the sort or after the last matmul, NaN and infinite router logits: accepted, and harmless.
    let acceptedHostile = 0;
    const refused = new Map<GraphRule, number>();
    const deaths: string[] = [];
    const slipped: string[] = [];
    for (let index = 0; index < CASES; index++) {
        const shape = drawShape(r);
        const {twist, fatal} = drawTwist(r, shape);
        const g = new GraphBuilder(buffer);
        let built: Moe;
        try {
            built = moe(g, shape, twist, r);
        } catch (error) {
            if (error instanceof RangeError) // the lab buffer is too small for the draw
                continue;
            throw error;
        }
        const payload = g.graph(built.nodes);
        const what = `case ${index}: ${JSON.stringify(shape)} ${JSON.stringify(twist)}`;
        try {
            checkGraph(payload, tableOf(buffer));
        } catch (error) {
            if (!(error instanceof GraphCheckError))
                throw new Error(`${what}: the contract threw ${String(error)}`);
            refused.set(error.rule, (refused.get(error.rule) ?? 0) + 1);
            continue;
        }
        accepted++;
        if (twist.writer !== undefined || twist.hostileLogits)
            acceptedHostile++;
        if (fatal)
            slipped.push(what);
        for (const [tensor, bytes] of built.inputs)
            await client.setTensor(tensor, bytes);
        await client.graphCompute(payload);
        if (await within(client.alive(), 5_000).then(() => true, () => false))
            continue;
        await sleep(300);
        deaths.push(`${what}: ${JSON.stringify(lab.exits)} ${lab.lines.slice(-3).join(' | ')}`);
        client.close();
        await lab.server.stop();
        ({lab, client, buffer} = await start());
    }
    const refusedTotal = [...refused.values()].reduce((sum, count) => sum + count, 0);
    t.log(`${accepted} accepted and computed (${acceptedHostile} with hostile bytes outside the sort's reach), ${refusedTotal} refused (${[...refused].map(([rule, count]) => `${rule} ${count}`).join(', ')})`);
    t.deepEqual(slipped, [], 'a graph with hostile ids passed the checks');
    t.deepEqual(deaths, [], 'the server died or hung');
    t.true(accepted >= 80, `only ${accepted} accepted`);
    t.true(acceptedHostile >= 10, `only ${acceptedHostile} accepted with hostile bytes`);
    t.true(refusedTotal >= 80, `only ${refusedTotal} refused`);
});
