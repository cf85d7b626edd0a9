/**
 * Contracts of the recurrent and state-space ops (Mamba, RWKV, gated linear and delta-net attention, DeepSeek's
 * indexer and hyper-connections; docs/peer-protocol.md, "Graph checks"), as ggml's graph builders and its CPU
 * kernels state them. The kernels walk their sources as packed arrays sized from one source's shape, so each
 * contract pins every shape a kernel reads by, and the packing it assumes; types are those llama.cpp's graphs give
 * each op (all f32 but the indexer's cached keys and its f16 mask).
 */
import type {GraphNode} from './graph-node.js';
import {GgmlType} from './ggml-tables.js';
import {type Contract, dims, elements, type OpRule, refusedUntilWritten, rule} from './op-rule-kit.js';

const {F32, F16, BF16} = GgmlType;

/** The KV cache types llama.cpp offers (its `--cache-type-k`): those of the indexer's cached keys. */
const CACHE_K_TYPES: number[] = [F32, F16, BF16, 8 /* q8_0 */, 2 /* q4_0 */, 3 /* q4_1 */, 20 /* iq4_nl */, 6 /* q5_0 */, 7 /* q5_1 */];

/** The widest SIMD step of ggml's CPU kernels, in floats (`GGML_F32_STEP` with AVX-512). */
const F32_STEP_MAX = 64;

/** The result ggml's builder makes: a new packed tensor of this type and shape (the kernels write it as one). */
function result(c: Contract, node: GraphNode, ne: readonly number[], type = F32) {
    c.result(node, type, ne);
    c.contiguous(node, 'the result');
}

/** Each tensor is f32. */
function f32s(c: Contract, tensors: readonly [GraphNode, string][]) {
    for (const [tensor, role] of tensors)
        c.type(tensor, role, F32);
}

/**
 * SSM_CONV (`ggml_ssm_conv`, `ggml_compute_forward_ssm_conv_f32`): a d_conv-wide window slides along sx's packed
 * rows. The kernel asserts nb[0] == 4 for both, reads the weights as packed rows too, and indexes with `int`s.
 */
const ssmConv = rule((c, node) => {
    const [sx, w] = c.all(2) as [GraphNode, GraphNode];
    f32s(c, [[sx, 'the input'], [w, 'the weights']]);
    const [dConv, dInner] = w.ne;
    c.need(sx.ne[3] === 1 && w.ne[2] === 1 && w.ne[3] === 1, 'op-shape', () => `convolves ${dims(sx)} with ${dims(w)}`);
    c.need(sx.ne[1] === dInner && sx.ne[0] >= dConv, 'op-shape', () => `${dims(sx)} holds no window of ${dims(w)}`);
    c.need(sx.nb[0] === 4 && sx.nb[1] === 4 * sx.ne[0], 'strides', 'the input\'s rows must be packed one after the other');
    c.packed(w, 'the weights');
    c.contiguous(w, 'the weights');
    c.need(elements(sx) < 2 ** 31 && elements(w) < 2 ** 31, 'op-shape', 'more elements than the kernel\'s int indices reach');
    result(c, node, [dInner, sx.ne[0] - dConv + 1, sx.ne[2], 1]);
    c.unusedParams(0);
});

/**
 * The RWKV-style recurrences (`ggml_rwkv_wkv6`, `ggml_gated_linear_attn`, `ggml_rwkv_wkv7`): per-token tensors of
 * S × H × T, a state of S·S·H per sequence, and a result of the outputs then the new states. The kernels split T
 * evenly into state->ne[1] sequences (`t % (T / n_seqs)`: a zero divisor when there are more sequences than tokens)
 * and walk every source as a packed array; builders leave some shapes unchecked (wkv6's time_first, wkv7's r).
 */
