/**
 * ggml-rpc's serialized tensor (`rpc_tensor`, packed, little-endian, 296 bytes): how a coordinator describes a
 * tensor in SET_TENSOR, GET_TENSOR, COPY_TENSOR, INIT_TENSOR, GET_ALLOC_SIZE, MEMSET_TENSOR and each tensor of a
 * GRAPH_COMPUTE. Everything in it is the peer's claim, checked by `tensor-check.ts` and `graph-check.ts`.
 */
import {GGML_MAX_DIMS, GGML_MAX_OP_PARAMS_I32, GGML_MAX_SRC} from './ggml-tables.js';

export const RPC_TENSOR_BYTES = 296;
const NAME_BYTES = 64;

/** Byte offsets of the fields (`#pragma pack(1)`). */
const At = {
    id: 0,
    type: 8,
    buffer: 12,
    ne: 20,
    nb: 36,
    op: 52,
    opParams: 56,
    flags: 120,
    src: 124,
    viewSrc: 204,
    viewOffs: 212,
    data: 220,
    name: 228,
    useCount: 292
} as const;

export type Dims = [number, number, number, number];

export interface RpcTensor {
    /** The coordinator's address of its own tensor: an id, unique within a graph; 0 means none. */
    id: bigint,
    type: number,
    /** A buffer handle the server gave out (ALLOC_BUFFER's reply), or 0 for none. */
    buffer: bigint,
    /** Elements per dimension (u32 on the wire). */
    ne: Dims,
    /** Stride in bytes per dimension (u32 on the wire). */
    nb: Dims,
    op: number,
    /** 16 int32 words; some ops keep floats or 64-bit values in them. */
    opParams: Int32Array,
    flags: number,
    /** Source tensor ids, 0 where unused. */
    src: bigint[],
    viewSrc: bigint,
    viewOffs: bigint,
    /** The server's address of the tensor's first byte. */
    data: bigint,
    useCount: number
}

/** A u64 field; most are 0 (unused sources), read without making a bigint. */
function u64(bytes: Buffer, at: number) {
    const low = bytes.readUInt32LE(at);
    const high = bytes.readUInt32LE(at + 4);
    return low === 0 && high === 0 ? 0n : (BigInt(high) << 32n) | BigInt(low);
}

function u32x4(bytes: Buffer, at: number): Dims {
    return [bytes.readUInt32LE(at), bytes.readUInt32LE(at + 4), bytes.readUInt32LE(at + 8), bytes.readUInt32LE(at + 12)];
}

/** Reads a tensor; a graph's are read by the hundred, once per new graph (docs/peer-protocol.md, "Graph checks"). */
export function readRpcTensor(bytes: Buffer, offset = 0): RpcTensor {
    const opParams = new Int32Array(GGML_MAX_OP_PARAMS_I32);
    for (let index = 0; index < GGML_MAX_OP_PARAMS_I32; index++)
        opParams[index] = bytes.readInt32LE(offset + At.opParams + 4 * index);
    const src: bigint[] = new Array(GGML_MAX_SRC);
    for (let index = 0; index < GGML_MAX_SRC; index++)
        src[index] = u64(bytes, offset + At.src + 8 * index);
    return {
        id: u64(bytes, offset + At.id),
        type: bytes.readUInt32LE(offset + At.type),
        buffer: u64(bytes, offset + At.buffer),
        ne: u32x4(bytes, offset + At.ne),
        nb: u32x4(bytes, offset + At.nb),
        op: bytes.readUInt32LE(offset + At.op),
        opParams,
        flags: bytes.readInt32LE(offset + At.flags),
        src,
        viewSrc: u64(bytes, offset + At.viewSrc),
        viewOffs: u64(bytes, offset + At.viewOffs),
        data: u64(bytes, offset + At.data),
        useCount: bytes.readInt32LE(offset + At.useCount)
    };
}

/** Writes a tensor in place (the name is left as it is): for tests and tools that build or alter graphs. */
export function writeRpcTensor(tensor: RpcTensor, bytes: Buffer, offset = 0) {
    bytes.writeBigUInt64LE(tensor.id, offset + At.id);
    bytes.writeUInt32LE(tensor.type, offset + At.type);
    bytes.writeBigUInt64LE(tensor.buffer, offset + At.buffer);
    for (let index = 0; index < GGML_MAX_DIMS; index++) {
        bytes.writeUInt32LE(tensor.ne[index]!, offset + At.ne + 4 * index);
        bytes.writeUInt32LE(tensor.nb[index]!, offset + At.nb + 4 * index);
    }
    bytes.writeUInt32LE(tensor.op, offset + At.op);
    for (let index = 0; index < GGML_MAX_OP_PARAMS_I32; index++)
        bytes.writeInt32LE(tensor.opParams[index]!, offset + At.opParams + 4 * index);
    bytes.writeInt32LE(tensor.flags, offset + At.flags);
    for (let index = 0; index < GGML_MAX_SRC; index++)
        bytes.writeBigUInt64LE(tensor.src[index]!, offset + At.src + 8 * index);
    bytes.writeBigUInt64LE(tensor.viewSrc, offset + At.viewSrc);
    bytes.writeBigUInt64LE(tensor.viewOffs, offset + At.viewOffs);
    bytes.writeBigUInt64LE(tensor.data, offset + At.data);
    bytes.writeInt32LE(tensor.useCount, offset + At.useCount);
}

/** The tensor's name, for log lines only (the peer chooses it). */
export function rpcTensorName(bytes: Buffer, offset = 0) {
    const name = bytes.subarray(offset + At.name, offset + At.name + NAME_BYTES);
    const end = name.indexOf(0);
    return name.subarray(0, end < 0 ? NAME_BYTES : end).toString('utf8').replace(/[^\x20-\x7e]/g, '?');
}

/** Where a tensor's buffer handle and data address sit, for rewriting them in place. */
export const RPC_TENSOR_BUFFER_OFFSET = At.buffer;
export const RPC_TENSOR_DATA_OFFSET = At.data;
