/**
 * Contracts of the element-wise, reduction, shape and indexing ops beyond a transformer layer's own
 * (docs/peer-protocol.md, "Graph checks"). Many kernel loops trust the shapes and strides the builder set, so each
 * contract also holds what the kernel takes for granted: how it walks rows, the types it reads and writes, the
 * op_params it divides or loops by. Types are those llama.cpp's graphs give each op, which every backend supports.
 */
import type {GraphNode} from './graph-node.js';
import {GGML_TYPES, GGML_UNARY_OP_NAMES, GgmlOp, GgmlType} from './ggml-tables.js';
import {type Contract, dims, elements, type OpRule, rule} from './op-rule-kit.js';
import {CORE_OP_RULES} from './op-rules-core.js';

const {F32, F16, BF16, I32} = GgmlType;

const INT32_MAX = 2 ** 31 - 1;
/**
 * Longest row TOP_K may sort (`ggml_graph_plan` gives each CPU thread 4 × ne[0] bytes of scratch in one `new[]`,
 * whose failure ends the server); as op-rules-core.ts holds ROPE's rows.
 */
const SCRATCH_ROW_LIMIT = 2 ** 24;

/** At most INT32_MAX elements in each tensor: the kernels count rows, row elements and loop indices in `int`. */
function intSized(c: Contract, ...tensors: GraphNode[]) {
    for (const tensor of tensors)
        c.need(elements(tensor) <= INT32_MAX, 'op-shape', () => `${dims(tensor)} is more elements than a kernel counts`);
}

/**
 * Row r, counting every row of the tensor in order, lies at r·nb[1], its elements packed: kernels that walk all
 * rows with one stride (`i*nb01`) whatever the tensor's other strides are.
 */
function flatRows(c: Contract, tensor: GraphNode, role: string) {
    c.packed(tensor, role);
    const {ne, nb} = tensor;
    c.need((ne[2] === 1 || nb[2] === nb[1] * ne[1]) && (ne[3] === 1 || nb[3] === nb[1] * ne[1] * ne[2]), 'strides',
        () => `${role}'s rows (strides ${nb.join(', ')}) are not one after another`);
}

/**
 * The result shares no byte with a source: for kernels that read, while they write, what they index or compare by
 * (an in-place argsort sorts by values it is overwriting, which breaks std::sort's bounds).
 */
function disjoint(c: Contract, node: GraphNode, source: GraphNode, role: string) {
    c.need(node.buffer !== source.buffer || node.data + node.nbytes <= source.data || source.data + source.nbytes <= node.data, 'view',
        `the result overlaps ${role}`);
}

/** An enum or flag op parameter: one of `values`. */
function oneOf(c: Contract, slot: number, role: string, values: readonly number[]) {
    const value = c.int(slot);
    c.need(values.includes(value), 'op-params', `${role} ${value}`);
    return value;
}

/** A non-negative epsilon (the norm kernels GGML_ASSERT eps >= 0, which NaN fails). */
function epsilon(c: Contract, slot: number) {
    const eps = c.finite(slot, 'epsilon');
    c.need(eps >= 0, 'op-params', 'a negative epsilon');
}

/**
 * SQR, SQRT, LOG (`ggml_sqr` …, unary-ops.cpp's `unary_op`): a into a result of its shape and type. The kernel
 * GGML_ASSERTs packed rows and the shape, and aborts on type pairs it lacks.
 */
const unaryMath = rule((c, node) => {
    const [a] = c.all(1);
    c.type(a!, 'the source', F32, F16);
    c.result(node, a!.type, a!.ne);
    c.packed(a!, 'the source');
    c.packed(node, 'the result');
    intSized(c, a!);
    c.unusedParams(0);
});

/**
 * ADD_ID (`ggml_add_id`, `ggml_compute_forward_add_id_f32`): to each row (i1, i2) of a, row ids[i1, i2] of b. The
 * kernel checks each id against b's rows with a GGML_ASSERT at run time; the ids are whole aligned int32s (as
 * argsort's view gives them) and are not overwritten by the result while it reads them.
 */
