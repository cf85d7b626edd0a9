/**
 * Contracts of the ops of a transformer layer (docs/peer-protocol.md, "Graph checks"): each as ggml's builder in
 * ggml.c shapes its result and as the kernels (ggml-cpu/ops.cpp, binary-ops.cpp, ggml-cpu.c) assume, including
 * the kernels' `assert`s, which release builds leave out. Types are those llama.cpp's graphs give each op, which
 * every backend supports.
 */
import type {GraphNode} from './graph-node.js';
import {GGML_GLU_OP_NAMES, GGML_TYPES, GgmlType} from './ggml-tables.js';
import {type Contract, dims, elements, rule} from './op-rule-kit.js';
import {isContiguous} from './tensor-check.js';

const {F32, F16, BF16, I32, I64} = GgmlType;
const FLOATS: number[] = [F32, F16, BF16];
const PLAIN: number[] = FLOATS;

/**
 * Weight types the CPU backend can multiply (a `vec_dot` of their own) and dequantize (`to_float`): every quantized
 * type but the activation ones.
 */
const MATMUL_WEIGHT_TYPES: number[] = [F32, F16, BF16, ...GGML_TYPES.flatMap((traits, type) =>
    traits?.quantized && traits.name !== 'q8_1' && traits.name !== 'q8_K' ? [type] : [])];

/** Types a KV cache is read as (flash attention's K and V). */
const CACHE_TYPES = MATMUL_WEIGHT_TYPES;

/**
 * Types whose rows the CPU backend writes from f32 (`from_float` in ggml-cpu.c's type traits): not the grid
 * i-quants, whose quantizer needs `ggml_quantize_init` and which ggml-cpu leaves NULL (a call jumps to address 0).
 */
const WRITABLE_TYPES: number[] = MATMUL_WEIGHT_TYPES.filter((type) =>
    !['iq2_xxs', 'iq2_xs', 'iq3_xxs', 'iq1_s', 'iq3_s', 'iq2_s', 'iq1_m'].includes(GGML_TYPES[type]!.name));

/**
 * Longest row an op may give each CPU thread scratch for (`ggml_graph_plan`: 4 × ne[0] bytes a thread, MUL_MAT's
 * IQ panels ~9): the work buffer is one `new[]`, whose failure ends the server. llama.cpp's longest such rows are a
 * context's keys.
 */
const SCRATCH_ROW_LIMIT = 2 ** 24;
/** Flash attention's head sizes and heads × value size, which size its per-thread scratch likewise. */
const FA_HEAD_LIMIT = 2 ** 14;
const FA_HEADS_VALUES_LIMIT = 2 ** 22;

/** ggml's `GGML_ROPE_TYPE_*`: normal, NeoX, multimodal, vision, interleaved multimodal. */
const ROPE_MODES = [0, 2, 8, 24, 40];
const ROPE_MROPE = 8;
const ROPE_VISION = 24;
/** `GGML_PREC_DEFAULT`, `GGML_PREC_F32`. */
const PRECISIONS = [0, 10];
/** `GGML_HINT_SRC0_IS_HADAMARD`. */
const HINT_SRC0_IS_HADAMARD = 1;

