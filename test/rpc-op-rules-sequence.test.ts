import {setTimeout as sleep} from 'node:timers/promises';
import test, {type ExecutionContext} from 'ava';
import {checkGraph} from '../inference/sharded/tunnel/ggml/graph-check.js';
import {GGML_TYPES, type GgmlOpName, GgmlType} from '../inference/sharded/tunnel/ggml/ggml-tables.js';
import type {RpcTensor} from '../inference/sharded/tunnel/ggml/rpc-tensor.js';
import {GraphCheckError, type GraphRule, type SessionBuffers} from '../inference/sharded/tunnel/ggml/tensor-check.js';
import {directConnection, f32, GraphBuilder, guardedConnection, type LabBuffer, labServer, RpcLabClient} from '../harness/rpc-lab.js';
import {Prng} from '../engine/demo/prng.js';
import {float32ToFloat16Bits} from '../engine/gguf/float16.js';

/**
 * The contracts of the recurrent and state-space ops (op-rules-sequence.ts; docs/peer-protocol.md, "Graph checks")
 * against a real rpc-server: nodes as llama.cpp's models build them pass and compute to the expected values through
 * the host's guard; seeded random nodes (shapes, types, views, op_params, sources) either fail the checks or run
 * on a server with no guard, which must survive each; the dangerous mistakes are refused, and some of them shown
 * to kill a server that runs them.
 */

const {F32, F16, BF16, I32, Q4_0, Q8_0} = GgmlType;
const Q4_1 = 3;
const Q5_0 = 6;
const Q5_1 = 7;
const IQ4_NL = 20;

function sessionOf(buffer: LabBuffer): SessionBuffers {
    return {get: (handle) => handle === buffer.handle ? buffer : undefined};
}

function elementsOf(ne: readonly number[]) {
    return ne.reduce((product, n) => product * n, 1);
}

/** The seeded PRNG as a function, for cases that repeat run after run. */
function prng(seed: number) {
    const random = new Prng(seed);
    return () => random.next();
}

type Random = () => number;
const pick = <T>(random: Random, list: readonly T[]) => list[Math.floor(random() * list.length)]!;
const between = (random: Random, low: number, high: number) => low + Math.floor(random() * (high - low + 1));
const chance = (random: Random, p: number) => random() < p;


/** The lab server's exit, once heard (a crashed server may take a while to dump its core). */
async function exitOf(exits: {code: number | null, signal: NodeJS.Signals | null}[], waitMs = 10_000) {
    for (const start = Date.now(); exits.length === 0 && Date.now() - start < waitMs;)
        await sleep(50);
    return exits[0];
}

function close(t: ExecutionContext, actual: number, expected: number, what: string, scale = 1) {
    t.true(Math.abs(actual - expected) <= 1e-3 * Math.max(1, Math.abs(expected), scale), `${what}: ${actual}, expected ${expected}`);
}

// ---------------------------------------------------------------------------------------------------------------
// 1. Nodes as llama.cpp builds them, through the guard, checked against the math.

/** A session with a real server through the host's guard: inputs with data, and nodes computed and read back. */
class Lab {
    readonly g: GraphBuilder;
    private readonly random = prng(7);

    constructor(readonly t: ExecutionContext, readonly client: RpcLabClient, readonly buffer: LabBuffer) {
        this.g = new GraphBuilder(buffer);
    }

    /** Values exact in f16 and f32: multiples of 1/8 in [-2, 2], times `scale`. */
    values(count: number, scale = 1) {
        return Array.from({length: count}, () => between(this.random, -16, 16) / 8 * scale);
    }

    async input(type: number, ne: number[], values: readonly number[] = this.values(elementsOf(ne))) {
        const tensor = this.g.tensor({type, ne});
        const bytes = type === F16 ? Buffer.from(Uint16Array.from(values, (value) => float32ToFloat16Bits(value)).buffer) : Buffer.from(Float32Array.from(values).buffer);
        await this.client.setTensor(tensor, bytes);
        return {tensor, values};
    }

    async run(node: RpcTensor) {
        const payload = this.g.graph([node]);
        this.t.notThrows(() => checkGraph(payload, sessionOf(this.buffer)));
        await this.client.graphCompute(payload);
        this.t.true(await this.client.alive());
        const bytes = await this.client.getTensor(node, elementsOf(node.ne) * 4);
        return new Float32Array(new Uint8Array(bytes).buffer);
    }
}

const dot = (a: readonly number[], b: readonly number[], from = 0, to = a.length, bFrom = 0) => {
    let sum = 0;
    for (let i = from; i < to; i++)
        sum += a[i]! * b[bFrom + i - from]!;
    return sum;
};

/** The first token of each sequence, from a zero state: out[j] = v[j] · Σ_i x_i (rwkv6, gla, rwkv7's forms). */
function checkFirstTokens(t: ExecutionContext, out: Float32Array, S: number, H: number, T: number, seqs: number,
    expected: (token: number, head: number, j: number) => number) {
    for (let seq = 0; seq < seqs; seq++) {
        const token = seq * T / seqs;
        for (let h = 0; h < H; h++)
            for (let j = 0; j < S; j++)
                close(t, out[token * S * H + h * S + j]!, expected(token, h, j), `token ${token} head ${h} [${j}]`);
    }
}

