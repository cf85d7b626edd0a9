/**
 * Contracts of the ops of a transformer layer (docs/peer-protocol.md, "Graph checks"): each as ggml's builder in
 * ggml.c shapes its result and as the kernels (ggml-cpu/ops.cpp, binary-ops.cpp, ggml-cpu.c) assume, including
 * the kernels' `assert`s, which release builds leave out. Types are those llama.cpp's graphs give each op, which
 * every backend supports.
 */
import type {GraphNode} from './graph-check.js';
import {GGML_GLU_OP_NAMES, GGML_TYPES, GgmlType} from './ggml-tables.js';
import {type Contract, dims, elements, rule} from './op-rule-kit.js';

const {F32, F16, BF16, I32, I64} = GgmlType;
const FLOATS: number[] = [F32, F16, BF16];

/** Weight types the CPU backend can multiply (a `vec_dot` of their own): every quantized type but the activation ones. */
const MATMUL_WEIGHT_TYPES: number[] = [F32, F16, BF16, ...GGML_TYPES.flatMap((traits, type) =>
    traits?.quantized && traits.name !== 'q8_1' && traits.name !== 'q8_K' ? [type] : [])];

/** Types whose rows can be written from f32 (`from_float`): a KV cache's. */
const CACHE_TYPES = MATMUL_WEIGHT_TYPES;

/** ggml's `GGML_ROPE_TYPE_*`: normal, NeoX, multimodal, vision, interleaved multimodal. */
const ROPE_MODES = [0, 2, 8, 24, 40];
const ROPE_MROPE = 8;
const ROPE_VISION = 24;
/** `GGML_PREC_DEFAULT`, `GGML_PREC_F32`. */
const PRECISIONS = [0, 10];

/** The tensor a node's output must be (ggml's `ggml_dup_tensor`/`ggml_new_tensor`): its type and shape. */
function result(c: Contract, node: GraphNode, type: number, ne: readonly number[]) {
    c.type(node, 'the result', type);
    c.shape(node, 'the result', ne);
}

/**
 * ADD, SUB, MUL, DIV (`binary_op`): b tiles a, the result is a's shape; types as the kernel pairs them, each row of
 * a and of the result packed.
 */
const binary = rule((c, node) => {
    const [a, b] = c.all(2);
    c.repeats(b!, a!, 'the operands');
    c.sameShape(a!, node, 'the result');
    const pair = `${a!.type}/${b!.type}/${node.type}`;
    const pairs = [`${F32}/${F32}/${F32}`, `${F16}/${F16}/${F16}`, `${BF16}/${BF16}/${BF16}`, `${BF16}/${F32}/${BF16}`,
        `${BF16}/${F32}/${F32}`, `${F16}/${F32}/${F16}`, `${F16}/${F32}/${F32}`];
    c.need(pairs.includes(pair), 'op-type', 'operand and result types the kernel does not pair');
    c.contiguousRows(a!, 'the first operand');
    c.contiguousRows(node, 'the result');
});

/** A view op's node: it views its source's bytes (checked in graph-check.ts), in the source's type. */
function viewOf(c: Contract, node: GraphNode) {
    const [a] = c.all(1);
    c.need(node.view !== undefined, 'view', 'is no view of its source');
    c.need(node.view === (a!.view ?? a), 'view', 'views another tensor than its source');
    c.sameType(a!, node, 'source and view');
    return a!;
}

/** RMS_NORM and the other row-wise ops of one f32 source with an epsilon. */
const rmsNorm = rule((c, node) => {
    const [a] = c.all(1);
    c.type(a!, 'the source', F32);
    result(c, node, F32, a!.ne);
    c.contiguousRows(a!, 'the source');
    const eps = c.finite(0, 'epsilon');
    c.need(eps >= 0, 'op-params', 'a negative epsilon');
    c.unusedParams(1);
});

/** MUL_MAT (`ggml_mul_mat`, `ggml_compute_forward_mul_mat`): a's rows dotted with b's, broadcast over b. */
const mulMat = rule((c, node) => {
    const [a, b] = c.all(2);
    c.type(a!, 'the weights', ...MATMUL_WEIGHT_TYPES);
    c.need(b!.type === F32 || (b!.type === a!.type && FLOATS.includes(a!.type)), 'op-type', 'the second operand must be f32');
    c.need(a!.ne[0] === b!.ne[0] && b!.ne[2] % a!.ne[2] === 0 && b!.ne[3] % a!.ne[3] === 0, 'op-shape',
        () => `cannot multiply ${dims(a!)} by ${dims(b!)}`);
    c.need(a!.nb[0] === a!.traits.typeSize && a!.nb[0] <= a!.nb[1], 'strides', 'the weights are transposed');
    c.contiguousRows(b!, 'the second operand');
    result(c, node, F32, [a!.ne[1], b!.ne[1], b!.ne[2], b!.ne[3]]);
    c.ordered(node, 'the result');
    // `ggml_mul_mat_set_prec` (attention scores in f32)
    c.need(PRECISIONS.includes(c.int(0)), 'op-params', `precision ${c.int(0)}`);
    c.unusedParams(1);
});