/** A view of `of` as `ggml_view_tensor` makes it (CPY's and SET_ROWS' results): its bytes, type, shape and strides. */
function viewTensorOf(c: Contract, node: GraphNode, of: GraphNode) {
    c.need(node.view !== undefined && node.view === (of.view ?? of) && node.data === of.data, 'view', 'is not the destination');
    c.sameType(of, node, 'destination and result');
    c.sameShape(of, node, 'the result');
    c.need(node.nb.every((nb, dim) => nb === of.nb[dim]), 'strides', 'strides differ from the destination\'s');
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
    c.packed(a!, 'the first operand');
    c.packed(node, 'the result');
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
    c.result(node, F32, a!.ne);
    c.packed(a!, 'the source');
    // Written as packed rows (memcpy); fused with a MUL (ggml_cpu_try_fuse_ops), the MUL's rows, which ggml_can_fuse
    // makes this node's shape, are written instead.
    c.packed(node, 'the result');
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
    c.packed(b!, 'the second operand');
    c.result(node, F32, [a!.ne[1], b!.ne[1], b!.ne[2], b!.ne[3]]);
    c.packed(node, 'the result');
    c.ordered(node, 'the result');
    c.need(a!.ne[0] <= SCRATCH_ROW_LIMIT, 'op-shape', `rows of ${a!.ne[0]} elements`);
    // `ggml_mul_mat_set_prec` (attention scores in f32)
    c.need(PRECISIONS.includes(c.int(0)), 'op-params', `precision ${c.int(0)}`);
    // `ggml_mul_mat_set_hint` (llama.cpp's Hadamard rotation of a quantized KV cache, llama_mul_mat_hadamard)
    const hint = c.int(1);
    c.need(hint === 0 || hint === HINT_SRC0_IS_HADAMARD, 'op-params', `hint ${hint}`);
    if (hint === HINT_SRC0_IS_HADAMARD) {
        // ggml_compute_forward_fwht transforms b's rows in place of the product, into the result's rows: f32, of a
        // power-of-two length (GGML_ASSERT), no longer than the result's.
        c.type(b!, 'the second operand', F32);
        c.need((b!.ne[0] & (b!.ne[0] - 1)) === 0 && b!.ne[0] <= a!.ne[1], 'op-shape', 'a Hadamard transform of rows of no power-of-two length, or longer than the result\'s');
    }
    c.unusedParams(2);
});

/**
 * A same-type copy (`ggml_compute_forward_dup_bytes`). Of a quantized type only where it copies whole rows or
 * blocks in order: its path from a strided source into a packed destination of another shape sizes a row as
 * `ne00 × block bytes`, 32 times too many.
 */
function sameTypeCopy(c: Contract, from: GraphNode, to: GraphNode) {
    c.need([...PLAIN, I32, ...MATMUL_WEIGHT_TYPES].includes(from.type), 'op-type', 'a copy of a type the kernel does not copy');
    if (from.traits.quantized)
        c.need(isContiguous(from) || from.ne.every((n, dim) => n === to.ne[dim]), 'op-shape', 'a quantized copy that reshapes a strided source');
}

/**
 * CPY's type pairs, ggml_compute_forward_dup's: plain types among themselves, f32 ↔ i32, a quantized type to f32
 * (`dup_from_q`, which lays out what it writes by source 1) and f32/f16/bf16 into a packed quantized tensor row by
 * row (`dup_to_q`, through a row of f32 scratch per thread, sized by the destination's rows).
 */
function copyTypes(c: Contract, from: GraphNode, to: GraphNode, destination: GraphNode) {
    // Copies into a quantized type, f16 ↔ bf16 and f32 ↔ i32 get a row of f32 scratch per thread (ggml_graph_plan).
    const halves: number[] = [F16, BF16];
    const scratch = to.traits.quantized || (from.type !== to.type && halves.includes(from.type) && halves.includes(to.type))
        || (from.type === F32 && to.type === I32) || (from.type === I32 && to.type === F32);
    c.need(!scratch || to.ne[0] <= SCRATCH_ROW_LIMIT, 'op-shape', `rows of ${to.ne[0]} elements`);
    if (from.type === to.type)
        sameTypeCopy(c, from, to);
    else if (from.traits.quantized) {
        c.need(MATMUL_WEIGHT_TYPES.includes(from.type) && to.type === F32, 'op-type', 'a quantized copy to another type than f32');
        c.need(destination.nb[0] === 4 && (destination.ne[0] % from.traits.blockSize === 0 || isContiguous(to)), 'strides',
            'dequantized blocks that do not fit the destination\'s rows');
    } else if (to.traits.quantized) {
        c.need(PLAIN.includes(from.type) && WRITABLE_TYPES.includes(to.type), 'op-type', 'a copy to a quantized type the kernel cannot write');
        c.need(isContiguous(to) && from.nb[0] === from.traits.typeSize && from.ne[0] === to.ne[0], 'strides',
            'quantizes other than packed rows into a packed tensor of rows as long');
    } else
        c.need((PLAIN.includes(from.type) && PLAIN.includes(to.type)) || (from.type === F32 && to.type === I32) || (from.type === I32 && to.type === F32),
            'op-type', 'a copy between types the kernel does not pair');
}