const REALISTIC: Record<string, (lab: Lab) => Promise<void>> = {
    // Mamba-2 / Qwen3-Next's short convolution: d_conv 4 over {d_conv - 1 + n_seq_tokens, d_inner, n_seqs}.
    async SSM_CONV(lab) {
        const {t, g} = lab;
        const [dConv, dInner, nt, ns] = [4, 48, 5, 2];
        const ncs = dConv - 1 + nt;
        const sx = await lab.input(F32, [ncs, dInner, ns]);
        const w = await lab.input(F32, [dConv, dInner]);
        const out = await lab.run(g.tensor({type: F32, ne: [dInner, nt, ns], op: 'SSM_CONV', src: [sx.tensor, w.tensor]}));
        for (let s = 0; s < ns; s++)
            for (let token = 0; token < nt; token++)
                for (let i = 0; i < dInner; i++)
                    close(t, out[i + token * dInner + s * dInner * nt]!, dot(sx.values, w.values, (s * dInner + i) * ncs + token, (s * dInner + i) * ncs + token + dConv, i * dConv), `[${i}, ${token}, ${s}]`);
    },
    // RWKV-6: head size 64, time_first {head_size, n_head}, the state {n_embd_s, n_seqs}.
    async RWKV_WKV6(lab) {
        const {t, g} = lab;
        const [S, H, T, seqs] = [64, 2, 4, 2];
        const [k, v, r] = [await lab.input(F32, [S, H, T]), await lab.input(F32, [S, H, T]), await lab.input(F32, [S, H, T])];
        const first = await lab.input(F32, [S, H]);
        const decay = await lab.input(F32, [S, H, T], lab.values(S * H * T, 1 / 4).map(Math.abs));
        const state = await lab.input(F32, [S * S * H, seqs], new Array(S * S * H * seqs).fill(0));
        const out = await lab.run(g.tensor({type: F32, ne: [S * H, T + S * seqs], op: 'RWKV_WKV6',
            src: [k.tensor, v.tensor, r.tensor, first.tensor, decay.tensor, state.tensor]}));
        checkFirstTokens(t, out, S, H, T, seqs, (token, h, j) => {
            let sum = 0;
            for (let i = 0; i < S; i++)
                sum += r.values[token * S * H + h * S + i]! * first.values[h * S + i]! * k.values[token * S * H + h * S + i]!;
            return v.values[token * S * H + h * S + j]! * sum;
        });
    },
    // QRWKV-6's gated linear attention, scale head_size^-0.5.
    async GATED_LINEAR_ATTN(lab) {
        const {t, g} = lab;
        const [S, H, T, seqs] = [64, 2, 6, 3];
        const [k, v, q] = [await lab.input(F32, [S, H, T]), await lab.input(F32, [S, H, T]), await lab.input(F32, [S, H, T])];
        const gate = await lab.input(F32, [S, H, T], lab.values(S * H * T, 1 / 2).map(Math.abs));
        const state = await lab.input(F32, [S * S * H, seqs], new Array(S * S * H * seqs).fill(0));
        const scale = S ** -0.5;
        const out = await lab.run(g.tensor({type: F32, ne: [S * H, T + S * seqs], op: 'GATED_LINEAR_ATTN',
            src: [k.tensor, v.tensor, q.tensor, gate.tensor, state.tensor], params: [f32(scale)]}));
        checkFirstTokens(t, out, S, H, T, seqs, (token, h, j) =>
            v.values[token * S * H + h * S + j]! * scale * dot(k.values, q.values, token * S * H + h * S, token * S * H + h * S + S, token * S * H + h * S));
    },
    // RWKV-7: r, w, k, v, -kk, kk·a, the state; head size 64.
    async RWKV_WKV7(lab) {
        const {t, g} = lab;
        const [S, H, T, seqs] = [64, 2, 4, 2];
        const inputs = [];
        for (let i = 0; i < 6; i++)
            inputs.push(await lab.input(F32, [S, H, T], lab.values(S * H * T, 1 / 2)));
        const [r, , k, v] = inputs as [typeof inputs[0], typeof inputs[0], typeof inputs[0], typeof inputs[0]];
        const state = await lab.input(F32, [S * S * H, seqs], new Array(S * S * H * seqs).fill(0));
        const out = await lab.run(g.tensor({type: F32, ne: [S * H, T + S * seqs], op: 'RWKV_WKV7',
            src: [...inputs.map((input) => input.tensor), state.tensor]}));
        checkFirstTokens(t, out, S, H, T, seqs, (token, h, i) =>
            v.values[token * S * H + h * S + i]! * dot(k.values, r.values, token * S * H + h * S, token * S * H + h * S + S, token * S * H + h * S));
    },
    // Delta-net chunking: solve_tri(lhs, attn) over [CS, CS, n_chunks, H·n_seqs], CS 64.
    async SOLVE_TRI(lab) {
        const {t, g} = lab;
        const [n, k, b2, b3] = [64, 64, 2, 2];
        const a = lab.values(n * n * b2 * b3, 1 / 32).map((value, index) => {
            const [col, row] = [index % n, Math.floor(index / n) % n];
            return col === row ? 1 : col < row ? value : 7; // the upper triangle is never read
        });
        const A = await lab.input(F32, [n, n, b2, b3], a);
        const B = await lab.input(F32, [k, n, b2, b3]);
        const X = await lab.run(g.tensor({type: F32, ne: [k, n, b2, b3], op: 'SOLVE_TRI', src: [A.tensor, B.tensor]}));
        for (let batch = 0; batch < b2 * b3; batch++)
            for (let row = 0; row < n; row++)
                for (let col = 0; col < k; col += 7) {
                    let sum = 0;
                    let size = 0;
                    for (let i = 0; i <= row; i++) {
                        const term = a[batch * n * n + row * n + i]! * X[batch * n * k + i * k + col]!;
                        sum += term;
                        size += Math.abs(term);
                    }
                    close(t, sum, B.values[batch * n * k + row * k + col]!, `batch ${batch} [${row}, ${col}]`, size);
                }
    },
    // Qwen3-Next's fused delta net (K = 1, scalar gate, v a view of the convolved q|k|v rows), then Kimi-Linear's KDA
    // (a gate per element) with snapshots.
    async GATED_DELTA_NET(lab) {
        const {t, g} = lab;
        for (const [kda, K] of [[false, 1], [true, 3]] as const) {
            const [S, Hk, H, T, seqs] = [32, 2, 4, 3, 2];
            const q = await lab.input(F32, [S, Hk, T, seqs]);
            const k = await lab.input(F32, [S, Hk, T, seqs]);
            let v = await lab.input(F32, [S, H, T, seqs]);
            if (!kda) { // conv_qkv_mix {qkv_dim, n_seq_tokens, n_seqs}, v its last S·H of each row
                const qkvDim = 2 * S * Hk + S * H;
                const mix = await lab.input(F32, [qkvDim, T, seqs]);
                const tensor = g.tensor({type: F32, ne: [S, H, T, seqs], view: {of: mix.tensor, offset: 2 * S * Hk * 4, nb: [S * 4, qkvDim * 4, qkvDim * T * 4]}});
                const values = Array.from({length: S * H * T * seqs}, (_, index) => mix.values[Math.floor(index / (S * H)) * qkvDim + 2 * S * Hk + index % (S * H)]!);
                v = {tensor, values};
            }
            const gate = await lab.input(F32, [kda ? S : 1, H, T, seqs], lab.values((kda ? S : 1) * H * T * seqs, 1 / 4).map((x) => -Math.abs(x)));
            const beta = await lab.input(F32, [1, H, T, seqs], lab.values(H * T * seqs, 1 / 2).map(Math.abs));
            const state = await lab.input(F32, [S, S, H, seqs], new Array(S * S * H * seqs).fill(0));
            const out = await lab.run(g.tensor({type: F32, ne: [S * H, T * seqs + K * S * seqs], op: 'GATED_DELTA_NET',
                src: [q.tensor, k.tensor, v.tensor, gate.tensor, beta.tensor, state.tensor], params: [K]}));
            for (let seq = 0; seq < seqs; seq++)
                for (let h = 0; h < H; h++) {
                    const qk = (seq * T * Hk + h % Hk) * S; // token 0's q and k row of this head
                    const kq = dot(k.values, q.values, qk, qk + S, qk);
                    for (let j = 0; j < S; j++) {
                        const delta = v.values[(seq * T * H + h) * S + j]! * beta.values[seq * T * H + h]!;
                        close(t, out[(seq * T * H + h) * S + j]!, delta * kq / Math.sqrt(S), `${kda ? 'kda' : 'gdn'} seq ${seq} head ${h} [${j}]`);
                    }
                }
        }
    },
    // DeepSeek's fused lightning indexer: 128-wide index heads, keys from an f16 cache, a causal f16 mask.
    async LIGHTNING_INDEXER(lab) {
        const {t, g} = lab;
        const [embd, heads, tokens, streams, kv] = [128, 4, 3, 1, 16];
        const q = await lab.input(F32, [embd, heads, tokens, streams]);
        const k = await lab.input(F16, [embd, 1, kv, streams]);
        const w = await lab.input(F32, [heads, tokens, 1, streams], lab.values(heads * tokens * streams, 1 / 8));
        const maskValues = Array.from({length: kv * tokens}, (_, index) => index % kv <= kv - tokens + Math.floor(index / kv) ? 0 : -Infinity);
        const mask = await lab.input(F16, [kv, tokens, 1, streams], maskValues);
        const out = await lab.run(g.tensor({type: F32, ne: [kv, tokens, 1, streams], op: 'LIGHTNING_INDEXER',
            src: [q.tensor, k.tensor, w.tensor, mask.tensor]}));
        for (let token = 0; token < tokens; token++)
            for (let key = 0; key < kv; key++) {
                let score = maskValues[token * kv + key]!;
                for (let h = 0; h < heads; h++)
                    score += Math.max(0, dot(q.values, k.values, (token * heads + h) * embd, (token * heads + h + 1) * embd, key * embd)) * w.values[token * heads + h]!;
                if (score === -Infinity)
                    t.is(out[token * kv + key], -Infinity);
                else
                    close(t, out[token * kv + key]!, score, `token ${token} key ${key}`);
            }
    },
    // DeepSeek V4's hyper-connection mixing: hc 4, 20 Sinkhorn iterations; each column of the result sums to 1.
    async DSV4_HC_COMB(lab) {
        const {t, g} = lab;
        const tokens = 5;
        const mixes = await lab.input(F32, [24, tokens]);
        const scale = await lab.input(F32, [3]);
        const base = await lab.input(F32, [24]);
        const out = await lab.run(g.tensor({type: F32, ne: [4, 4, tokens], op: 'DSV4_HC_COMB', src: [mixes.tensor, scale.tensor, base.tensor],
            params: [f32(1e-6), 20]}));
        for (let token = 0; token < tokens; token++)
            for (let dst = 0; dst < 4; dst++) {
                let sum = 0;
                for (let src = 0; src < 4; src++)
                    sum += out[token * 16 + src * 4 + dst]!;
                close(t, sum, 1, `token ${token} column ${dst}`);
            }
    },
    async DSV4_HC_PRE(lab) {
        const {t, g} = lab;
        const [embd, hc, tokens] = [64, 4, 5];
        const x = await lab.input(F32, [embd, hc, tokens]);
        const w = await lab.input(F32, [hc, tokens]);
        const out = await lab.run(g.tensor({type: F32, ne: [embd, tokens], op: 'DSV4_HC_PRE', src: [x.tensor, w.tensor]}));
        for (let token = 0; token < tokens; token++)
            for (let i = 0; i < embd; i++) {
                let sum = 0;
                for (let h = 0; h < hc; h++)
                    sum += x.values[i + h * embd + token * embd * hc]! * w.values[h + token * hc]!;
                close(t, out[i + token * embd]!, sum, `[${i}, ${token}]`);
            }
    },
    async DSV4_HC_POST(lab) {
        const {t, g} = lab;
        const [embd, hc, tokens] = [64, 4, 5];
        const x = await lab.input(F32, [embd, tokens]);
        const residual = await lab.input(F32, [embd, hc, tokens]);
        const post = await lab.input(F32, [hc, tokens]);
        const comb = await lab.input(F32, [hc, hc, tokens]);
        const out = await lab.run(g.tensor({type: F32, ne: [embd, hc, tokens], op: 'DSV4_HC_POST',
            src: [x.tensor, residual.tensor, post.tensor, comb.tensor]}));
        for (let token = 0; token < tokens; token++)
            for (let dst = 0; dst < hc; dst++)
                for (let i = 0; i < embd; i++) {
                    let sum = x.values[i + token * embd]! * post.values[dst + token * hc]!;
                    for (let src = 0; src < hc; src++)
                        sum += residual.values[i + src * embd + token * embd * hc]! * comb.values[dst + src * hc + token * hc * hc]!;
                    close(t, out[i + dst * embd + token * embd * hc]!, sum, `[${i}, ${dst}, ${token}]`);
                }
    }
};