function recurrence(c: Contract, node: GraphNode, tokens: readonly [GraphNode, string][], state: GraphNode) {
    const [first] = tokens[0]!;
    const [S, H, T] = first.ne;
    for (const [tensor, role] of [...tokens, [state, 'the state'] as const]) {
        c.type(tensor, role, F32);
        c.contiguous(tensor, role);
    }
    for (const [tensor, role] of tokens)
        c.shape(tensor, role, [S, H, T, 1]);
    const seqs = state.ne[1];
    c.need(elements(state) === S * S * H * seqs, 'op-shape', () => `a state of ${dims(state)} for ${seqs} sequences of ${H} heads of ${S}`);
    c.need(T % seqs === 0, 'op-shape', () => `${T} tokens do not split into ${seqs} sequences`);
    result(c, node, [S * H, T + S * seqs, 1, 1]);
    return S;
}

/** RWKV_WKV6: k, v, r, time_first (S × H, unchecked by the builder), time_decay, state. */
const rwkvWkv6 = rule((c, node) => {
    const [k, v, r, first, decay, state] = c.all(6) as GraphNode[];
    recurrence(c, node, [[k!, 'k'], [v!, 'v'], [r!, 'r'], [decay!, 'the time decay']], state!);
    c.type(first!, 'the time first', F32);
    c.contiguous(first!, 'the time first');
    c.shape(first!, 'the time first', [k!.ne[0], k!.ne[1], 1, 1]);
    c.unusedParams(0);
});

/** GATED_LINEAR_ATTN: k, v, q, g, state, and a float scale in op_params[0]. */
const gatedLinearAttention = rule((c, node) => {
    const [k, v, q, g, state] = c.all(5) as GraphNode[];
    recurrence(c, node, [[k!, 'k'], [v!, 'v'], [q!, 'q'], [g!, 'g']], state!);
    c.finite(0, 'the scale');
    c.unusedParams(1);
});

/**
 * RWKV_WKV7: r, w, k, v, a, b, state. The x86 and NEON kernel steps each head by `GGML_F32_STEP` floats with no
 * remainder loop: a head size not a multiple of the widest step reads and writes past the head (and the result).
 */
const rwkvWkv7 = rule((c, node) => {
    const [r, w, k, v, a, b, state] = c.all(7) as GraphNode[];
    const S = recurrence(c, node, [[k!, 'k'], [r!, 'r'], [w!, 'w'], [v!, 'v'], [a!, 'a'], [b!, 'b']], state!);
    c.need(S % F32_STEP_MAX === 0, 'op-shape', `a head size of ${S}, not a multiple of ${F32_STEP_MAX}`);
    c.unusedParams(0);
});

/**
 * SOLVE_TRI (`ggml_solve_tri`, `ggml_compute_forward_solve_tri_f32`): A·X = B for lower-triangular A, per batch;
 * the kernel indexes A, B and X as packed matrices. Only the left, lower, non-unit variant exists (no op_params).
 */
const solveTri = rule((c, node) => {
    const [a, b] = c.all(2) as [GraphNode, GraphNode];
    f32s(c, [[a, 'A'], [b, 'B']]);
    c.need(a.ne[0] === a.ne[1] && a.ne[1] === b.ne[1] && a.ne[2] === b.ne[2] && a.ne[3] === b.ne[3], 'op-shape',
        () => `cannot solve ${dims(a)} for ${dims(b)}`);
    c.contiguous(a, 'A');
    c.contiguous(b, 'B');
    result(c, node, b.ne);
    c.unusedParams(0);
});

/** The head size up to which a snapshotting delta net's per-thread work buffer (S_v² floats) is allowed. */
const DELTA_NET_MAX_HEAD = 1024;

/**
 * GATED_DELTA_NET (`ggml_gated_delta_net`, `ggml_compute_forward_gated_delta_net_one_chunk`): q, k, v, g, beta,
 * state; op_params[0] = K state snapshots. The kernel reads S_v floats of each q and k row and broadcasts their
 * heads and sequences by `%` and `/ (v->ne[3] / q->ne[3])` (zero when q has more sequences), and walks g and beta by
 * v's shape: so q and k are shaped as llama.cpp's delta-net graphs shape them, g and beta as v.
 */
