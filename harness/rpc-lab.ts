/**
 * A hand-driven ggml-rpc client for tests (docs/peer-protocol.md, "Graph checks"): it speaks the protocol to a real
 * rpc-server, through any tunnel stream (a shard session's, or a local socket with or without the host's guard), one
 * request at a time, and builds tensors and graphs by hand. What a hostile coordinator can send, and what an honest
 * one does.
 */
import {EventEmitter} from 'node:events';
import {connect} from 'node:net';
import {RpcServerHost} from '../engine/rpc/rpc-server-host.js';
import {GGML_MAX_OP_PARAMS_I32, GGML_MAX_SRC, GGML_TYPES, GgmlOp, type GgmlOpName} from '../inference/sharded/tunnel/ggml/ggml-tables.js';
import {type Dims, RPC_TENSOR_BYTES, type RpcTensor, writeRpcTensor} from '../inference/sharded/tunnel/ggml/rpc-tensor.js';
import type {SessionBuffers} from '../inference/sharded/tunnel/ggml/tensor-check.js';
import {hostFilter, type SessionMeter} from '../inference/sharded/tunnel/rpc-filters.js';
import {AllocationBudget} from '../inference/sharded/tunnel/rpc-guard.js';
import {RpcCommand} from '../inference/sharded/tunnel/rpc-stream.js';
import type {TunnelStream} from '../inference/sharded/tunnel/shard-protocol.js';
import {pipeSocket, SocketStream} from '../inference/sharded/tunnel/socket-pipe.js';
import {testRpcBinaries} from './rpc-binaries.js';

/** One end of an in-memory stream pair: what one writes, the other receives. */
class MemoryStream extends EventEmitter implements TunnelStream {
    closed = false;
    other!: MemoryStream;

    write(bytes: Uint8Array) {
        if (this.closed)
            return false;
        const copy = Buffer.from(bytes);
        queueMicrotask(() => this.other.closed || this.other.emit('data', copy));
        return true;
    }

    close(reason: string) {
        if (this.closed)
            return;
        this.closed = true;
        this.emit('close', reason);
        this.other.close(reason);
    }
}

/**
 * A connection to a local rpc server through the host's guard, as a peer's session reaches it: the returned stream
 * is the coordinator's end. `budget` is the session's allocation budget (defaults to 1 GiB); `onRefused` hears why
 * the guard ended the connection.
 */
export function guardedConnection(port: number, options: {budget?: AllocationBudget, onRefused?: (error: Error) => void, timing?: {ms: number},
    meter?: SessionMeter, maxGraphTokens?: number} = {}) {
    const coordinator = new MemoryStream();
    const host = new MemoryStream();
    coordinator.other = host;
    host.other = coordinator;
    const socket = connect({host: '127.0.0.1', port});
    const filter = hostFilter({budget: options.budget ?? new AllocationBudget(2n ** 30n), ...(options.meter !== undefined && {meter: options.meter}),
        ...(options.maxGraphTokens !== undefined && {maxGraphTokens: options.maxGraphTokens})});
    const {timing} = options;
    // With `timing`, the time the host's codec and guard spend on the coordinator's bytes is added up there.
    const timed = timing === undefined ? filter : {...filter, fromTunnel: (chunk: Uint8Array) => {
        const started = performance.now();
        try {
            return filter.fromTunnel(chunk);
        } finally {
            timing.ms += performance.now() - started;
        }
    }};
    pipeSocket(socket, host, timed, (_reason, refused) => {
        if (refused !== undefined)
            options.onRefused?.(refused);
    });
    return coordinator;
}

/** A plain TCP connection to a server, no guard: what the server itself does with bytes. */
export function directConnection(port: number): TunnelStream {
    return new SocketStream(port);
}

export class RpcConnectionClosed extends Error {}

/** ggml-rpc requests and replies over a tunnel stream, one at a time. */
export class RpcLabClient {
    private received = Buffer.alloc(0);
    private waiting: {bytes: number, resolve: (reply: Buffer) => void, reject: (error: Error) => void} | undefined;
    closedReason: string | undefined;

    constructor(readonly stream: TunnelStream) {
        stream.on('data', (bytes) => {
            this.received = Buffer.concat([this.received, bytes]);
            this.deliver();
        });
        stream.on('close', (reason) => {
            this.closedReason = reason;
            this.waiting?.reject(new RpcConnectionClosed(`the connection closed: ${reason}`));
            this.waiting = undefined;
        });
    }

    /** Sends a request; resolves with its reply's payload when the command has one. */
    request(command: number, payload: Buffer, replyBytes?: number): Promise<Buffer | undefined> {
        if (this.closedReason !== undefined)
            return Promise.reject(new RpcConnectionClosed(`the connection closed: ${this.closedReason}`));
        const header = Buffer.alloc(9);
        header[0] = command;
        header.writeBigUInt64LE(BigInt(payload.length), 1);
        this.stream.write(Buffer.concat([header, payload]));
        if (replyBytes === undefined)
            return Promise.resolve(undefined);
        return new Promise((resolve, reject) => {
            this.waiting = {bytes: replyBytes, resolve, reject};
            this.deliver();
        });
    }