/** The copy ops' (CPY, CONT) type pairs: ggml_compute_forward_dup's, without quantized types. */
function copyTypes(c: Contract, from: GraphNode, to: GraphNode) {
    const plain: number[] = [F32, F16, BF16];
    c.need(from.type === to.type ? [...plain, I32].includes(from.type)
        : (plain.includes(from.type) && plain.includes(to.type)) || (from.type === F32 && to.type === I32) || (from.type === I32 && to.type === F32),
    'op-type', 'a copy between types the kernel does not pair');
}

/** CPY (`ggml_cpy`): a's elements into b, the result a view of b. */
const cpy = rule((c, node) => {
    const [a, b] = c.all(2);
    c.need(elements(a!) === elements(b!), 'op-shape', () => `copies ${dims(a!)} into ${dims(b!)}`);
    c.need(node.view !== undefined && node.view === (b!.view ?? b) && node.data === b!.data, 'view', 'is not the destination');
    c.sameType(b!, node, 'destination and result');
    c.sameShape(b!, node, 'the result');
    copyTypes(c, a!, node);
});

/** CONT (`ggml_cont`, `ggml_cont_4d`): a's elements into a new packed tensor, maybe of another shape. */
const cont = rule((c, node) => {
    const [a] = c.all(1);
    c.need(elements(a!) === elements(node), 'op-shape', () => `${dims(a!)} cannot become ${dims(node)}`);
    c.need(node.view === undefined, 'view', 'must be a tensor of its own');
    copyTypes(c, a!, node);
});

/** RESHAPE: a packed source seen in another shape of as many elements. */
const reshape = rule((c, node) => {
    const a = viewOf(c, node);
    c.contiguous(a, 'the source');
    c.need(elements(a) === elements(node), 'op-shape', () => `${dims(a)} cannot become ${dims(node)}`);
    c.contiguous(node, 'the result');
    c.need(node.data === a.data, 'view', 'does not start where its source starts');
});

/** VIEW: any window onto its source (bounds are checked for every view); op_params hold the byte offset. */
const view = rule((c, node) => {
    const a = viewOf(c, node);
    c.need(node.data >= a.data, 'view', 'starts before its source');
});

/** PERMUTE: the source's dimensions in another order, given in op_params 0..3. */
const permute = rule((c, node) => {
    const a = viewOf(c, node);
    const axes = [c.int(0), c.int(1), c.int(2), c.int(3)];
    c.need([...axes].sort().join() === '0,1,2,3', 'op-params', `axes ${axes.join(', ')} are not a permutation`);
    axes.forEach((axis, dim) => {
        c.need(node.ne[axis] === a.ne[dim] && node.nb[axis] === a.nb[dim], 'op-shape', 'is not its source permuted');
    });
    c.need(node.data === a.data, 'view', 'does not start where its source starts');
    c.unusedParams(4);
});

/** TRANSPOSE: the source's first two dimensions swapped. */
const transpose = rule((c, node) => {
    const a = viewOf(c, node);
    c.need(node.ne[0] === a.ne[1] && node.ne[1] === a.ne[0] && node.nb[0] === a.nb[1] && node.nb[1] === a.nb[0]
        && node.ne[2] === a.ne[2] && node.ne[3] === a.ne[3] && node.nb[2] === a.nb[2] && node.nb[3] === a.nb[3]
        && node.data === a.data, 'op-shape', 'is not its source transposed');
    c.unusedParams(0);
});

/** GET_ROWS (`ggml_get_rows`): rows of a picked by b's i32 indices (each index checked by the kernel, at run time). */
const getRows = rule((c, node) => {
    const [a, b] = c.all(2);
    c.type(b!, 'the indices', I32);
    c.need(a!.ne[2] === b!.ne[1] && a!.ne[3] === b!.ne[2] && b!.ne[3] === 1, 'op-shape', () => `cannot pick rows of ${dims(a!)} by ${dims(b!)}`);
    c.type(a!, 'the rows', ...MATMUL_WEIGHT_TYPES, I32);
    c.contiguousRows(a!, 'the rows');
    result(c, node, a!.type === I32 ? I32 : F32, [a!.ne[0], b!.ne[0], b!.ne[1], b!.ne[2]]);
    c.contiguousRows(node, 'the result');
});