/**
 * CPY (`ggml_cpy`): a's elements into b, the result a view of b. Or `ggml_cast`: into the node itself, a new tensor
 * of a's shape in another type, which names itself as source 1.
 */
const cpy = rule((c, node) => {
    const [a, b] = c.all(2);
    if (b === node) {
        c.need(node.view === undefined, 'view', 'a cast must be a tensor of its own');
        c.sameShape(a!, node, 'the cast');
    } else {
        c.need(elements(a!) === elements(b!), 'op-shape', () => `copies ${dims(a!)} into ${dims(b!)}`);
        viewTensorOf(c, node, b!);
    }
    copyTypes(c, a!, node, b!);
    c.unusedParams(0);
});

/** CONT (`ggml_cont`, `ggml_cont_4d`): a's elements into a new packed tensor of its type, maybe of another shape. */
const cont = rule((c, node) => {
    const [a] = c.all(1);
    c.need(elements(a!) === elements(node), 'op-shape', () => `${dims(a!)} cannot become ${dims(node)}`);
    c.need(node.view === undefined, 'view', 'must be a tensor of its own');
    // dup_from_q would read a source 1 CONT does not have.
    c.sameType(a!, node, 'source and result');
    sameTypeCopy(c, a!, node);
    c.unusedParams(0);
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
    c.result(node, a!.type === I32 ? I32 : F32, [a!.ne[0], b!.ne[0], b!.ne[1], b!.ne[2]]);
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
    c.type(a!, 'the destination', ...WRITABLE_TYPES);
    c.contiguousRows(a!, 'the destination');
    c.contiguousRows(b!, 'the rows');
    viewTensorOf(c, node, a!);
    // f16 rows into another type go through a row of f32 scratch per thread.
    c.need(b!.ne[0] <= SCRATCH_ROW_LIMIT, 'op-shape', `rows of ${b!.ne[0]} elements`);
    c.unusedParams(0);
});