const addId = rule((c, node) => {
    const [a, b, ids] = c.all(3);
    c.type(a!, 'the source', F32);
    c.type(b!, 'the rows added', F32);
    c.type(ids!, 'the ids', I32);
    c.need(b!.ne[0] === a!.ne[0] && ids!.ne[0] === a!.ne[1] && ids!.ne[1] === a!.ne[2], 'op-shape',
        () => `cannot add rows of ${dims(b!)} to ${dims(a!)} by ${dims(ids!)}`);
    c.result(node, F32, a!.ne);
    c.packed(a!, 'the source');
    c.packed(b!, 'the rows added');
    c.packed(node, 'the result');
    c.need(ids!.nb[0] === 4 && ids!.nb[1] % 4 === 0 && ids!.data % 4n === 0n, 'strides', 'the ids must be aligned int32s');
    disjoint(c, node, ids!, 'the ids');
    intSized(c, a!, b!, ids!);
    c.unusedParams(0);
});

/** SUM (`ggml_sum`): every element of a into one; the kernel reads rows as arrays (an `assert` only). */
const sum = rule((c, node) => {
    const [a] = c.all(1);
    c.type(a!, 'the source', F32);
    c.result(node, F32, [1, 1, 1, 1]);
    c.packed(a!, 'the source');
    intSized(c, a!);
    c.unusedParams(0);
});

/** SUM_ROWS (`ggml_sum_rows`) and MEAN (`ggml_mean`): each row of a into one element (MEAN's checks are `assert`s). */
const rowReduction = rule((c, node) => {
    const [a] = c.all(1);
    c.type(a!, 'the source', F32);
    c.result(node, F32, [1, a!.ne[1], a!.ne[2], a!.ne[3]]);
    c.packed(a!, 'the source');
    c.packed(node, 'the result');
    intSized(c, a!);
    c.unusedParams(0);
});

/** CUMSUM (`ggml_cumsum`): running sums along each row. */
const cumsum = rule((c, node) => {
    const [a] = c.all(1);
    c.type(a!, 'the source', F32);
    c.result(node, F32, a!.ne);
    c.packed(a!, 'the source');
    c.packed(node, 'the result');
    intSized(c, a!);
    c.unusedParams(0);
});

/**
 * ARGMAX (`ggml_argmax`): the index of each row's maximum. The kernel walks only ne[1] rows of a matrix and writes
 * i32s at result stride nb[0] (its stride checks are `assert`s).
 */
const argmax = rule((c, node) => {
    const [a] = c.all(1);
    c.type(a!, 'the source', F32);
    c.need(a!.ne[2] === 1 && a!.ne[3] === 1, 'op-shape', () => `${dims(a!)} is no matrix`);
    c.result(node, I32, [a!.ne[1], 1, 1, 1]);
    c.packed(a!, 'the source');
    c.packed(node, 'the result');
    intSized(c, a!);
    c.unusedParams(0);
});

/** REPEAT (`ggml_repeat`, `ggml_repeat_4d`): a tiled over the result, in a's type. */
const repeat = rule((c, node) => {
    const [a] = c.all(1);
    c.type(a!, 'the source', F32, F16);
    c.type(node, 'the result', a!.type);
    c.repeats(a!, node, 'source and result');
    c.packed(a!, 'the source');
    c.packed(node, 'the result');
    intSized(c, node);
    c.unusedParams(0);
});

/** CONCAT (`ggml_concat`): a then b along dimension op_params[0]; element by element, so any strides. */
const concat = rule((c, node) => {
    const [a, b] = c.all(2);
    c.type(a!, 'the first source', F32, F16);
    c.sameType(a!, b!, 'the sources');
    const dim = oneOf(c, 0, 'dimension', [0, 1, 2, 3]);
    c.need(a!.ne.every((n, d) => d === dim || b!.ne[d] === n), 'op-shape', () => `cannot join ${dims(a!)} and ${dims(b!)} along ${dim}`);
    c.result(node, a!.type, a!.ne.map((n, d) => d === dim ? n + b!.ne[d]! : n));
    intSized(c, node);
    c.unusedParams(1);
});

/** NORM (`ggml_norm`) and L2_NORM (`ggml_l2_norm`): each row normalised; op_params[0] is epsilon. */
const rowNorm = rule((c, node) => {
    const [a] = c.all(1);
    c.type(a!, 'the source', F32);
    c.result(node, F32, a!.ne);
    c.packed(a!, 'the source');
    c.packed(node, 'the result');
    intSized(c, a!);
    epsilon(c, 0);
    c.unusedParams(1);
});