/** SET_ROWS (`ggml_set_rows`): b's rows written into a (the result, a view of it) at c's indices. */
const setRows = rule((c, node) => {
    const [b, indices, a] = c.all(3);
    c.need(a!.ne[0] === b!.ne[0] && a!.ne[2] === b!.ne[2] && a!.ne[3] === b!.ne[3] && b!.ne[1] === indices!.ne[0]
        && b!.ne[2] % indices!.ne[1] === 0 && b!.ne[3] % indices!.ne[2] === 0 && indices!.ne[3] === 1, 'op-shape',
    () => `cannot set rows of ${dims(a!)} from ${dims(b!)} at ${dims(indices!)}`);
    c.type(b!, 'the rows', F32, F16);
    c.type(indices!, 'the indices', I64, I32);
    c.type(a!, 'the destination', ...CACHE_TYPES);
    c.contiguousRows(a!, 'the destination');
    c.contiguousRows(b!, 'the rows');
    c.need(node.view !== undefined && node.view === (a!.view ?? a) && node.data === a!.data, 'view', 'is not the destination');
    c.sameType(a!, node, 'destination and result');
    c.sameShape(a!, node, 'the result');
    c.unusedParams(0);
});

/** SOFT_MAX (`ggml_soft_max_ext`): along rows of a packed f32 a, with an optional mask and attention sinks. */
const softMax = rule((c, node) => {
    const [a, mask, sinks] = c.sources(1, 3);
    c.type(a!, 'the source', F32);
    c.contiguous(a!, 'the source');
    result(c, node, F32, a!.ne);
    if (mask !== undefined) {
        c.type(mask, 'the mask', F16, F32);
        c.contiguous(mask, 'the mask');
        c.need(mask.ne[0] === a!.ne[0] && mask.ne[1] >= a!.ne[1] && a!.ne[2] % mask.ne[2] === 0 && a!.ne[3] % mask.ne[3] === 0,
            'op-shape', () => `a mask of ${dims(mask)} for ${dims(a!)}`);
    }
    if (sinks !== undefined) {
        c.type(sinks, 'the sinks', F32);
        c.need(sinks.ne[0] === a!.ne[2], 'op-shape', 'one sink per head');
    }
    c.finite(0, 'the scale');
    const maxBias = c.finite(1, 'the ALiBi bias');
    c.need(maxBias >= 0 && (maxBias === 0 || mask !== undefined), 'op-params', 'an ALiBi bias needs a mask');
    c.unusedParams(2);
});

/** ROPE (`ggml_rope_multi`, `ggml_compute_forward_rope_flt`): positions rotate the first n_dims of each row. */
const rope = rule((c, node) => {
    const [a, positions, factors] = c.sources(2, 3);
    c.type(a!, 'the source', F32, F16);
    result(c, node, a!.type, a!.ne);
    c.need(a!.nb[0] === a!.traits.typeSize && node.nb[0] === node.traits.typeSize, 'strides', 'rows must be packed');
    c.type(positions!, 'the positions', I32);
    c.need(positions!.ne[1] === 1 && positions!.ne[2] === 1 && positions!.ne[3] === 1, 'op-shape', 'the positions must be a vector');
    const mode = c.int(2);
    c.need(ROPE_MODES.includes(mode), 'op-params', `rope mode ${mode}`);
    const multi = (mode & ROPE_MROPE) !== 0;
    c.need(positions!.ne[0] === a!.ne[2] * (multi ? 4 : 1), 'op-shape', 'one position per token (four with multimodal rope)');
    const nDims = c.int(1);
    const offset = c.int(15);
    c.need(nDims >= 0 && nDims % 2 === 0 && offset >= 0 && offset % 2 === 0 && nDims + offset <= a!.ne[0], 'op-params',
        `${nDims} rotated dimensions at ${offset} in rows of ${a!.ne[0]}`);
    if (mode === ROPE_VISION)
        c.need(nDims === a!.ne[0] / 2 && offset === 0, 'op-params', 'vision rope rotates half of each row');
    if (factors !== undefined) {
        c.type(factors, 'the frequency factors', F32);
        c.need(factors.ne[0] >= nDims / 2, 'op-shape', 'a frequency factor per rotated pair');
    }
    const sections = [11, 12, 13, 14].map((slot) => c.int(slot));
    if (multi)
        c.need(sections.every((n) => n >= 0) && sections.slice(0, 3).some((n) => n > 0), 'op-params', 'multimodal rope needs sections');
    else
        c.need(sections.every((n) => n === 0), 'op-params', 'sections without multimodal rope');
    for (const slot of [5, 6, 7, 8, 9, 10])
        c.finite(slot, `rope parameter ${slot}`);
    c.need(c.int(0) === 0 && c.int(3) === 0, 'op-params', 'rope parameters ggml leaves zero are set');
});

