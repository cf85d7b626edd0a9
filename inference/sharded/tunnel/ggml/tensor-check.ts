/**
 * What makes a peer's tensor safe to hand to the rpc-server (docs/peer-protocol.md, "Graph checks"): a type ggml
 * has, a shape whose strides fit that type, and bytes that lie wholly inside a buffer this session allocated. The
 * server checks less (`deserialize_tensor`: the type, and the data's bounds only by an assert that ends it), and
 * its kernels trust the rest. Pure: the session's buffers come in through `SessionBuffers`.
 */
import {GGML_MAX_DIMS, GGML_TYPES, type GgmlTypeTraits, typeName} from './ggml-tables.js';
import type {Dims, RpcTensor} from './rpc-tensor.js';

/** The rule a tensor or graph broke, named in the violation and the host's log line. */
export type GraphRule =
    | 'type' | 'shape' | 'strides' | 'buffer' | 'bounds' | 'view' | 'op' | 'op-shape' | 'op-type' | 'op-params'
    | 'sources' | 'ids' | 'size' | 'depth' | 'recompute';

export class GraphCheckError extends Error {
    constructor(readonly rule: GraphRule, message: string) {
        super(message);
        this.name = 'GraphCheckError';
    }
}

/** What a message calls a tensor: a name, or a function that makes it only when a message needs it. */
export type Naming = string | (() => string);

function named(what: Naming) {
    return typeof what === 'string' ? what : what();
}

export function need(condition: boolean, rule: GraphRule, message: () => string): asserts condition {
    if (!condition)
        throw new GraphCheckError(rule, message());
}

/** A buffer this session allocated on the server: its handle, size, and base address once the client asked for it. */
export interface SessionBuffer {
    handle: bigint,
    size: bigint,
    base: bigint | undefined
}

export interface SessionBuffers {
    get(handle: bigint): SessionBuffer | undefined
}

/** A tensor whose type and shape passed: its traits and byte extent, for the op rules. */
export interface ShapedTensor extends RpcTensor {
    traits: GgmlTypeTraits,
    /** `ggml_nbytes`: from its first byte to one past its last. */
    nbytes: bigint
}

const INT32_MAX = 2 ** 31 - 1;

/**
 * The shape rules every tensor obeys, whatever it is for: a type ggml has (not one it removed), every dimension at
 * least 1 (kernels divide by them) and its rows and row length within a C int, the first a whole number of blocks,
 * and for a quantized type blocks packed along it (ggml never views a quantized tensor otherwise).
 */
export function shapeTensor(tensor: RpcTensor, what: Naming): ShapedTensor {
    const traits = GGML_TYPES[tensor.type] ?? null;
    need(traits !== null, 'type', () => `${named(what)} has type ${tensor.type}, which ggml does not have`);
    need(tensor.ne.every((n) => n >= 1), 'shape', () => `${named(what)} has an empty dimension (${tensor.ne.join(' × ')})`);
    // Kernels count a row's elements and a tensor's rows in C ints (`const int nr = ggml_nrows(src0)`, `int n`).
    need(tensor.ne.every((n) => n <= INT32_MAX) && tensor.ne[1] * tensor.ne[2] * tensor.ne[3] <= INT32_MAX, 'shape',
        () => `${named(what)} has more elements in a row or more rows than a C int counts (${tensor.ne.join(' × ')})`);
    need(tensor.ne[0] % traits.blockSize === 0, 'shape', () => `${named(what)}: ${tensor.ne[0]} elements are no whole number of ${typeName(tensor.type)} blocks`);
    need(!traits.quantized || tensor.nb[0] === traits.typeSize, 'strides', () => `${named(what)}: a ${typeName(tensor.type)} tensor's blocks must be packed along its first dimension`);
    need(tensor.nb[0] >= 1, 'strides', () => `${named(what)} has a zero stride`);
    return Object.assign(tensor, {traits, nbytes: nbytesOf(tensor.ne, tensor.nb, traits)});
}

/** `ggml_nbytes`. */
function nbytesOf(ne: Dims, nb: Dims, traits: GgmlTypeTraits) {
    let bytes = traits.blockSize === 1
        ? BigInt(traits.typeSize)
        : BigInt(ne[0]) * BigInt(nb[0]) / BigInt(traits.blockSize);
    for (let dim = traits.blockSize === 1 ? 0 : 1; dim < GGML_MAX_DIMS; dim++)
        bytes += BigInt(ne[dim]! - 1) * BigInt(nb[dim]!);
    return bytes;
}