/**
 * GROUP_NORM (`ggml_group_norm`): ne[2] channels normalised in op_params[0] groups. The kernel divides by the group
 * count (0 is SIGFPE) and loops over every group (so no more groups than channels), and writes result rows as
 * arrays without checking their stride.
 */
const groupNorm = rule((c, node) => {
    const [a] = c.all(1);
    c.type(a!, 'the source', F32);
    c.result(node, F32, a!.ne);
    c.packed(a!, 'the source');
    c.packed(node, 'the result');
    intSized(c, a!);
    const groups = c.int(0);
    c.need(groups >= 1 && groups <= a!.ne[2], 'op-params', `${groups} groups of ${a!.ne[2]} channels`);
    epsilon(c, 1);
    c.unusedParams(2);
});

/**
 * SCALE (`ggml_scale`, `ggml_scale_bias`): a·s + b. The kernel GGML_ASSERTs contiguity but then walks every row at
 * r·nb[1] of the result (a's rows too when b ≠ 0): ggml's contiguity ignores the strides of 1-element dimensions.
 */
const scale = rule((c, node) => {
    const [a] = c.all(1);
    c.type(a!, 'the source', F32);
    c.result(node, F32, a!.ne);
    c.contiguous(a!, 'the source');
    c.contiguous(node, 'the result');
    flatRows(c, a!, 'the source');
    flatRows(c, node, 'the result');
    intSized(c, a!);
    // Any floats: llama.cpp scales by 0 with a bias of -inf.
    c.unusedParams(2);
});

/**
 * SET (`ggml_set`, `ggml_set_1d`, `ggml_set_2d`, their in-place forms): a copied, then b written into it at
 * op_params' strides (nb1, nb2, nb3) and byte offset. The kernel reads them as int32 turned size_t (a negative one
 * wraps) and its bound check stops one element short of b's last row: the last row must end inside the result.
 */
const set = rule((c, node) => {
    const [a, b] = c.all(2);
    c.type(a!, 'the destination', F32);
    c.type(b!, 'the source', F32);
    c.result(node, F32, a!.ne);
    c.contiguous(a!, 'the destination');
    c.contiguous(node, 'the result');
    c.packed(b!, 'the source');
    intSized(c, a!, b!);
    c.need(elements(a!) >= elements(b!), 'op-shape', () => `cannot set ${dims(b!)} into ${dims(a!)}`);
    const [nb1, nb2, nb3, offset] = [c.int(0), c.int(1), c.int(2), c.int(3)];
    c.need(nb1 >= 0 && nb2 >= 0 && nb3 >= 0 && offset >= 0 && offset < 2 ** 30, 'op-params', 'negative strides or offset');
    const end = BigInt(offset) + BigInt(b!.ne[0]) * BigInt(node.traits.typeSize)
        + [nb1, nb2, nb3].reduce((bytes, stride, dim) => bytes + BigInt(b!.ne[dim + 1]! - 1) * BigInt(stride), 0n);
    c.need(end <= node.nbytes, 'op-params', () => `writes ${end} bytes into ${node.nbytes}`);
    const inplace = oneOf(c, 4, 'the in-place flag', [0, 1]);
    if (inplace === 1)
        c.need(node.view !== undefined && node.view === (a!.view ?? a) && node.data === a!.data, 'view', 'in place, but not a view of the destination');
    c.unusedParams(5);
});

/** DIAG (`ggml_diag`): a row vector spread over a square's diagonal. */
const diag = rule((c, node) => {
    const [a] = c.all(1);
    c.type(a!, 'the source', F32);
    c.need(a!.ne[1] === 1, 'op-shape', () => `${dims(a!)} is no row vector`);
    c.result(node, F32, [a!.ne[0], a!.ne[0], a!.ne[2], a!.ne[3]]);
    c.packed(a!, 'the source');
    c.packed(node, 'the result');
    intSized(c, node);
    c.unusedParams(0);
});

/**
 * ROPE_BACK (`ggml_rope_ext_back`, `ggml_rope_multi_back`): ROPE's kernel (`ggml_compute_forward_rope_flt`) with the
 * rotation reversed, so ROPE's contract; restated here, as this op's own: at least 2 rotated dimensions (with none,
 * the loop that copies the channels around them never ends) and rows a kernel's `int` counts.
 */