/** FLASH_ATTN_EXT (`ggml_flash_attn_ext`, `ggml_compute_forward_flash_attn_ext_f16`): softmax(q·kᵀ)·v per head. */
const flashAttention = rule((c, node) => {
    const [q, k, v, mask, sinks] = c.sources(3, 5);
    c.type(q!, 'q', F32);
    c.type(k!, 'k', ...CACHE_TYPES);
    c.type(v!, 'v', ...CACHE_TYPES);
    c.need(k!.ne[0] === q!.ne[0] && q!.ne[2] % k!.ne[2] === 0 && q!.ne[3] % k!.ne[3] === 0, 'op-shape', () => `k ${dims(k!)} does not fit q ${dims(q!)}`);
    c.need(v!.ne[1] === k!.ne[1] && q!.ne[2] % v!.ne[2] === 0 && q!.ne[3] % v!.ne[3] === 0 && q!.ne[3] === k!.ne[3] && q!.ne[3] === v!.ne[3],
        'op-shape', () => `v ${dims(v!)} does not fit k ${dims(k!)} and q ${dims(q!)}`);
    for (const [tensor, role] of [[q!, 'q'], [k!, 'k'], [v!, 'v']] as const)
        c.need(tensor.nb[0] === tensor.traits.typeSize, 'strides', `${role}'s rows must be packed`);
    if (mask !== undefined) {
        c.type(mask, 'the mask', F16);
        c.contiguous(mask, 'the mask');
        c.need(mask.ne[0] >= k!.ne[1] && mask.ne[1] >= q!.ne[1] && q!.ne[2] % mask.ne[2] === 0 && q!.ne[3] % mask.ne[3] === 0,
            'op-shape', () => `a mask of ${dims(mask)} for ${k!.ne[1]} keys and ${q!.ne[1]} queries`);
    }
    if (sinks !== undefined) {
        c.type(sinks, 'the sinks', F32);
        c.need(sinks.ne[0] === q!.ne[2], 'op-shape', 'one sink per head');
    }
    result(c, node, F32, [v!.ne[0], q!.ne[2], q!.ne[1], q!.ne[3]]);
    c.ordered(node, 'the result');
    c.finite(0, 'the scale');
    const maxBias = c.finite(1, 'the ALiBi bias');
    c.need(maxBias >= 0 && (maxBias === 0 || mask !== undefined), 'op-params', 'an ALiBi bias needs a mask');
    c.finite(2, 'the logit soft cap');
    c.need(PRECISIONS.includes(c.int(3)), 'op-params', `precision ${c.int(3)}`);
    const maxKv = c.int(4);
    c.need(maxKv >= 0 && maxKv <= k!.ne[1], 'op-params', `at most ${maxKv} keys of ${k!.ne[1]}`);
    c.unusedParams(5);
});

/** GLU (`ggml_glu_impl`): a gate and a value, halves of a's rows or a and b, through one of ggml's GLU ops. */
const glu = rule((c, node) => {
    const [a, b] = c.sources(1, 2);
    c.type(a!, 'the source', F32, F16);
    c.contiguous(a!, 'the source', 1);
    c.contiguous(node, 'the result', 1);
    if (b !== undefined) {
        c.contiguous(b, 'the second source', 1);
        c.sameShape(a!, b, 'the sources');
        c.sameType(a!, b, 'the sources');
    }
    result(c, node, a!.type, b === undefined ? [Math.floor(a!.ne[0] / 2), a!.ne[1], a!.ne[2], a!.ne[3]] : a!.ne);
    c.need(node.ne[0] >= 1, 'op-shape', 'an empty result');
    const op = c.int(0);
    c.need(op >= 0 && op < GGML_GLU_OP_NAMES.length, 'op-params', `GLU op ${op}`);
    c.need(c.int(1) === 0 || c.int(1) === 1, 'op-params', 'swapped is a flag');
    if (GGML_GLU_OP_NAMES[op] === 'SWIGLU_OAI' || GGML_GLU_OP_NAMES[op] === 'SWIGLU_CLAMP') {
        c.finite(2, 'alpha');
        c.finite(3, 'limit');
        c.unusedParams(4);
    } else
        c.unusedParams(2);
});

export const CORE_OP_RULES = {
    // A leaf: weights, inputs, caches. As a node it computes nothing.
    NONE: rule((c) => {
        c.sources(0);
    }),
    ADD: binary,
    SUB: binary,
    MUL: binary,
    DIV: binary,
    RMS_NORM: rmsNorm,
    MUL_MAT: mulMat,
    CPY: cpy,
    CONT: cont,
    RESHAPE: reshape,
    VIEW: view,
    PERMUTE: permute,
    TRANSPOSE: transpose,
    GET_ROWS: getRows,
    SET_ROWS: setRows,
    SOFT_MAX: softMax,
    ROPE: rope,
    FLASH_ATTN_EXT: flashAttention,
    GLU: glu
};