/** SOFT_MAX (`ggml_soft_max_ext`): along rows of a packed f32 a, with an optional mask and attention sinks. */
const softMax = rule((c, node) => {
    const [a, mask, sinks] = c.sources(1, 3);
    c.type(a!, 'the source', F32);
    c.contiguous(a!, 'the source');
    c.result(node, F32, a!.ne);
    // Written as packed rows; ggml_soft_max_impl's result is a copy or a view of the packed source.
    c.contiguous(node, 'the result');
    c.need(a!.ne[0] <= SCRATCH_ROW_LIMIT, 'op-shape', `rows of ${a!.ne[0]} elements`);
    if (mask !== undefined) {
        c.type(mask, 'the mask', F16, F32);
        c.contiguous(mask, 'the mask');
        c.need(mask.ne[0] === a!.ne[0] && mask.ne[1] >= a!.ne[1] && a!.ne[2] % mask.ne[2] === 0 && a!.ne[3] % mask.ne[3] === 0,
            'op-shape', () => `a mask of ${dims(mask)} for ${dims(a!)}`);
    }
    if (sinks !== undefined) {
        c.type(sinks, 'the sinks', F32);
        c.need(sinks.ne[0] === a!.ne[2], 'op-shape', 'one sink per head');
        c.contiguous(sinks, 'the sinks'); // read as a packed array
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
    c.result(node, a!.type, a!.ne);
    c.need(a!.nb[0] === a!.traits.typeSize && node.nb[0] === node.traits.typeSize, 'strides', 'rows must be packed');
    // The kernel copies the channels it does not rotate in pairs: an odd row is written one element past its end.
    c.need(a!.ne[0] % 2 === 0 && a!.ne[0] <= SCRATCH_ROW_LIMIT, 'op-shape', `rows of ${a!.ne[0]} elements`);
    c.type(positions!, 'the positions', I32);
    c.need(positions!.ne[1] === 1 && positions!.ne[2] === 1 && positions!.ne[3] === 1, 'op-shape', 'the positions must be a vector');
    c.contiguous(positions!, 'the positions'); // read as a packed array
    const mode = c.int(2);
    c.need(ROPE_MODES.includes(mode), 'op-params', `rope mode ${mode}`);
    const multi = (mode & ROPE_MROPE) !== 0;
    c.need(positions!.ne[0] === a!.ne[2] * (multi ? 4 : 1), 'op-shape', 'one position per token (four with multimodal rope)');
    const nDims = c.int(1);
    const offset = c.int(15);
    // n_dims 0 sends the kernel's copy of the unrotated channels back to the offset for ever (`i0 += n_dims - 2`).
    c.need(nDims >= 2 && nDims % 2 === 0 && offset >= 0 && offset % 2 === 0 && nDims + offset <= a!.ne[0], 'op-params',
        `${nDims} rotated dimensions at ${offset} in rows of ${a!.ne[0]}`);
    if (mode === ROPE_VISION)
        c.need(nDims === a!.ne[0] / 2 && offset === 0, 'op-params', 'vision rope rotates half of each row');
    if (factors !== undefined) {
        c.type(factors, 'the frequency factors', F32);
        c.need(factors.ne[0] >= nDims / 2, 'op-shape', 'a frequency factor per rotated pair');
        c.contiguous(factors, 'the frequency factors');
        // The rope cache reads a factor for every pair of the row, rotated or not (ggml_rope_cache_init): those past
        // n_dims / 2 (partial rotary models in llama.cpp) are unused but must be the session's bytes.
        c.need(factors.room >= 4n * BigInt(a!.ne[0] / 2), 'bounds', 'the factors read for a row reach outside their buffer');
    }
    const sections = [11, 12, 13, 14].map((slot) => c.int(slot));
    if (multi) {
        c.need(sections.every((n) => n >= 0) && sections.slice(0, 3).some((n) => n > 0), 'op-params', 'multimodal rope needs sections');
        // GGML_ASSERT(sect_dims <= ne0) in ggml_mrope_cache_init, whose C int sum must not wrap (to 0: SIGFPE).
        c.need(sections.reduce((sum, n) => sum + n, 0) <= a!.ne[0], 'op-params', 'sections longer than the row');
    } else
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
        c.contiguous(sinks, 'the sinks'); // read as a packed array
    }
    c.result(node, F32, [v!.ne[0], q!.ne[2], q!.ne[1], q!.ne[3]]);
    // The kernels write nb[1] bytes per row, rows numbered through all the result's dimensions.
    c.dense(node, 'the result');
    // Per-thread scratch (ggml_graph_plan): 64-row tiles of q, K and V rows; heads × (DV + 2) floats when splitting keys.
    c.need(k!.ne[0] <= FA_HEAD_LIMIT && v!.ne[0] <= FA_HEAD_LIMIT && q!.ne[2] * (v!.ne[0] + 2) <= FA_HEADS_VALUES_LIMIT,
        'op-shape', () => `${q!.ne[2]} heads of ${k!.ne[0]} and ${v!.ne[0]} elements`);
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
    c.result(node, a!.type, b === undefined ? [Math.floor(a!.ne[0] / 2), a!.ne[1], a!.ne[2], a!.ne[3]] : a!.ne);
    c.need(node.ne[0] >= 1, 'op-shape', 'an empty result');
    const op = c.int(0);
    c.need(op >= 0 && op < GGML_GLU_OP_NAMES.length, 'op-params', `GLU op ${op}`);
    c.need(c.int(1) === 0 || c.int(1) === 1, 'op-params', 'swapped is a flag');
    if (GGML_GLU_OP_NAMES[op] === 'SWIGLU_OAI' || GGML_GLU_OP_NAMES[op] === 'SWIGLU_CLAMP') {
        // ggml_compute_forward_swiglu_oai has no f16 kernel (GGML_ABORT).
        c.need(GGML_GLU_OP_NAMES[op] === 'SWIGLU_CLAMP' || a!.type === F32, 'op-type', 'SWIGLU_OAI takes f32');
        c.finite(2, 'alpha');
        c.need(c.finite(3, 'limit') >= 0, 'op-params', 'a negative limit'); // std::clamp(y, -limit, limit) needs -limit <= limit
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