for (const [op, run] of Object.entries(REALISTIC)) {
    test.serial(`a ${op} node as llama.cpp builds it passes the checks, and the real server computes it through the guard`, async (t) => {
        const {port, exits} = await labServer(t, 2);
        let refused: Error | undefined;
        const client = new RpcLabClient(guardedConnection(port, {onRefused: (error) => refused = error}));
        t.is(await client.hello(), 6);
        const buffer = await client.buffer(16n << 20n);
        await run(new Lab(t, client, buffer));
        t.true(await client.alive());
        t.is(refused, undefined);
        t.deepEqual(exits, []);
        client.close();
    });
}

// ---------------------------------------------------------------------------------------------------------------
// 2. Seeded random nodes: each is refused, or runs on a server with no guard, which survives it.

const LAYOUTS = ['packed', 'offset', 'padded', 'permuted', 'transposed', 'strided', 'overlap', 'broadcast'] as const;
type Layout = typeof LAYOUTS[number];

/** A tensor of a case: its type, shape, and how it lies in memory (a view of a larger tensor but for `packed`). */
interface Operand {
    type: number,
    ne: number[],
    layout: Layout
}

interface Case {
    sources: (Operand | undefined)[],
    result: Operand,
    params: number[]
}

/** Places an operand: packed, or as a view with other strides (the node itself too, then a view with the op). */
function place(g: GraphBuilder, operand: Operand, node?: {op: GgmlOpName, src: (RpcTensor | undefined)[], params: number[]}): RpcTensor {
    const {type} = operand;
    const traits = GGML_TYPES[type]!;
    const [ne0, ne1, ne2, ne3] = [0, 1, 2, 3].map((dim) => operand.ne[dim] ?? 1) as [number, number, number, number];
    const ne = [ne0, ne1, ne2, ne3];
    const layout = (operand.layout === 'transposed' || operand.layout === 'strided') && traits.quantized ? 'padded' : operand.layout;
    const view = (ownerNe: number[], nb: (owner: RpcTensor) => number[] | undefined, offset?: (owner: RpcTensor) => number) => {
        const owner = g.tensor({type, ne: ownerNe});
        const strides = nb(owner);
        return g.tensor({type, ne, ...node, view: {of: owner, ...(strides && {nb: strides}), ...(offset && {offset: offset(owner)})}});
    };
    switch (layout) {
        case 'packed':
            return g.tensor({type, ne, ...node});
        case 'offset':
            return view([ne0, ne1, ne2, ne3 + 1], () => undefined, (owner) => owner.nb[3]);
        case 'padded':
            return view([ne0 + traits.blockSize, ne1, ne2, ne3], (owner) => [owner.nb[1], owner.nb[2], owner.nb[3]]);
        case 'permuted':
            return view([ne0, ne2, ne1, ne3], (owner) => [owner.nb[2], owner.nb[1], owner.nb[3]]);
        case 'overlap':
            return view(ne, (owner) => [traits.typeSize, owner.nb[2], owner.nb[3]]);
        case 'broadcast':
            return view([ne0, ne1, 1, ne3], (owner) => [owner.nb[1], 0, owner.nb[3]]);
        case 'strided': { // every other element: nb[0] is twice the type's size
            const tensor = view([2 * ne0, ne1, ne2, ne3], (owner) => [owner.nb[1], owner.nb[2], owner.nb[3]]);
            tensor.nb[0] = 2 * traits.typeSize;
            return tensor;
        }
        case 'transposed': {
            let owner: RpcTensor | undefined;
            const tensor = view([ne1, ne0, ne2, ne3], (made) => {
                owner = made;
                return [made.nb[0], made.nb[2], made.nb[3]];
            });
            tensor.nb[0] = owner!.nb[1];
            return tensor;
        }
    }
}