    private deliver() {
        if (this.waiting === undefined || this.received.length < 8)
            return;
        const size = Number(this.received.readBigUInt64LE(0));
        if (this.received.length < 8 + size)
            return;
        const reply = this.received.subarray(8, 8 + size);
        this.received = this.received.subarray(8 + size);
        const {resolve} = this.waiting;
        this.waiting = undefined;
        resolve(Buffer.from(reply));
    }

    async hello() {
        const reply = await this.request(RpcCommand.HELLO, Buffer.alloc(24), 28);
        return reply![0]!;
    }

    async allocBuffer(size: bigint) {
        const payload = Buffer.alloc(12);
        payload.writeBigUInt64LE(size, 4);
        const reply = (await this.request(RpcCommand.ALLOC_BUFFER, payload, 16))!;
        return {handle: reply.readBigUInt64LE(0), size: reply.readBigUInt64LE(8)};
    }

    async bufferBase(handle: bigint) {
        const payload = Buffer.alloc(8);
        payload.writeBigUInt64LE(handle);
        return (await this.request(RpcCommand.BUFFER_GET_BASE, payload, 8))!.readBigUInt64LE(0);
    }

    /** A buffer, its base asked for, as llama.cpp's client sets one up. */
    async buffer(size: bigint): Promise<LabBuffer> {
        const {handle, size: granted} = await this.allocBuffer(size);
        return {handle, size: granted, base: await this.bufferBase(handle)};
    }

    freeBuffer(handle: bigint) {
        const payload = Buffer.alloc(8);
        payload.writeBigUInt64LE(handle);
        return this.request(RpcCommand.FREE_BUFFER, payload);
    }

    setTensor(tensor: RpcTensor, data: Buffer, offset = 0n) {
        const payload = Buffer.alloc(RPC_TENSOR_BYTES + 8 + data.length);
        writeRpcTensor(tensor, payload);
        payload.writeBigUInt64LE(offset, RPC_TENSOR_BYTES);
        data.copy(payload, RPC_TENSOR_BYTES + 8);
        return this.request(RpcCommand.SET_TENSOR, payload);
    }

    async getTensor(tensor: RpcTensor, size: number, offset = 0n) {
        const payload = Buffer.alloc(RPC_TENSOR_BYTES + 16);
        writeRpcTensor(tensor, payload);
        payload.writeBigUInt64LE(offset, RPC_TENSOR_BYTES);
        payload.writeBigUInt64LE(BigInt(size), RPC_TENSOR_BYTES + 8);
        return (await this.request(RpcCommand.GET_TENSOR, payload, size))!;
    }

    graphCompute(payload: Buffer) {
        return this.request(RpcCommand.GRAPH_COMPUTE, payload);
    }

    graphRecompute() {
        return this.request(RpcCommand.GRAPH_RECOMPUTE, Buffer.alloc(4));
    }

    /** A round trip that proves the server is alive and done with what came before (GET_ALIGNMENT). */
    async alive() {
        return (await this.request(RpcCommand.GET_ALIGNMENT, Buffer.alloc(4), 8))!.readBigUInt64LE(0) > 0n;
    }

    close() {
        this.stream.close('done');
    }
}

export interface LabBuffer {
    handle: bigint,
    size: bigint,
    base: bigint
}

export interface TensorSpec {
    type: number,
    ne: readonly number[],
    op?: GgmlOpName,
    /** Sources, by the tensors this builder made. */
    src?: (RpcTensor | undefined)[],
    /** int32 op params (floats through `f32`). */
    params?: readonly number[],
    /** A view of this tensor (strides and offset given, or the source's own when left out). */
    view?: {of: RpcTensor, offset?: number, nb?: readonly number[]}
}

/** ggml's `GGML_TENSOR_FLAG_COMPUTE`: a node the backend computes (llama.cpp's scheduler sets it on each). */
const TENSOR_FLAG_COMPUTE = 16;

/** The int32 word holding a float, for op params. */
export function f32(value: number) {
    return new Int32Array(new Float32Array([value]).buffer)[0]!;
}

/** Tensors laid out in one buffer (32-byte aligned, packed strides) and graphs of them. */
export class GraphBuilder {
    private nextId = 0x1000n;
    private used = 0n;
    readonly tensors: RpcTensor[] = [];

    constructor(readonly buffer: LabBuffer) {}