const gatedDeltaNet = rule((c, node) => {
    const [q, k, v, g, beta, state] = c.all(6) as GraphNode[];
    f32s(c, [[q!, 'q'], [k!, 'k'], [v!, 'v'], [g!, 'the gate'], [beta!, 'beta'], [state!, 'the state']]);
    const [S, H, T, seqs] = v!.ne;
    for (const [tensor, role] of [[q!, 'q'], [k!, 'k'], [v!, 'v']] as const)
        c.contiguousRows(tensor, role);
    for (const [tensor, role] of [[g!, 'the gate'], [beta!, 'beta'], [state!, 'the state']] as const)
        c.contiguous(tensor, role);
    c.sameShape(q!, k!, 'q and k');
    c.need(q!.ne[0] === S && H % q!.ne[1] === 0 && q!.ne[2] === T && q!.ne[3] === seqs, 'op-shape',
        () => `q and k ${dims(q!)} do not fit v ${dims(v!)}`);
    c.need(g!.ne[0] === 1 || g!.ne[0] === S, 'op-shape', 'the gate is a scalar or a vector per head');
    c.shape(g!, 'the gate', [g!.ne[0], H, T, seqs]);
    c.shape(beta!, 'beta', [1, H, T, seqs]);
    c.shape(state!, 'the state', [S, S, H, seqs]);
    const snapshots = c.int(0);
    c.need(snapshots >= 1, 'op-params', `${snapshots} state snapshots`);
    c.need(snapshots === 1 || S <= DELTA_NET_MAX_HEAD, 'op-shape', `snapshots of heads of ${S}`);
    result(c, node, [S * H, T * seqs + snapshots * S * seqs, 1, 1]);
    c.unusedParams(1);
});

/** The index head size allowed (every model's is 128): the kernel's `int` offset ith·(n_embd + 16) must not overflow. */
const INDEXER_MAX_HEAD = 65_536;

/**
 * LIGHTNING_INDEXER (`ggml_lightning_indexer`, `ggml_compute_forward_lightning_indexer`): per stream, token and
 * cached key, Σ_heads relu(q·k)·weight plus the mask. The kernel asserts nb[0] == type size for all five tensors
 * and converts each key row to f32 in its thread's slice of a work buffer (ggml_graph_plan sizes it by k->ne[0]).
 */
const lightningIndexer = rule((c, node) => {
    const [q, k, w, mask] = c.all(4) as GraphNode[];
    f32s(c, [[q!, 'q'], [w!, 'the weights']]);
    c.type(k!, 'the keys', ...CACHE_K_TYPES);
    c.type(mask!, 'the mask', F16);
    c.need(q!.ne[0] === k!.ne[0] && k!.ne[1] === 1 && q!.ne[3] === k!.ne[3], 'op-shape', () => `keys ${dims(k!)} for q ${dims(q!)}`);
    c.need(q!.ne[0] <= INDEXER_MAX_HEAD, 'op-shape', `index heads of ${q!.ne[0]}`);
    c.shape(w!, 'the weights', [q!.ne[1], q!.ne[2], 1, q!.ne[3]]);
    c.need(mask!.ne[0] === k!.ne[2] && mask!.ne[1] === q!.ne[2] && mask!.ne[2] === 1 && q!.ne[3] % mask!.ne[3] === 0,
        'op-shape', () => `a mask of ${dims(mask!)} for ${k!.ne[2]} keys and ${q!.ne[2]} tokens`);
    result(c, node, [k!.ne[2], q!.ne[2], 1, q!.ne[3]]);
    for (const [tensor, role] of [[q!, 'q'], [k!, 'the keys'], [w!, 'the weights'], [mask!, 'the mask'], [node, 'the result']] as const)
        c.packed(tensor, role);
    c.unusedParams(0);
});