function graphOf(buffer: LabBuffer, op: GgmlOpName, testCase: Case) {
    const g = new GraphBuilder(buffer);
    const src = testCase.sources.map((operand) => operand && place(g, operand));
    return g.graph([place(g, testCase.result, {op, src, params: testCase.params})]);
}

type Generator = (random: Random, layout: () => Layout) => Case;

const operand = (type: number, ne: number[], layout: Layout = 'packed'): Operand => ({type, ne, layout});

/** The RWKV-style recurrences: per-token sources of S × H × T, then the state; sequences not always dividing T. */
function recurrenceCase(random: Random, layout: () => Layout, sizes: number[], tokenSources: number, first?: number): Case {
    const S = pick(random, sizes);
    const H = between(random, 1, 3);
    const seqs = between(random, 1, 3);
    const T = chance(random, 0.85) ? seqs * between(random, 1, 3) : between(random, 1, 5);
    const sources = Array.from({length: tokenSources}, () => operand(F32, [S, H, T], layout()));
    if (first !== undefined)
        sources.splice(first, 0, operand(F32, [S, H], layout()));
    const states = [[S * S * H, seqs], [S * S * H, seqs], [S * S * H, seqs], [S * S * H, seqs], [S * S * H, seqs], [S, S, H, seqs], [S * S * H * seqs]];
    sources.push(operand(F32, pick(random, states), layout()));
    return {sources, result: operand(F32, [S * H, T + S * seqs], layout()), params: []};
}

const GENERATORS: Record<string, Generator> = {
    SSM_CONV(random, layout) {
        const [dConv, dInner, nt, ns] = [pick(random, [1, 2, 3, 4]), pick(random, [1, 3, 8, 32]), between(random, 1, 6), between(random, 1, 3)];
        return {sources: [operand(F32, [dConv - 1 + nt, dInner, ns], layout()), operand(F32, [dConv, dInner], layout())],
            result: operand(F32, [dInner, nt, ns], layout()), params: []};
    },
    RWKV_WKV6: (random, layout) => recurrenceCase(random, layout, [1, 2, 4, 8, 16, 64], 4, 3),
    GATED_LINEAR_ATTN(random, layout) {
        const testCase = recurrenceCase(random, layout, [1, 2, 4, 8, 16, 64], 4);
        testCase.params = [f32(pick(random, [0.125, 0.25, 1, 0.5, 2, Number.NaN]))];
        return testCase;
    },
    RWKV_WKV7: (random, layout) => recurrenceCase(random, layout, chance(random, 0.8) ? [64, 128] : [8, 96], 6),
    SOLVE_TRI(random, layout) {
        const n = pick(random, [1, 2, 5, 16, 64]);
        const ne = [pick(random, [1, 3, n]), n, between(random, 1, 3), between(random, 1, 2)];
        return {sources: [operand(F32, [n, n, ne[2]!, ne[3]!], layout()), operand(F32, ne, layout())], result: operand(F32, ne, layout()), params: []};
    },
    GATED_DELTA_NET(random, layout) {
        const [S, Hk, T, seqs] = [pick(random, [1, 2, 4, 8, 32]), between(random, 1, 2), between(random, 1, 4), between(random, 1, 2)];
        const H = Hk * between(random, 1, 2);
        const K = pick(random, [1, 1, 2, 3, 6]);
        const qSeqs = chance(random, 0.85) ? seqs : between(random, 1, 3);
        const qk = () => operand(F32, [S, chance(random, 0.9) ? Hk : H + 1, T, qSeqs], layout());
        return {
            sources: [qk(), qk(), operand(F32, [S, H, T, seqs], layout()), operand(F32, [chance(random, 0.4) ? S : 1, H, T, seqs], layout()),
                operand(F32, [1, H, T, seqs], layout()), operand(F32, [S, S, H, seqs], layout())],
            result: operand(F32, [S * H, T * seqs + K * S * seqs], layout()),
            params: [K]
        };
    },
    LIGHTNING_INDEXER(random, layout) {
        const keyType = pick(random, [F32, F16, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, I32]);
        const [embd, heads, tokens, streams, kv] = [pick(random, [32, 64, 128, 8]), between(random, 1, 4), between(random, 1, 4), between(random, 1, 2), between(random, 1, 20)];
        return {
            sources: [operand(F32, [embd, heads, tokens, streams], layout()), operand(keyType, [embd, 1, kv, streams], layout()),
                operand(F32, [heads, tokens, 1, streams], layout()), operand(pick(random, [F16, F16, F16, F32]), [kv, tokens, 1, pick(random, [1, streams])], layout())],
            result: operand(F32, [kv, tokens, 1, streams], layout()),
            params: []
        };
    },
    DSV4_HC_COMB(random, layout) {
        const tokens = between(random, 1, 8);
        const mix = chance(random, 0.9) ? 24 : pick(random, [15, 35, 8]);
        return {
            sources: [operand(F32, [mix, tokens], layout()), operand(F32, [chance(random, 0.9) ? 3 : pick(random, [4, 2])], layout()), operand(F32, [mix], layout())],
            result: operand(F32, [4, 4, tokens], layout()),
            params: chance(random, 0.8) ? [f32(pick(random, [1e-6, 0])), pick(random, [1, 20, 100])]
                : [f32(pick(random, [1e-6, -1, Number.NaN])), pick(random, [20, 101, 0, -1])]
        };
    },
    DSV4_HC_PRE(random, layout) {
        const [embd, hc, tokens] = [between(random, 1, 64), between(random, 1, 5), between(random, 1, 5)];
        return {sources: [operand(F32, [embd, hc, tokens], layout()), operand(F32, [hc, tokens], layout())], result: operand(F32, [embd, tokens], layout()), params: []};
    },
    DSV4_HC_POST(random, layout) {
        const [embd, hc, tokens] = [between(random, 1, 64), between(random, 1, 5), between(random, 1, 5)];
        return {
            sources: [operand(F32, [embd, tokens], layout()), operand(F32, [embd, hc, tokens], layout()), operand(F32, [hc, tokens], layout()),
                operand(F32, [hc, hc, tokens], layout())],
            result: operand(F32, [embd, hc, tokens], layout()),
            params: []
        };
    }
};