/** `ggml_row_size`: bytes of `elements` packed elements. */
export function rowSize(traits: GgmlTypeTraits, elements: number) {
    return traits.typeSize * elements / traits.blockSize;
}

/**
 * `ggml_is_contiguous_m_n(tensor, n, 4)`: dimensions above `n` laid out densely after each other (those of 1 not
 * checked). A dimension up to `n` sets the next one's stride even when it is 1: kernels (GLU's) then step rows by
 * `nb[1]` alone.
 */
export function isContiguousN(tensor: ShapedTensor, n: number) {
    let next = tensor.traits.typeSize;
    if (tensor.ne[0] !== tensor.traits.blockSize && tensor.nb[0] !== next)
        return false;
    next *= tensor.ne[0] / tensor.traits.blockSize;
    for (let dim = 1; dim < GGML_MAX_DIMS; dim++) {
        if (dim > n) {
            if (tensor.ne[dim] !== 1 && tensor.nb[dim] !== next)
                return false;
            next *= tensor.ne[dim]!;
        } else
            next = tensor.ne[dim]! * tensor.nb[dim]!;
    }
    return true;
}

export function isContiguous(tensor: ShapedTensor) {
    return isContiguousN(tensor, 0);
}

/** `ggml_is_contiguous_rows`: each row's elements packed. */
export function isContiguousRows(tensor: ShapedTensor) {
    return tensor.ne[0] === tensor.traits.blockSize || tensor.nb[0] === tensor.traits.typeSize;
}

/**
 * The tensor's bytes lie in a buffer of this session whose base the client has learnt: `[data, data + nbytes)`
 * inside `[base, base + size)`. With `allowNone`, a tensor may name no buffer and no data (GET_ALLOC_SIZE asks
 * about tensors not placed yet).
 */
export function checkPlacement(tensor: ShapedTensor, buffers: SessionBuffers, what: Naming, allowNone = false) {
    if (tensor.buffer === 0n && allowNone) {
        need(tensor.data === 0n, 'buffer', () => `${named(what)} has data but no buffer`);
        return;
    }
    const buffer = buffers.get(tensor.buffer);
    need(buffer !== undefined, 'buffer', () => `${named(what)} names a buffer this session did not allocate`);
    need(buffer.base !== undefined, 'buffer', () => `${named(what)} lies in a buffer whose base the client never asked for`);
    const end = tensor.data + tensor.nbytes;
    need(tensor.data >= buffer.base && end <= buffer.base + buffer.size, 'bounds',
        () => `${named(what)}'s ${tensor.nbytes} bytes reach outside its buffer of ${buffer.size}`);
    // Overlapping strides could describe far more elements than bytes: kernels would loop for ever on a few bytes.
    need(denseBytes(tensor) <= buffer.size, 'strides', () => `${named(what)} describes ${tensor.ne.join(' × ')} elements, more than its buffer holds`);
}

/** Bytes of the tensor's elements packed densely. */
export function denseBytes(tensor: ShapedTensor) {
    return tensor.ne.reduce((product, n) => product * BigInt(n), 1n) * BigInt(tensor.traits.typeSize) / BigInt(tensor.traits.blockSize);
}

/**
 * A region `[offset, offset + size)` of a placed tensor, as SET_TENSOR, GET_TENSOR and MEMSET_TENSOR name one (and
 * COPY_TENSOR the source's bytes in its destination): inside the buffer, which the server checks too, and inside
 * the tensor's own bytes, which it leaves to `ggml_backend_tensor_set`/`_get`'s GGML_ASSERT (the end of it).
 */
export function checkRegion(tensor: ShapedTensor, buffers: SessionBuffers, offset: bigint, size: bigint, what: Naming) {
    const buffer = buffers.get(tensor.buffer);
    need(buffer !== undefined && buffer.base !== undefined, 'buffer', () => `${named(what)} names a buffer this session did not allocate`);
    const start = tensor.data + offset;
    need(start >= buffer.base && start + size <= buffer.base + buffer.size, 'bounds',
        () => `${named(what)} reaches outside its buffer (${size} bytes at offset ${offset})`);
    need(offset + size <= tensor.nbytes, 'bounds', () => `${named(what)} reaches outside its tensor's ${tensor.nbytes} bytes (${size} bytes at offset ${offset})`);
}