const ropeBack: OpRule = (node, what) => {
    CORE_OP_RULES.ROPE(node, what);
    rule((c) => {
        c.need(c.int(1) >= 2, 'op-params', `${c.int(1)} rotated dimensions`);
        intSized(c, node);
    })(node, what);
};

/**
 * CLAMP (`ggml_clamp`): each element into [min, max] (any floats: llama.cpp clamps to ±inf). The kernel walks every
 * row at r·nb[1] of source and result.
 */
const clamp = rule((c, node) => {
    const [a] = c.all(1);
    c.type(a!, 'the source', F32, F16);
    c.result(node, a!.type, a!.ne);
    flatRows(c, a!, 'the source');
    flatRows(c, node, 'the result');
    intSized(c, a!);
    c.unusedParams(2);
});

/** `ggml_calc_conv_output_size`, with C's division. */
function convOutput(size: number, kernel: number, stride: number, padding: number, dilation: number) {
    return Math.trunc((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1;
}

/**
 * IM2COL (`ggml_im2col`, through `ggml_conv_1d`, `ggml_conv_1d_dw`, `ggml_conv_2d`): the patches of image b for
 * kernel a (only a's shape is read). The kernel writes the result as a flat array, reads each channel of b as a
 * packed plane, and holds b's strides in `int`; every source index it reads is bounds-checked.
 */
const im2col = rule((c, node) => {
    const [a, b] = c.all(2);
    c.type(a!, 'the kernel', F32, F16, BF16);
    c.type(node, 'the result', F32, F16);
    c.type(b!, 'the image', ...(node.type === F16 ? [F32, F16] : [F32]));
    const [s0, s1, p0, p1, d0, d1] = [0, 1, 2, 3, 4, 5].map((slot) => c.int(slot));
    const is2D = oneOf(c, 6, 'the 2-D flag', [0, 1]) === 1;
    c.need(s0! >= 1 && d0! >= 1 && p0! >= 0, 'op-params', `stride ${s0}, padding ${p0}, dilation ${d0}`);
    if (is2D)
        c.need(s1! >= 1 && d1! >= 1 && p1! >= 0, 'op-params', `stride ${s1}, padding ${p1}, dilation ${d1}`);
    else
        c.need(s1 === 0 && p1 === 0 && d1 === 0, 'op-params', 'a 1-D im2col with a second dimension\'s parameters');
    c.need(is2D ? a!.ne[2] === b!.ne[2] : b!.ne[1] === a!.ne[1] && b!.ne[3] === 1, 'op-shape',
        () => `kernel ${dims(a!)} does not fit image ${dims(b!)}`);
    const ow = convOutput(b!.ne[0], a!.ne[0], s0!, p0!, d0!);
    const oh = is2D ? convOutput(b!.ne[1], a!.ne[1], s1!, p1!, d1!) : 1;
    c.need(ow > 0 && oh > 0, 'op-shape', () => `image ${dims(b!)} is smaller than kernel ${dims(a!)}`);
    c.result(node, node.type, is2D ? [a!.ne[2] * a!.ne[1] * a!.ne[0], ow, oh, b!.ne[3]] : [a!.ne[1] * a!.ne[0], ow, b!.ne[2], 1]);
    c.dense(node, 'the result');
    c.packed(b!, 'the image');
    c.contiguous(b!, 'the image');
    c.need(b!.nbytes <= BigInt(INT32_MAX), 'op-shape', 'an image whose strides overflow an int');
    intSized(c, node);
    c.unusedParams(7);
});

/** `GGML_OP_POOL_MAX`, `GGML_OP_POOL_AVG` (COUNT aborts). */
const POOL_OPS = [0, 1];
/** Largest kernel, stride, padding and plane extent of POOL_2D: the kernel's `int` arithmetic stays far from overflow. */
const POOL_EXTENT = 1 << 24;
/** POOL_2D's reads per output element, on average, at most this many per element of source and result. */
const POOL_WORK = 64;

/**
 * POOL_2D (`ggml_pool_2d`): max or average over k0×k1 windows of each plane. The kernel steps through the source's
 * bytes by nb[2] until its end and through the result as a flat array, so both must be packed arrays; windows
 * overlap by choice, so the kernel's work (result × window) is held to what the tensors' sizes pay for.
 */
const pool2d = rule((c, node) => {
    const [a] = c.all(1);
    c.type(a!, 'the source', F32, F16);
    c.dense(a!, 'the source');
    oneOf(c, 0, 'pool op', POOL_OPS);
    const [k0, k1, s0, s1, p0, p1] = [1, 2, 3, 4, 5, 6].map((slot) => c.int(slot)) as [number, number, number, number, number, number];
    c.need([k0, k1, s0, s1].every((n) => n >= 1 && n <= POOL_EXTENT) && [p0, p1].every((n) => n >= 0 && n <= POOL_EXTENT)
        && a!.ne[0] <= POOL_EXTENT && a!.ne[1] <= POOL_EXTENT, 'op-params', `kernel ${k0}×${k1}, stride ${s0}×${s1}, padding ${p0}×${p1}`);
    c.need(a!.ne[0] + 2 * p0 >= k0 && a!.ne[1] + 2 * p1 >= k1, 'op-shape', () => `${dims(a!)} is smaller than the kernel`);
    const ne = [Math.floor((a!.ne[0] + 2 * p0 - k0) / s0) + 1, Math.floor((a!.ne[1] + 2 * p1 - k1) / s1) + 1, a!.ne[2], a!.ne[3]];
    c.result(node, F32, ne);
    c.dense(node, 'the result');
    intSized(c, a!, node);
    c.need(elements(node) * k0 * k1 <= POOL_WORK * (elements(a!) + elements(node)), 'op-params', 'windows that read the source too many times');
    c.unusedParams(7);
});

/**
 * PAD (`ggml_pad`, `ggml_pad_ext`): zeros before and after a in each dimension (op_params: before, after, per
 * dimension; then circular, which llama.cpp never asks for). The kernel writes the result as a flat array.
 */
const pad = rule((c, node) => {
    const [a] = c.all(1);
    c.type(a!, 'the source', F32);
    const padding = [0, 1, 2, 3, 4, 5, 6, 7].map((slot) => c.int(slot));
    c.need(padding.every((n) => n >= 0), 'op-params', `padding ${padding.join(', ')}`);
    c.result(node, F32, a!.ne.map((n, dim) => n + padding[2 * dim]! + padding[2 * dim + 1]!));
    c.dense(node, 'the result');
    intSized(c, node);
    oneOf(c, 8, 'circular padding', [0]);
    c.unusedParams(9);
});

/**
 * ARANGE (`ggml_arange`): start, start + step, … below stop. The kernel recomputes the count in float
 * (`ceilf((stop - start) / step)`), GGML_ASSERTs it is the result's size and writes a flat array.
 */
const arange = rule((c, node) => {
    c.sources(0);
    const start = c.finite(0, 'start');
    const stop = c.finite(1, 'stop');
    const step = c.finite(2, 'step');
    const steps = Math.ceil(Math.fround(Math.fround(stop - start) / step));
    c.need(stop > start && step > 0 && Number.isFinite(steps), 'op-params', `from ${start} to ${stop} by ${step}`);
    c.result(node, F32, [steps, 1, 1, 1]);
    c.packed(node, 'the result');
    intSized(c, node);
    c.unusedParams(3);
});

/**
 * ARGSORT (`ggml_argsort`, `ggml_argsort_top_k`): each row's indices in value order, sorted in place in the result's
 * row. The kernel walks rows at r·nb[1] of source and result, and std::sort compares by the source's values: NaNs
 * only sort wrongly (`<` stays a strict order on the rest), but values or indices that change under the sort (a
 * result over its source, or rows of the result that overlap while threads sort them) send its unguarded insertion
 * past the row's start (SIGSEGV). So the result is a new tensor's packed array, apart from the source.
 */
const argsort = rule((c, node) => {
    const [a] = c.all(1);
    c.type(a!, 'the source', F32);
    c.result(node, I32, a!.ne);
    flatRows(c, a!, 'the source');
    c.dense(node, 'the result');
    disjoint(c, node, a!, 'the source');
    intSized(c, a!);
    oneOf(c, 0, 'sort order', [0, 1]);
    c.unusedParams(1);
});

/**
 * TOP_K (`ggml_top_k`): the indices of each row's k largest, k the result's ne[0]; rows at r·nb[1] and no result
 * over the source, as ARGSORT (its partial sort is a bounded heap, but other threads write rows while one sorts).
 */
const topK = rule((c, node) => {
    const [a] = c.all(1);
    c.type(a!, 'the source', F32);
    c.need(node.ne[0] <= a!.ne[0] && a!.ne[0] <= SCRATCH_ROW_LIMIT, 'op-shape', () => `the top ${node.ne[0]} of ${a!.ne[0]}`);
    c.result(node, I32, [node.ne[0], a!.ne[1], a!.ne[2], a!.ne[3]]);
    flatRows(c, a!, 'the source');
    flatRows(c, node, 'the result');
    disjoint(c, node, a!, 'the source');
    intSized(c, a!);
    c.unusedParams(0);
});

/**
 * Expert weight types MUL_MAT_ID multiplies, MUL_MAT's (op-rules-core.ts): those with a CPU `vec_dot` and `to_float`,
 * every quantized type but the activation ones (q8_1, q8_K), whose `vec_dot_type` blocks divide their own.
 */
const EXPERT_TYPES: number[] = [F32, F16, BF16, ...GGML_TYPES.flatMap((traits, type) =>
    traits?.quantized && traits.name !== 'q8_1' && traits.name !== 'q8_K' ? [type] : [])];

/**
 * Most bytes of MUL_MAT_ID's row map (`ggml_graph_plan`: n_as × (8 per id read + 8 + a 64-byte cache line)), part of
 * the work buffer the server allocates in one `new[]`, whose failure ends it. 512 experts (qwen3next's), 10 of them
 * per token, in a batch of 8,192 tokens (llama.cpp's default is 512) need 336 MB.
 */
const EXPERT_MAP_LIMIT = 2n ** 29n;

/**
 * Most nodes between the ARGSORT or TOP_K that writes a MUL_MAT_ID's expert ids and the MUL_MAT_ID, whose every node
 * is checked against the ids' bytes: this bounds that work (build_moe_ffn keeps them within a few dozen nodes).
 */
const IDS_DISTANCE_LIMIT = 1024;

/** `GGML_TENSOR_FLAG_COMPUTE`: the CPU backend skips a node without it (ggml_graph_compute_thread). */
const TENSOR_FLAG_COMPUTE = 16;

/** Ops whose result is indices into each row of their source: every value in [0, source ne[0]). */
const INDEX_SORTS: ReadonlySet<number> = new Set([GgmlOp.ARGSORT, GgmlOp.TOP_K]);

/** Ops the backend skips (`ggml_op_is_empty`): their nodes name bytes and write none. */
const WRITES_NOTHING: ReadonlySet<number> = new Set([GgmlOp.NONE, GgmlOp.RESHAPE, GgmlOp.TRANSPOSE, GgmlOp.VIEW, GgmlOp.PERMUTE]);

/**
 * The first node computed after `after` and before `before` that may write a byte of `tensor`'s: any node but a view
 * op's, taken to write anywhere in its own `[data, data + nbytes)` (where every contract holds its kernel's writes:
 * in-place and view results such as SET_ROWS', CPY's and SET's included). Addresses are the server's, so tensors of
 * different buffers never meet.
 */
function writerBetween(after: GraphNode, before: GraphNode, tensor: GraphNode) {
    const end = tensor.data + tensor.nbytes;
    for (let position = after.position + 1; position < before.position; position++) {
        const node = before.computed[position]!;
        if (!WRITES_NOTHING.has(node.op) && node.data < end && tensor.data < node.data + node.nbytes)
            return node;
    }
    return undefined;
}

/**
 * MUL_MAT_ID's expert ids, which its kernel reads from tensor data and checks only with an `assert` (gone in release
 * builds) before it files row (id, token) under expert ids[id, token] in its work buffer's map of n_as lists: a
 * hostile id writes outside that map. So the ids must be values no peer chose, as llama.cpp's MoE graphs make them
 * (build_moe_ffn's `ggml_argsort_top_k` of the router's probabilities, or `ggml_top_k`):
 * 1. the result of an ARGSORT or TOP_K node (or a view of it) that the graph computes before this node (and flags for
 *    computing: the backend skips a node without the flag), sorting rows no longer than n_as, so that each value it
 *    writes is in [0, n_as). Each of its rows it writes whole, dense as ggml lays out a new tensor: every element;
 * 2. read only where that sort wrote: whole aligned int32s, each row of ids within one sorted row, rows of ids a whole
 *    number of sorted rows apart, and none past the sort's last row;
 * 3. and rewritten by no node between the sort and this one (reads are harmless; nodes before the sort are overwritten
 *    by it, nodes after this one come too late).
 */
function sortedIds(c: Contract, node: GraphNode, ids: GraphNode, experts: number) {
    const sort = [ids, ids.view].find((tensor) => tensor !== undefined && INDEX_SORTS.has(tensor.op));
    if (sort === undefined)
        c.fail('sources', 'the expert ids are no ARGSORT\'s or TOP_K\'s result, nor a view of one: nothing bounds them');
    c.need(sort.position >= 0 && sort.position < node.position, 'sources', 'the expert ids\' sort is not a node computed before this one');
    c.need(node.position - sort.position <= IDS_DISTANCE_LIMIT, 'sources',
        () => `the expert ids were sorted ${node.position - sort.position} nodes earlier (at most ${IDS_DISTANCE_LIMIT})`);
    c.need((sort.flags & TENSOR_FLAG_COMPUTE) !== 0, 'sources', 'the expert ids\' sort is not flagged for computing: the backend would skip it');
    // Its contract held (it runs earlier): an f32 source, an i32 result of ne[0] ≤ the source's.
    const sorted = sort.sources[0]!.ne[0];
    c.need(sorted <= experts, 'op-shape', () => `expert ids sorted out of rows of ${sorted} for ${experts} experts`);
    c.dense(sort, 'the expert ids\' sort');

    const row = BigInt(sort.ne[0]);
    const offset = ids.data - sort.data;
    c.need(ids.buffer === sort.buffer && offset >= 0n && offset % 4n === 0n && sort.data % 4n === 0n && ids.nb[0] === 4, 'view',
        'the expert ids are not whole aligned int32s of their sort\'s result');
    const first = offset / 4n;
    const step = ids.ne[1] === 1 ? 0n : BigInt(ids.nb[1]);
    c.need(step % (4n * row) === 0n, 'strides', () => `the expert ids' rows (stride ${ids.nb[1]}) are not whole sorted rows of ${row} apart`);
    const last = first + BigInt(ids.ne[1] - 1) * (step / 4n) + BigInt(ids.ne[0]);
    c.need(first % row + BigInt(ids.ne[0]) <= row && last <= BigInt(elements(sort)), 'view',
        () => `the expert ids (${dims(ids)} at element ${first}) reach past what their sort wrote (${dims(sort)})`);

    const writer = writerBetween(sort, node, ids);
    c.need(writer === undefined, 'view', () => `node ${writer!.position} writes over the expert ids between their sort and this node`);
}

/**
 * MUL_MAT_ID (`ggml_mul_mat_id`, `ggml_compute_forward_mul_mat_id`): for token t and slot i, expert ids[i, t]'s
 * matrix of `as` times b's row (i mod b.ne[1], t), into the result's row (i, t). The kernel reads the ids as
 * `sortedIds` holds them; it GGML_ASSERTs packed rows of experts, activations and result, and a result whose strides
 * never shrink; it walks `as` by nb[1] and nb[2] (not transposed, as the builder asserts) and b by its strides, or
 * converts b's f32 rows to the experts' `vec_dot_type` in its work buffer (GGML_ASSERT f32); its IQ panel path gets
 * per-thread scratch by row length as MUL_MAT's. Types are those of llama.cpp's MoE layers: f32 activations.
 */
const mulMatId = rule((c, node) => {
    const [as, b, ids] = c.all(3);
    c.type(as!, 'the experts', ...EXPERT_TYPES);
    c.type(b!, 'the activations', F32);
    c.type(ids!, 'the expert ids', I32);
    c.need(as!.ne[3] === 1 && b!.ne[3] === 1 && ids!.ne[2] === 1 && ids!.ne[3] === 1 && as!.ne[0] === b!.ne[0]
        && ids!.ne[1] === b!.ne[2] && ids!.ne[0] % b!.ne[1] === 0, 'op-shape',
    () => `cannot multiply experts ${dims(as!)} by ${dims(b!)} with ids ${dims(ids!)}`);
    c.need(as!.nb[0] === as!.traits.typeSize && as!.nb[0] <= as!.nb[1], 'strides', 'the experts are transposed');
    c.packed(b!, 'the activations');
    c.result(node, F32, [as!.ne[1], ids!.ne[0], b!.ne[2], 1]);
    c.packed(node, 'the result');
    c.ordered(node, 'the result');
    c.need(as!.ne[0] <= SCRATCH_ROW_LIMIT, 'op-shape', `rows of ${as!.ne[0]} elements`);
    const experts = as!.ne[2];
    c.need(BigInt(experts) * (8n * BigInt(ids!.ne[0]) * BigInt(ids!.ne[1]) + 72n) <= EXPERT_MAP_LIMIT, 'op-shape',
        () => `${experts} experts for ${dims(ids!)} ids: a row map larger than ${EXPERT_MAP_LIMIT} bytes`);
    // The kernel has read the ids by the time it writes, but llama.cpp never writes over them.
    disjoint(c, node, ids!, 'the expert ids');
    sortedIds(c, node, ids!, experts);
    c.unusedParams(0);
});

/** `enum ggml_tri_type`: upper with diagonal, upper, lower with diagonal, lower. */
const TRI_TYPES = [0, 1, 2, 3];

/** TRI (`ggml_tri`): a square's triangle, the rest zero; the kernel writes result rows as arrays. */
const tri = rule((c, node) => {
    const [a] = c.all(1);
    c.type(a!, 'the source', F32);
    c.contiguous(a!, 'the source');
    c.need(a!.ne[0] === a!.ne[1], 'op-shape', () => `${dims(a!)} is not square`);
    c.result(node, F32, a!.ne);
    c.packed(node, 'the result');
    intSized(c, a!);
    oneOf(c, 0, 'triangle', TRI_TYPES);
    c.unusedParams(1);
});

/** FILL (`ggml_fill`, `ggml_fill_inplace`): a constant (any float: llama.cpp fills with -inf) in a's type and shape. */
const fill = rule((c, node) => {
    const [a] = c.all(1);
    c.type(a!, 'the source', F32, F16);
    c.contiguous(a!, 'the source');
    c.result(node, a!.type, a!.ne);
    c.packed(node, 'the result');
    intSized(c, node);
    c.unusedParams(1);
});

const XIELU = GGML_UNARY_OP_NAMES.indexOf('XIELU');

/**
 * UNARY (`ggml_unary` and its named forms, `ggml_xielu`): one of ggml's unary ops. GELU, SILU and their kin
 * (ops.cpp) only `assert` the shape and write in the source's type; the rest (unary-ops.cpp) GGML_ASSERT packed
 * rows, and XIELU whole rows one after another.
 */
const unary = rule((c, node) => {
    const [a] = c.all(1);
    c.type(a!, 'the source', F32, F16);
    c.result(node, a!.type, a!.ne);
    c.packed(a!, 'the source');
    c.packed(node, 'the result');
    intSized(c, a!);
    const op = c.int(0);
    c.need(op >= 0 && op < GGML_UNARY_OP_NAMES.length, 'op-params', `unary op ${op}`);
    if (op === XIELU) {
        c.contiguous(a!, 'the source', 1);
        c.contiguous(node, 'the result', 1);
        // alpha_n, alpha_p, beta, eps: any floats.
        c.unusedParams(5);
    } else
        c.unusedParams(1);
});

export const ELEMENTWISE_OP_RULES = {
    ADD_ID: addId,
    SQR: unaryMath,
    SQRT: unaryMath,
    LOG: unaryMath,
    SUM: sum,
    SUM_ROWS: rowReduction,
    CUMSUM: cumsum,
    MEAN: rowReduction,
    ARGMAX: argmax,
    REPEAT: repeat,
    CONCAT: concat,
    NORM: rowNorm,
    GROUP_NORM: groupNorm,
    L2_NORM: rowNorm,
    MUL_MAT_ID: mulMatId,
    SCALE: scale,
    SET: set,
    DIAG: diag,
    ROPE_BACK: ropeBack,
    CLAMP: clamp,
    IM2COL: im2col,
    POOL_2D: pool2d,
    PAD: pad,
    ARANGE: arange,
    ARGSORT: argsort,
    TOP_K: topK,
    TRI: tri,
    FILL: fill,
    UNARY: unary
} satisfies Record<string, OpRule>;