const MUTATED_TYPES = [F32, F16, BF16, I32, Q8_0, Q4_0];
const PARAM_VALUES = [0, 1, -1, 2, 3, 20, 1000, 0x7fffffff, -0x80000000, f32(Number.NaN), f32(Number.POSITIVE_INFINITY), f32(-1), f32(1e-6), f32(0.125)];

/** Up to two mistakes in a case: a dimension, a type, a layout, an op parameter, a source missing, extra or swapped. */
function mutate(random: Random, testCase: Case) {
    const operands = () => [...testCase.sources.filter((source) => source !== undefined), testCase.result];
    for (let count = pick(random, [0, 0, 0, 1, 1, 2]); count > 0; count--) {
        const target = pick(random, operands());
        switch (pick(random, ['dim', 'dim', 'dim', 'type', 'layout', 'param', 'drop', 'extra', 'swap'] as const)) {
            case 'dim': {
                const dim = between(random, 0, 3);
                const n = target.ne[dim] ?? 1;
                target.ne = [0, 1, 2, 3].map((d) => d === dim ? Math.max(1, pick(random, [n + 1, n - 1, 1, 2 * n, between(random, 1, 9)])) : target.ne[d] ?? 1);
                break;
            }
            case 'type':
                target.type = pick(random, MUTATED_TYPES);
                break;
            case 'layout':
                target.layout = pick(random, LAYOUTS);
                break;
            case 'param':
                testCase.params[pick(random, [0, 0, 1, 1, 2, 15])] = pick(random, PARAM_VALUES);
                testCase.params = Array.from(testCase.params, (value) => value ?? 0);
                break;
            case 'drop':
                testCase.sources[between(random, 0, testCase.sources.length - 1)] = undefined;
                break;
            case 'extra':
                if (testCase.sources.length < 10)
                    testCase.sources.push({...target, ne: [...target.ne]});
                break;
            case 'swap': {
                const [a, b] = [between(random, 0, testCase.sources.length - 1), between(random, 0, testCase.sources.length - 1)];
                [testCase.sources[a], testCase.sources[b]] = [testCase.sources[b], testCase.sources[a]];
                break;
            }
        }
    }
    return testCase;
}

const CASES = 300;
const MIN_ACCEPTED = 60;

for (const [op, generate] of Object.entries(GENERATORS)) {
    test.serial(`${op}: ${CASES} seeded random nodes are refused or run on an unguarded server, which survives each`, async (t) => {
        const {port, exits} = await labServer(t, 2);
        const client = new RpcLabClient(directConnection(port));
        await client.hello();
        const buffer = await client.buffer(64n << 20n);
        const seed = [...op].reduce((hash, char) => Math.imul(hash ^ char.charCodeAt(0), 16_777_619), 2_166_136_261);
        const random = prng(seed);
        let accepted = 0;
        let viewed = 0;
        const refusals = new Map<GraphRule, number>();
        for (let index = 0; index < CASES; index++) {
            // Some cases all packed, others with a few views or many: ops of many sources would be refused every time.
            const views = pick(random, [0, 0.1, 0.3]);
            const layout = () => chance(random, views) ? pick(random, LAYOUTS) : 'packed';
            const testCase = mutate(random, generate(random, layout));
            const payload = graphOf(buffer, op as GgmlOpName, testCase);
            try {
                checkGraph(payload, sessionOf(buffer));
            } catch (error) {
                if (!(error instanceof GraphCheckError))
                    throw error;
                refusals.set(error.rule, (refusals.get(error.rule) ?? 0) + 1);
                continue;
            }
            accepted++;
            if ([...testCase.sources, testCase.result].some((operand) => operand !== undefined && operand.layout !== 'packed'))
                viewed++;
            await client.graphCompute(payload);
            const alive = await client.alive().catch(() => false);
            if (!alive) {
                const exit = await exitOf(exits);
                t.fail(`the server died on case ${index} (seed ${seed}): ${JSON.stringify(testCase)}; exit ${JSON.stringify(exit)}`);
                return;
            }
        }
        t.log(`${accepted} of ${CASES} accepted and computed (${viewed} with views); refused: ${JSON.stringify(Object.fromEntries(refusals))}`);
        t.true(accepted >= MIN_ACCEPTED, `only ${accepted} of ${CASES} cases accepted`);
        t.true(CASES - accepted >= MIN_ACCEPTED, `only ${CASES - accepted} of ${CASES} cases refused`);
        t.deepEqual(exits, []);
        client.close();
    });
}

// ---------------------------------------------------------------------------------------------------------------
// 3. The dangerous mistakes, each beside the valid node it breaks (no server: a made-up buffer).

const FAKE: LabBuffer = {handle: 0x51n, size: 1n << 30n, base: 0x7f00_0000_0000n};

/** `build(g, false)` passes; `build(g, true)` fails with `rule`, its message matching `message`. */
function contrast(t: ExecutionContext, build: (g: GraphBuilder, broken: boolean) => RpcTensor, rule: GraphRule, message: RegExp) {
    const payload = (broken: boolean) => {
        const g = new GraphBuilder(FAKE);
        return g.graph([build(g, broken)]);
    };
    t.notThrows(() => checkGraph(payload(false), sessionOf(FAKE)));
    const error = t.throws(() => checkGraph(payload(true), sessionOf(FAKE)), {instanceOf: GraphCheckError});
    t.is(error?.rule, rule, error?.message);
    t.regex(error?.message ?? '', message);
}