    /** A new tensor: packed in the buffer, or a view. */
    tensor(spec: TensorSpec): RpcTensor {
        const traits = GGML_TYPES[spec.type];
        const ne = [1, 1, 1, 1].map((one, dim) => spec.ne[dim] ?? one) as Dims;
        const packed = [0, 0, 0, 0] as Dims;
        packed[0] = traits?.typeSize ?? 4;
        packed[1] = Math.floor(packed[0] * ne[0] / (traits?.blockSize || 1));
        packed[2] = packed[1] * ne[1];
        packed[3] = packed[2] * ne[2];
        let data: bigint;
        let nb = packed;
        let viewSrc = 0n;
        let viewOffs = 0n;
        if (spec.view !== undefined) {
            const owner = spec.view.of.viewSrc === 0n ? spec.view.of : this.tensors.find((tensor) => tensor.id === spec.view!.of.viewSrc)!;
            viewOffs = BigInt(spec.view.offset ?? 0) + (spec.view.of.viewSrc === 0n ? 0n : spec.view.of.viewOffs);
            data = owner.data + viewOffs;
            viewSrc = owner.id;
            nb = (spec.view.nb ? [packed[0], ...spec.view.nb.slice(0, 3)] : spec.view.of.nb) as Dims;
        } else {
            data = this.buffer.base + this.used;
            const bytes = BigInt(packed[3] * ne[3]);
            this.used += (bytes + 31n) / 32n * 32n;
            if (this.used > this.buffer.size)
                throw new RangeError('the lab buffer is full');
        }
        const opParams = new Int32Array(GGML_MAX_OP_PARAMS_I32);
        for (const [slot, value] of (spec.params ?? []).entries())
            opParams[slot] = value;
        const tensor: RpcTensor = {
            id: this.nextId++, type: spec.type, buffer: this.buffer.handle, ne, nb: [...nb] as Dims, op: GgmlOp[spec.op ?? 'NONE'],
            opParams, flags: spec.op === undefined || spec.op === 'NONE' ? 0 : TENSOR_FLAG_COMPUTE, src: Array.from({length: GGML_MAX_SRC}, (_, slot) => spec.src?.[slot]?.id ?? 0n),
            viewSrc, viewOffs, data, useCount: 0
        };
        this.tensors.push(tensor);
        return tensor;
    }

    /** Bytes a packed tensor of this builder holds. */
    static bytes(tensor: RpcTensor) {
        return tensor.nb[3] * tensor.ne[3];
    }

    /** GRAPH_COMPUTE's payload: these nodes, and every tensor they reach (sources first), as llama.cpp serializes. */
    graph(nodes: RpcTensor[]): Buffer {
        const byId = new Map(this.tensors.map((tensor) => [tensor.id, tensor]));
        const listed: RpcTensor[] = [];
        const seen = new Set<bigint>();
        const add = (tensor: RpcTensor | undefined) => {
            if (tensor === undefined || seen.has(tensor.id))
                return;
            seen.add(tensor.id);
            for (const id of tensor.src)
                add(byId.get(id));
            add(byId.get(tensor.viewSrc));
            listed.push(tensor);
        };
        for (const node of nodes)
            add(node);
        return encodeGraph(nodes.map((node) => node.id), listed);
    }
}

/** A GRAPH_COMPUTE payload for device 0. */
export function encodeGraph(nodes: bigint[], tensors: RpcTensor[]) {
    const payload = Buffer.alloc(8 + 8 * nodes.length + 4 + RPC_TENSOR_BYTES * tensors.length);
    payload.writeUInt32LE(nodes.length, 4);
    for (const [index, id] of nodes.entries())
        payload.writeBigUInt64LE(id, 8 + 8 * index);
    payload.writeUInt32LE(tensors.length, 8 + 8 * nodes.length);
    for (const [index, tensor] of tensors.entries())
        writeRpcTensor(tensor, payload, 12 + 8 * nodes.length + RPC_TENSOR_BYTES * index);
    return payload;
}

/** A real rpc server for a test (CPU, one thread), stopped at teardown. */
export async function labServer(t: {teardown(fn: () => Promise<void>): void}, threads = 1) {
    const {prepareRpcServerDir} = await import('../engine/rpc/rpc-server-dir.js');
    const files = await prepareRpcServerDir(await testRpcBinaries());
    const server = new RpcServerHost({binaries: files, threads});
    const lines: string[] = [];
    server.on('log', (line) => lines.push(line));
    const exits: {code: number | null, signal: NodeJS.Signals | null}[] = [];
    server.on('exit', (code, signal) => exits.push({code, signal}));
    await server.start();
    t.teardown(() => server.stop());
    return {server, port: server.port!, lines, exits};
}

/**
 * A real server reached with no guard (what the server itself does with a graph), a client that said HELLO, and a
 * buffer of `bufferBytes` with its base: for property tests that compute what the checks accept.
 */
export async function directLab(t: {teardown(fn: () => unknown): void}, threads: number, bufferBytes: bigint) {
    const lab = await labServer(t as {teardown(fn: () => Promise<void>): void}, threads);
    const client = new RpcLabClient(directConnection(lab.port));
    t.teardown(() => client.close());
    await client.hello();
    const buffer = await client.buffer(bufferBytes);
    return {lab, client, buffer};
}

/** One lab buffer as the guard's buffer table: for checking a builder's graph without a server. */
export function tableOf(buffer: LabBuffer): SessionBuffers {
    return {get: (handle) => handle === buffer.handle ? buffer : undefined};
}

export const floats = (values: ArrayLike<number>) => Buffer.from(Float32Array.from(values).buffer);
export const ints = (values: ArrayLike<number>) => Buffer.from(Int32Array.from(values).buffer);
export const readFloats = (bytes: Buffer) => Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4));
export const readInts = (bytes: Buffer) => Array.from(new Int32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4));