/** Sinkhorn iterations allowed (DeepSeek V4 runs 20): the kernel's loop per token runs that many. */
const HC_MAX_ITERATIONS = 100;

/**
 * DSV4_HC_COMB (`ggml_dsv4_hc_comb`): each token's 4 × 4 mixing matrix from its (2 + 4)·4 mixes, then Sinkhorn
 * normalisation; op_params hold eps (f32) and the iteration count, which bounds a loop.
 */
const hcComb = rule((c, node) => {
    const [mixes, scale, base] = c.all(3) as GraphNode[];
    f32s(c, [[mixes!, 'the mixes'], [scale!, 'the scale'], [base!, 'the base']]);
    const hc = 4;
    const mixDim = (2 + hc) * hc;
    c.shape(mixes!, 'the mixes', [mixDim, mixes!.ne[1], 1, 1]);
    c.need(scale!.ne[0] >= 3, 'op-shape', 'three scales');
    c.shape(scale!, 'the scale', [scale!.ne[0], 1, 1, 1]);
    c.shape(base!, 'the base', [mixDim, 1, 1, 1]);
    result(c, node, [hc, hc, mixes!.ne[1], 1]);
    c.need(c.finite(0, 'epsilon') >= 0, 'op-params', 'a negative epsilon');
    const iterations = c.int(1);
    c.need(iterations >= 1 && iterations <= HC_MAX_ITERATIONS, 'op-params', `${iterations} Sinkhorn iterations (1 to ${HC_MAX_ITERATIONS})`);
    c.unusedParams(2);
});

/** DSV4_HC_PRE (`ggml_dsv4_hc_pre`): x's hc streams per token weighted into one. */
const hcPre = rule((c, node) => {
    const [x, w] = c.all(2) as [GraphNode, GraphNode];
    f32s(c, [[x, 'x'], [w, 'the weights']]);
    const [embd, hc, tokens] = x.ne;
    c.need(x.ne[3] === 1, 'op-shape', () => `x is ${dims(x)}`);
    c.shape(w, 'the weights', [hc, tokens, 1, 1]);
    result(c, node, [embd, tokens, 1, 1]);
    c.unusedParams(0);
});

/** DSV4_HC_POST (`ggml_dsv4_hc_post`): x and the residual's hc streams mixed back into hc streams. */
const hcPost = rule((c, node) => {
    const [x, residual, post, comb] = c.all(4) as GraphNode[];
    f32s(c, [[x!, 'x'], [residual!, 'the residual'], [post!, 'post'], [comb!, 'comb']]);
    const [embd, tokens] = x!.ne;
    const hc = residual!.ne[1];
    c.shape(x!, 'x', [embd, tokens, 1, 1]);
    c.shape(residual!, 'the residual', [embd, hc, tokens, 1]);
    c.shape(post!, 'post', [hc, tokens, 1, 1]);
    c.shape(comb!, 'comb', [hc, hc, tokens, 1]);
    result(c, node, [embd, hc, tokens, 1]);
    c.unusedParams(0);
});

export const SEQUENCE_OP_RULES = {
    SSM_CONV: ssmConv,
    // Refused: ggml_compute_forward_ssm_scan_f32 reads each sequence's state at `ids[i3] * src0->nb[3]`, an index
    // from the ids tensor's data that nothing checks (no GGML_ASSERT): a graph check cannot bound it.
    SSM_SCAN: refusedUntilWritten,
    RWKV_WKV6: rwkvWkv6,
    GATED_LINEAR_ATTN: gatedLinearAttention,
    RWKV_WKV7: rwkvWkv7,
    SOLVE_TRI: solveTri,
    GATED_DELTA_NET: gatedDeltaNet,
    LIGHTNING_INDEXER: lightningIndexer,
    DSV4_HC_COMB: hcComb,
    DSV4_HC_PRE: hcPre,
    DSV4_HC_POST: hcPost
} satisfies Record<string, OpRule>;