/** An RWKV-style node: S × H × T per-token sources, the state for `seqs` sequences. */
function recurrence(g: GraphBuilder, op: 'RWKV_WKV6' | 'GATED_LINEAR_ATTN' | 'RWKV_WKV7', [S, H, T, seqs]: number[],
    options: {first?: number[], r?: number[], result?: number[], scale?: number} = {}) {
    const token = (ne = [S!, H!, T!]) => g.tensor({type: F32, ne});
    const state = g.tensor({type: F32, ne: [S! * S! * H!, seqs!]});
    const result = {type: F32, ne: options.result ?? [S! * H!, T! + S! * seqs!]};
    if (op === 'RWKV_WKV6')
        return g.tensor({...result, op, src: [token(), token(), token(), token(options.first ?? [S!, H!]), token(), state]});
    if (op === 'GATED_LINEAR_ATTN')
        return g.tensor({...result, op, src: [token(), token(), token(), token(), state], params: [f32(options.scale ?? 0.125)]});
    return g.tensor({...result, op, src: [token(options.r), token(), token(), token(), token(), token(), state]});
}

function deltaNet(g: GraphBuilder, options: {qSeqs?: number, gate?: number[], S?: number, K?: number, rows?: number} = {}) {
    const [S, H, T, seqs] = [options.S ?? 16, 2, 3, 1];
    const K = options.K ?? 1;
    const q = g.tensor({type: F32, ne: [S, H, T, options.qSeqs ?? seqs]});
    const k = g.tensor({type: F32, ne: [S, H, T, options.qSeqs ?? seqs]});
    const v = g.tensor({type: F32, ne: [S, H, T, seqs]});
    const gate = g.tensor({type: F32, ne: options.gate ?? [1, H, T, seqs]});
    const beta = g.tensor({type: F32, ne: [1, H, T, seqs]});
    const state = g.tensor({type: F32, ne: [S, S, H, seqs]});
    return g.tensor({type: F32, ne: [S * H, options.rows ?? T * seqs + K * S * seqs], op: 'GATED_DELTA_NET', src: [q, k, v, gate, beta, state], params: [K]});
}

function indexer(g: GraphBuilder, options: {keyType?: number, maskType?: number, keyHeads?: number, transposedQ?: boolean, embd?: number} = {}) {
    const [embd, heads, tokens, kv] = [options.embd ?? 64, 2, 3, 8];
    let q = g.tensor({type: F32, ne: [embd, heads, tokens]});
    if (options.transposedQ) {
        const owner = g.tensor({type: F32, ne: [heads, embd, tokens]});
        q = g.tensor({type: F32, ne: [embd, heads, tokens], view: {of: owner, nb: [4, owner.nb[2], owner.nb[3]]}});
        q.nb[0] = owner.nb[1];
    }
    const k = g.tensor({type: options.keyType ?? F16, ne: [embd, options.keyHeads ?? 1, kv]});
    const w = g.tensor({type: F32, ne: [heads, tokens]});
    const mask = g.tensor({type: options.maskType ?? F16, ne: [kv, tokens]});
    return g.tensor({type: F32, ne: [kv, tokens], op: 'LIGHTNING_INDEXER', src: [q, k, w, mask]});
}

function hcComb(g: GraphBuilder, options: {mix?: number, params?: number[]} = {}) {
    const mix = options.mix ?? 24;
    return g.tensor({type: F32, ne: [4, 4, 5], op: 'DSV4_HC_COMB', params: options.params ?? [f32(1e-6), 20],
        src: [g.tensor({type: F32, ne: [mix, 5]}), g.tensor({type: F32, ne: [3]}), g.tensor({type: F32, ne: [mix]})]});
}

/** A vector of ne[0] 1 whose one element per row sits 8 bytes apart: `ggml_is_contiguous` ignores nb[0] then. */
function oneWide(g: GraphBuilder, rows: number, strided: boolean) {
    if (!strided)
        return g.tensor({type: F32, ne: [1, rows]});
    const owner = g.tensor({type: F32, ne: [2, rows]});
    const tensor = g.tensor({type: F32, ne: [1, rows], view: {of: owner, nb: [owner.nb[1], owner.nb[2], owner.nb[3]]}});
    tensor.nb[0] = 8;
    return tensor;
}

/** SSM_CONV with a one-tap convolution (d_conv 1). */
function ssmConvOneTap(g: GraphBuilder, stridedWeights: boolean) {
    return g.tensor({type: F32, ne: [16, 8, 1], op: 'SSM_CONV', src: [g.tensor({type: F32, ne: [8, 16, 1]}), oneWide(g, 16, stridedWeights)]});
}

/** LIGHTNING_INDEXER with one index head. */
function indexerOneHead(g: GraphBuilder, stridedWeights: boolean) {
    const [embd, tokens, kv] = [64, 3, 8];
    return g.tensor({type: F32, ne: [kv, tokens], op: 'LIGHTNING_INDEXER', src: [g.tensor({type: F32, ne: [embd, 1, tokens]}),
        g.tensor({type: F16, ne: [embd, 1, kv]}), oneWide(g, tokens, stridedWeights), g.tensor({type: F16, ne: [kv, tokens]})]});
}

const REJECTIONS: [string, (g: GraphBuilder, broken: boolean) => RpcTensor, GraphRule, RegExp][] = [
    ['SSM_CONV: f16 conv weights (the kernel reads f32)', (g, broken) => g.tensor({type: F32, ne: [16, 8, 1], op: 'SSM_CONV',
        src: [g.tensor({type: F32, ne: [11, 16, 1]}), g.tensor({type: broken ? F16 : F32, ne: [4, 16]})]}), 'op-type', /weights is f16/],
    ['SSM_CONV: input rows not packed (the window runs on by ne[0])', (g, broken) => {
        const owner = g.tensor({type: F32, ne: [broken ? 12 : 11, 16, 1]});
        const sx = broken ? g.tensor({type: F32, ne: [11, 16, 1], view: {of: owner, nb: [owner.nb[1], owner.nb[2], owner.nb[3]]}}) : owner;
        return g.tensor({type: F32, ne: [16, 8, 1], op: 'SSM_CONV', src: [sx, g.tensor({type: F32, ne: [4, 16]})]});
    }, 'strides', /rows must be packed/],
    ['SSM_CONV: transposed conv weights', (g, broken) => {
        const owner = g.tensor({type: F32, ne: [16, 4]});
        const w = broken ? g.tensor({type: F32, ne: [4, 16], view: {of: owner, nb: [4, owner.nb[2], owner.nb[3]]}}) : g.tensor({type: F32, ne: [4, 16]});
        if (broken)
            w.nb[0] = owner.nb[1];
        return g.tensor({type: F32, ne: [16, 8, 1], op: 'SSM_CONV', src: [g.tensor({type: F32, ne: [11, 16, 1]}), w]});
    }, 'strides', /elements of the weights must be packed/],
    ['SSM_CONV: d_conv 1 with strided weights (contiguous to ggml, but the kernel asserts nb[0] == 4)', ssmConvOneTap, 'strides', /elements of the weights must be packed/],
    ['SSM_CONV: more tokens out than windows in', (g, broken) => g.tensor({type: F32, ne: [16, broken ? 9 : 8, 1], op: 'SSM_CONV',
        src: [g.tensor({type: F32, ne: [11, 16, 1]}), g.tensor({type: F32, ne: [4, 16]})]}), 'op-shape', /the result is/],
    ['RWKV_WKV6: more sequences than tokens (t % (T / n_seqs) divides by zero)', (g, broken) =>
        recurrence(g, 'RWKV_WKV6', [8, 2, 2, broken ? 3 : 2]), 'op-shape', /2 tokens do not split into 3 sequences/],
    ['RWKV_WKV6: tokens not split evenly (the state index runs past n_seqs)', (g, broken) =>
        recurrence(g, 'RWKV_WKV6', [8, 2, broken ? 5 : 4, 2]), 'op-shape', /5 tokens do not split into 2 sequences/],
    ['RWKV_WKV6: a time_first smaller than S × H (read at h·S + i)', (g, broken) =>
        recurrence(g, 'RWKV_WKV6', [8, 2, 4, 2], {first: broken ? [8, 1] : [8, 2]}), 'op-shape', /time first is/],
    ['RWKV_WKV6: a result too small for the new states', (g, broken) =>
        recurrence(g, 'RWKV_WKV6', [8, 2, 4, 2], {result: [16, broken ? 4 + 8 : 4 + 16]}), 'op-shape', /the result is/],
    ['GATED_LINEAR_ATTN: a NaN scale', (g, broken) =>
        recurrence(g, 'GATED_LINEAR_ATTN', [8, 2, 4, 2], {scale: broken ? Number.NaN : 0.125}), 'op-params', /scale is NaN/],
    ['GATED_LINEAR_ATTN: more sequences than tokens', (g, broken) =>
        recurrence(g, 'GATED_LINEAR_ATTN', [8, 2, 1, broken ? 2 : 1]), 'op-shape', /do not split/],
    ['RWKV_WKV7: a head size the SIMD kernel overruns (not a multiple of 64)', (g, broken) =>
        recurrence(g, 'RWKV_WKV7', [broken ? 32 : 64, 1, 2, 1]), 'op-shape', /head size of 32/],
    ['RWKV_WKV7: r, which the builder does not check, shorter than the other sources', (g, broken) =>
        recurrence(g, 'RWKV_WKV7', [64, 2, 4, 2], {r: broken ? [64, 2, 2] : [64, 2, 4]}), 'op-shape', /r is/],
    ['SOLVE_TRI: A not square', (g, broken) => g.tensor({type: F32, ne: [4, 8, 2], op: 'SOLVE_TRI',
        src: [g.tensor({type: F32, ne: [broken ? 4 : 8, 8, 2]}), g.tensor({type: F32, ne: [4, 8, 2]})]}), 'op-shape', /cannot solve/],
    ['SOLVE_TRI: B a non-contiguous view (the kernel indexes it packed)', (g, broken) => {
        const owner = g.tensor({type: F32, ne: [8, 8, 2]});
        const b = broken ? g.tensor({type: F32, ne: [4, 8, 2], view: {of: owner, nb: [owner.nb[1], owner.nb[2], owner.nb[3]]}}) : g.tensor({type: F32, ne: [4, 8, 2]});
        return g.tensor({type: F32, ne: [4, 8, 2], op: 'SOLVE_TRI', src: [g.tensor({type: F32, ne: [8, 8, 2]}), b]});
    }, 'strides', /B must be contiguous/],
    ['SOLVE_TRI: a result with fewer batches than A and B', (g, broken) => g.tensor({type: F32, ne: [4, 8, broken ? 1 : 2], op: 'SOLVE_TRI',
        src: [g.tensor({type: F32, ne: [8, 8, 2]}), g.tensor({type: F32, ne: [4, 8, 2]})]}), 'op-shape', /the result is/],
    ['GATED_DELTA_NET: q and k with more sequences than v (v->ne[3] / q->ne[3] is 0, then divides)', (g, broken) =>
        deltaNet(g, {qSeqs: broken ? 2 : 1}), 'op-shape', /do not fit v/],
    ['GATED_DELTA_NET: a gate for fewer tokens than v (the kernel walks it by v\'s shape)', (g, broken) =>
        deltaNet(g, {gate: [1, 2, broken ? 1 : 3, 1]}), 'op-shape', /the gate is/],
    ['GATED_DELTA_NET: no state snapshot (K = 0)', (g, broken) => deltaNet(g, {K: broken ? 0 : 1, rows: 3 + 16}), 'op-params', /0 state snapshots/],
    ['GATED_DELTA_NET: a result without room for K snapshots', (g, broken) => deltaNet(g, {K: 3, rows: broken ? 3 + 16 : 3 + 48}), 'op-shape', /the result is/],
    ['GATED_DELTA_NET: snapshots of huge heads (a work buffer of S_v² floats per thread)', (g, broken) =>
        deltaNet(g, {S: broken ? 1040 : 1024, K: 2}), 'op-shape', /snapshots of heads of 1040/],
    ['LIGHTNING_INDEXER: i32 keys (no to_float: GGML_ASSERT)', (g, broken) => indexer(g, {keyType: broken ? I32 : Q8_0}), 'op-type', /keys is i32/],
    ['LIGHTNING_INDEXER: an f32 mask (read as f16)', (g, broken) => indexer(g, {maskType: broken ? F32 : F16}), 'op-type', /mask is f32/],
    ['LIGHTNING_INDEXER: one head\'s weights strided (contiguous to ggml, but the kernel asserts nb[0] == 4)', indexerOneHead, 'strides',
        /elements of the weights must be packed/],
    ['LIGHTNING_INDEXER: index heads so wide the kernel\'s int offset of its work slice overflows', (g, broken) =>
        indexer(g, {embd: broken ? 65_536 + 32 : 65_536}), 'op-shape', /index heads of 65568/],
    ['LIGHTNING_INDEXER: keys with several heads', (g, broken) => indexer(g, {keyHeads: broken ? 2 : 1}), 'op-shape', /keys/],
    ['LIGHTNING_INDEXER: transposed q (the kernel asserts packed rows)', (g, broken) => indexer(g, {transposedQ: broken}), 'strides', /elements of q must be packed/],
    ['DSV4_HC_COMB: hc 3 (the kernel is written for 4)', (g, broken) => hcComb(g, {mix: broken ? 15 : 24}), 'op-shape', /mixes is/],
    ['DSV4_HC_COMB: 2³¹ - 1 Sinkhorn iterations (a loop of hours per token)', (g, broken) =>
        hcComb(g, {params: [f32(1e-6), broken ? 0x7fffffff : 100]}), 'op-params', /2147483647 Sinkhorn iterations/],
    ['DSV4_HC_COMB: no iteration', (g, broken) => hcComb(g, {params: [f32(1e-6), broken ? 0 : 1]}), 'op-params', /0 Sinkhorn iterations/],
    ['DSV4_HC_COMB: a NaN epsilon', (g, broken) => hcComb(g, {params: [f32(broken ? Number.NaN : 0), 20]}), 'op-params', /epsilon is NaN/],
    ['DSV4_HC_PRE: weights for fewer tokens than x', (g, broken) => g.tensor({type: F32, ne: [64, 5], op: 'DSV4_HC_PRE',
        src: [g.tensor({type: F32, ne: [64, 4, 5]}), g.tensor({type: F32, ne: [4, broken ? 4 : 5]})]}), 'op-shape', /weights is/],
    ['DSV4_HC_PRE: f16 x', (g, broken) => g.tensor({type: F32, ne: [64, 5], op: 'DSV4_HC_PRE',
        src: [g.tensor({type: broken ? F16 : F32, ne: [64, 4, 5]}), g.tensor({type: F32, ne: [4, 5]})]}), 'op-type', /x is f16/],
    ['DSV4_HC_POST: a comb for fewer streams than the residual', (g, broken) => g.tensor({type: F32, ne: [64, 4, 5], op: 'DSV4_HC_POST',
        src: [g.tensor({type: F32, ne: [64, 5]}), g.tensor({type: F32, ne: [64, 4, 5]}), g.tensor({type: F32, ne: [4, 5]}),
            g.tensor({type: F32, ne: [4, broken ? 3 : 4, 5]})]}), 'op-shape', /comb is/],
    ['DSV4_HC_POST: a result for more tokens', (g, broken) => g.tensor({type: F32, ne: [64, 4, broken ? 6 : 5], op: 'DSV4_HC_POST',
        src: [g.tensor({type: F32, ne: [64, 5]}), g.tensor({type: F32, ne: [64, 4, 5]}), g.tensor({type: F32, ne: [4, 5]}),
            g.tensor({type: F32, ne: [4, 4, 5]})]}), 'op-shape', /the result is/]
];

for (const [name, build, rule, message] of REJECTIONS)
    test.serial(`refused: ${name}`, (t) => contrast(t, build, rule, message));

// ---------------------------------------------------------------------------------------------------------------
// 4. What some of these mistakes do to a server with no guard: they kill it, or write past the result.

/** Mamba-2's scan, with `ids` (the sequences' state rows) as given; the state rows are 128 KiB apart. */
function ssmScan(g: GraphBuilder) {
    const [dState, headDim, heads, tokens] = [128, 64, 4, 2];
    const s = g.tensor({type: F32, ne: [dState, headDim, heads, 1]});
    const x = g.tensor({type: F32, ne: [headDim, heads, tokens, 1]});
    const dt = g.tensor({type: F32, ne: [heads, tokens, 1]});
    const A = g.tensor({type: F32, ne: [1, heads]});
    const B = g.tensor({type: F32, ne: [dState, 1, tokens, 1]});
    const C = g.tensor({type: F32, ne: [dState, 1, tokens, 1]});
    const ids = g.tensor({type: I32, ne: [1]});
    const y = g.tensor({type: F32, ne: [headDim * heads * tokens + dState * headDim * heads], op: 'SSM_SCAN', src: [s, x, dt, A, B, C, ids], params: [1]});
    return {y, ids};
}

test.serial('SSM_SCAN stays refused: its kernel reads the state at an unchecked sequence id, and a hostile id kills the server', async (t) => {
    const probe = new GraphBuilder(FAKE);
    const error = t.throws(() => checkGraph(probe.graph([ssmScan(probe).y]), sessionOf(FAKE)), {instanceOf: GraphCheckError});
    t.is(error?.rule, 'op');

    const {port, exits} = await labServer(t);
    const client = new RpcLabClient(directConnection(port));
    await client.hello();
    const buffer = await client.buffer(4n << 20n);
    const g = new GraphBuilder(buffer);
    const {y, ids} = ssmScan(g);
    await client.setTensor(ids, Buffer.from(Int32Array.of(0x7fffffff).buffer)); // 2³¹ rows of 128 KiB on: past any address
    await client.graphCompute(g.graph([y]));
    await t.throwsAsync(client.alive());
    t.is((await exitOf(exits))?.signal, 'SIGSEGV');
});

const DEADLY: [string, (g: GraphBuilder) => RpcTensor, NodeJS.Signals][] = [
    ['GATED_DELTA_NET with q of more sequences than v divides by zero', (g) => deltaNet(g, {qSeqs: 2}), 'SIGFPE'],
    ['RWKV_WKV6 with more sequences than tokens divides by zero', (g) => recurrence(g, 'RWKV_WKV6', [8, 2, 2, 3]), 'SIGFPE'],
    ['SSM_CONV with strided one-tap weights fails the kernel\'s GGML_ASSERT', (g) => ssmConvOneTap(g, true), 'SIGABRT'],
    ['LIGHTNING_INDEXER with one head\'s weights strided fails the kernel\'s GGML_ASSERT', (g) => indexerOneHead(g, true), 'SIGABRT']
];

for (const [name, build, signal] of DEADLY) {
    test.serial(`refused, and deadly unguarded: ${name}`, async (t) => {
        const probe = new GraphBuilder(FAKE);
        t.throws(() => checkGraph(probe.graph([build(probe)]), sessionOf(FAKE)), {instanceOf: GraphCheckError});
        const {port, exits} = await labServer(t);
        const client = new RpcLabClient(directConnection(port));
        await client.hello();
        const g = new GraphBuilder(await client.buffer(4n << 20n));
        await client.graphCompute(g.graph([build(g)]));
        await t.throwsAsync(client.alive());
        t.is((await exitOf(exits))?.signal, signal);
    });
}

test.serial('refused, and unguarded writes past its result: RWKV_WKV7 with a head size of 8 (the SIMD kernel steps by 32 or 64 floats)', async (t) => {
    const build = (g: GraphBuilder) => recurrence(g, 'RWKV_WKV7', [8, 1, 1, 1]);
    const probe = new GraphBuilder(FAKE);
    t.throws(() => checkGraph(probe.graph([build(probe)]), sessionOf(FAKE)), {instanceOf: GraphCheckError});
    const {port} = await labServer(t);
    const client = new RpcLabClient(directConnection(port));
    await client.hello();
    const g = new GraphBuilder(await client.buffer(1n << 20n));
    const node = build(g);
    const sentinel = g.tensor({type: F32, ne: [256]}); // the next tensor in the buffer, right after the result
    await client.setTensor(sentinel, Buffer.from(new Float32Array(256).fill(12_345).buffer));
    await client.graphCompute(g.graph([node]));
    t.true(await client.alive());
    const after = new Float32Array(new Uint8Array(await client.getTensor(sentinel, 1024)).buffer);
    t.true(after.some((value) => value !== 12_345), 'the tensor after the result is overwritten');
});
