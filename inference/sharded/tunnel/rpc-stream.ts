/**
 * The RPC-aware codec of a shard tunnel: follows ggml-rpc protocol v6 both ways as the bytes arrive, in chunks of
 * any size, with the rewrites and checks of docs/peer-protocol.md, "Shard channel"; anything else the protocol does
 * not allow ends the session. Large payloads (weights, activations) pass through as views of the incoming chunks,
 * never buffered. llama.cpp's client sends one command at a time and waits for its reply, if any.
 */

import {RPC_TENSOR_BYTES} from './ggml/rpc-tensor.js';
import {COMMAND_NAMES, COMMAND_SPECS, type CommandSpec, HELLO_VERSION_BYTES, RPC_CONN_CAPS_BYTES, RpcCommand, type RpcCommandName} from './rpc-commands.js';
import {GuardRefusal, type GuardRule, type ReplyContext, type RpcGuard} from './rpc-guard.js';

/** ggml-rpc's protocol version this codec follows; a server of another major version is refused. */
export const RPC_PROTO_MAJOR_VERSION = 6;

/** Bytes of a serialized `rpc_tensor` (ids, type, shape, strides, op and its params, sources, view, data, name). */
export {RPC_CONN_CAPS_BYTES, RPC_TENSOR_BYTES, RpcCommand, type RpcCommandName};
/** A request's header: command byte and payload size. */
const REQUEST_HEADER_BYTES = 1 + 8;
/** A reply's header: payload size. */
const REPLY_HEADER_BYTES = 8;
const DEVICE_INDEX_BYTES = 4;
/** Offset of GET_TENSOR's requested size: after the tensor and the offset. */
const GET_TENSOR_SIZE_OFFSET = RPC_TENSOR_BYTES + 8;
const U64_LIMIT = 2n ** 64n;

/**
 * Devices a stage exposes. The plan gives each stage one contiguous layer range and one reported memory
 * (`inference/sharded/layer-split.ts`); a server with several devices would show up as several RPC devices, each
 * taking a share of the layers in proportion to memory the plan never assigned. So DEVICE_COUNT replies are clamped
 * to one and requests naming another device are refused: the stage's `rpc-server` serves its first device.
 */
const STAGE_DEVICES = 1;

/**
 * Replies that may be outstanding. llama.cpp's client waits for each reply before its next command (one dispatcher
 * thread), so it never has more than one; a long backlog means a misbehaving peer. The bound keeps the queue small.
 */
const MAX_PENDING_REPLIES = 32;

/**
 * Default largest payload: 4 GiB. A SET_TENSOR carries a whole tensor (the token embeddings of a large model run to a
 * few GiB) and GET_TENSOR replies read one back; nothing else comes close.
 */
export const DEFAULT_MAX_PAYLOAD_BYTES = 4 * 2 ** 30;

/** Leading request payload bytes the codec must read or rewrite before forwarding anything of the command. */
function requestInspectBytes(command: number, spec: CommandSpec): number {
    if (command === RpcCommand.HELLO || command === RpcCommand.GET_TENSOR)
        return spec.requestBytes;
    return spec.device ? DEVICE_INDEX_BYTES : 0;
}

/** Memory a device reports, in bytes (u64). */
export interface DeviceMemory {
    free: bigint,
    total: bigint
}

export interface RpcSessionOptions {
    /**
     * What GET_DEVICE_MEMORY replies report instead of the server's own figures: fixed, or asked for each reply
     * (called with the device index, always 0). Leave out to forward the server's figures.
     */
    reportMemory?: DeviceMemory | ((device: number) => DeviceMemory),
    /** Largest payload of any request or reply; defaults to `DEFAULT_MAX_PAYLOAD_BYTES`. */
    maxPayloadBytes?: number,
    /**
     * The host's checks of a peer's requests (`rpc-guard.ts`): buffers, the allocation budget, tensors and graphs.
     * Defaults to none (the coordinator's side, whose client is this node's own llama.cpp).
     */
    guard?: RpcGuard
}

export type RpcViolationCode =
    /** A command byte outside the protocol, or the client-internal NONE. */
    | 'unknown-command'
    /** The first command is not HELLO. */
    | 'hello-expected'
    /** HELLO after the first command (the server would hang up). */
    | 'repeated-hello'
    /** A payload of another size than its command's layout (HELLO included), or shorter than its least. */
    | 'bad-size'
    /** A payload (or a requested tensor read) larger than `maxPayloadBytes`. */
    | 'too-large'
    /** A request for a device other than the stage's one. */
    | 'bad-device'
    /** More than `MAX_PENDING_REPLIES` replies outstanding. */
    | 'reply-backlog'
    /** Reply bytes while no reply is expected. */
    | 'unexpected-reply'
    /** A reply of another size than its command's. */
    | 'bad-reply-size'
    /** A HELLO reply from a server of another major protocol version. */
    | 'version'
    /** The host's guard refused a request: `rule` says which check (docs/peer-protocol.md, "Graph checks"). */
    | 'unsafe';

/**
 * The RPC stream broke the protocol: the session ends (and only it). `side` says who sent the offending bytes, so
 * that the caller blames the right party: the local llama.cpp or `rpc-server`, or the peer at the tunnel's far end.
 */
export class RpcViolation extends Error {
    constructor(readonly code: RpcViolationCode, readonly side: 'client' | 'server', message: string, readonly rule?: GuardRule) {
        super(`RPC ${side} ${message}`);
        this.name = 'RpcViolation';
    }
}

/** Traffic of one session, for metrics. */
export interface RpcCounters {
    bytesFromClient: number,
    bytesFromServer: number,
    /** Commands forwarded, by name. */
    commands: Record<RpcCommandName, number>,
    /** GRAPH_COMPUTE and GRAPH_RECOMPUTE (a reused graph): about one per token and stage. */
    graphComputes: number
}

interface FrameHandler {
    /** Sees a frame's first byte, so that bytes no frame may start with are refused at once, not after a header. */
    begin(firstByte: number): void,
    /** Validates a complete header; returns the frame's payload size and how many of its first bytes to inspect. */
    header(head: Buffer): {payloadBytes: number, inspectBytes: number},
    /** Validates, and may rewrite in place, the inspected payload prefix; nothing of the frame is forwarded before. */
    inspect(prefix: Buffer): void
}

/**
 * Splits one direction into frames: holds each frame's header and inspected prefix (a few hundred bytes at most)
 * until complete, forwards them (rewritten) as a copy, then the rest of the payload as views of the input chunks.
 * Forwarded bytes are always as many as received: rewrites keep sizes.
 */
class FrameSplitter {
    private head: Buffer;
    private held = 0;
    private wanted: number;
    private inHeader = true;
    private payloadBytes = 0;
    /** Payload bytes still to pass through untouched. */
    private streaming = 0;

    private readonly baseBytes: number;

    /** `maxInspectBytes`: what most frames inspect; a larger inspection (a whole graph) grows the buffer for its frame. */
    constructor(private readonly headerBytes: number, maxInspectBytes: number, private readonly handler: FrameHandler) {
        this.baseBytes = headerBytes + maxInspectBytes;
        this.head = Buffer.alloc(this.baseBytes);
        this.wanted = headerBytes;
    }

    get heldBytes() {
        return this.held;
    }

    push(chunk: Uint8Array): Uint8Array[] {
        const out: Uint8Array[] = [];
        let at = 0;
        while (at < chunk.length) {
            if (this.streaming > 0) {
                const end = Math.min(chunk.length, at + this.streaming);
                out.push(chunk.subarray(at, end));
                this.streaming -= end - at;
                at = end;
                continue;
            }
            if (this.held === 0)
                this.handler.begin(chunk[at]!);
            const end = Math.min(chunk.length, at + this.wanted - this.held);
            if (this.held + end - at > this.head.length) { // a graph, held whole: room as its bytes arrive, not as claimed
                const grown = Buffer.allocUnsafe(Math.min(this.wanted, Math.max(2 * this.head.length, this.held + end - at)));
                this.head.copy(grown, 0, 0, this.held);
                this.head = grown;
            }
            this.head.set(chunk.subarray(at, end), this.held);
            this.held += end - at;
            at = end;
            if (this.held < this.wanted)
                break;
            if (this.inHeader) {
                const {payloadBytes, inspectBytes} = this.handler.header(this.head);
                this.payloadBytes = payloadBytes;
                this.inHeader = false;
                this.wanted += inspectBytes;
                if (inspectBytes > 0)
                    continue;
            }
            this.handler.inspect(this.head.subarray(this.headerBytes, this.wanted));
            out.push(Buffer.from(this.head.subarray(0, this.wanted)));
            this.streaming = this.payloadBytes - (this.wanted - this.headerBytes);
            if (this.head.length > this.baseBytes)
                this.head = Buffer.alloc(this.baseBytes);
            this.held = 0;
            this.wanted = this.headerBytes;
            this.inHeader = true;
        }
        return out;
    }
}

interface ExpectedReply {
    command: number,
    bytes: number,
    device: number,
    /** What the guard learns from the reply. */
    guarded?: ReplyContext
}

/**
 * One RPC connection through a tunnel. Feed each direction's bytes as they arrive; each call returns the bytes to
 * forward (views of the input where unchanged) or throws: an `RpcViolation` for a protocol breach, a `RangeError`
 * for a bad `reportMemory` figure. After a throw the session is dead and every later call throws the same error.
 * Pure and synchronous: no sockets, no timers.
 */
export class RpcSession {
    private readonly maxPayloadBytes: number;
    private readonly maxPayload: bigint;
    private readonly reportMemory: RpcSessionOptions['reportMemory'];
    private readonly hostGuard: RpcGuard | undefined;
    /** The current request's payload size, for the guard. */
    private payloadBytes = 0;
    private readonly requests: FrameSplitter;
    private readonly replies: FrameSplitter;
    private readonly expected: ExpectedReply[] = [];
    private readonly stats: RpcCounters = {
        bytesFromClient: 0,
        bytesFromServer: 0,
        commands: Object.fromEntries(Object.keys(COMMAND_SPECS).map((name) => [name, 0])) as Record<RpcCommandName, number>,
        graphComputes: 0
    };
    private helloSeen = false;
    private command = 0;
    private failure: Error | undefined;

    constructor(options: RpcSessionOptions = {}) {
        this.maxPayloadBytes = options.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
        if (!Number.isSafeInteger(this.maxPayloadBytes) || this.maxPayloadBytes < 0)
            throw new RangeError(`maxPayloadBytes must be a safe non-negative integer, not ${this.maxPayloadBytes}`);
        if (options.reportMemory !== undefined && typeof options.reportMemory !== 'function')
            checkMemory(options.reportMemory);
        this.maxPayload = BigInt(this.maxPayloadBytes);
        this.reportMemory = options.reportMemory;
        this.hostGuard = options.guard;
        const maxRequestInspect = Math.max(...(Object.keys(COMMAND_SPECS) as RpcCommandName[])
            .map((name) => requestInspectBytes(RpcCommand[name], COMMAND_SPECS[name])));
        // The guard reads the tensor headers of requests (up to a GET_ALLOC_SIZE's 11) and whole graphs.
        this.requests = new FrameSplitter(REQUEST_HEADER_BYTES, this.hostGuard ? Math.max(maxRequestInspect, 4 + 11 * RPC_TENSOR_BYTES) : maxRequestInspect, {
            begin: (command) => this.beginRequest(command),
            header: (head) => this.requestHeader(head),
            inspect: (prefix) => this.inspectRequest(prefix)
        });
        this.replies = new FrameSplitter(REPLY_HEADER_BYTES, COMMAND_SPECS.HELLO.replyBytes as number, {
            begin: () => this.beginReply(),
            header: (head) => this.replyHeader(head),
            inspect: (prefix) => this.inspectReply(prefix)
        });
    }

    /** Bytes from llama.cpp's RPC client, on their way to the server. */
    fromClient(chunk: Uint8Array): Uint8Array[] {
        this.stats.bytesFromClient += chunk.length;
        return this.guard(() => this.requests.push(chunk));
    }

    /** Bytes from the `rpc-server`, on their way to the client. */
    fromServer(chunk: Uint8Array): Uint8Array[] {
        this.stats.bytesFromServer += chunk.length;
        return this.guard(() => this.replies.push(chunk));
    }

    /** A snapshot of the traffic so far. */
    get counters(): RpcCounters {
        return {...this.stats, commands: {...this.stats.commands}};
    }

    /** GRAPH_COMPUTE and GRAPH_RECOMPUTE requests so far (without copying every counter). */
    get graphComputes() {
        return this.stats.graphComputes;
    }

    /** Requests forwarded whose replies have not come back whole yet: a stage that keeps some waiting may be gone. */
    get awaitingReplies() {
        return this.expected.length;
    }

    /** Bytes held back while waiting for the rest of a header (both directions): bounded by a few hundred. */
    get bufferedBytes() {
        return this.requests.heldBytes + this.replies.heldBytes;
    }

    private guard(work: () => Uint8Array[]): Uint8Array[] {
        if (this.failure)
            throw this.failure;
        try {
            return work();
        } catch (error) {
            this.failure = error as Error;
            throw error;
        }
    }

    private payloadSize(head: Buffer, offset: number, side: 'client' | 'server', what: string): number {
        const size = head.readBigUInt64LE(offset);
        if (size > this.maxPayload)
            throw new RpcViolation('too-large', side, `${what} of ${size} bytes exceeds ${this.maxPayloadBytes}`);
        return Number(size);
    }

    private beginRequest(command: number) {
        const name = COMMAND_NAMES[command];
        if (name === undefined)
            throw new RpcViolation('unknown-command', 'client', `sent unknown command ${command}`);
        if (!this.helloSeen && command !== RpcCommand.HELLO)
            throw new RpcViolation('hello-expected', 'client', `sent ${name} before HELLO`);
        if (this.helloSeen && command === RpcCommand.HELLO)
            throw new RpcViolation('repeated-hello', 'client', 'sent HELLO again');
        this.command = command;
    }

    private requestHeader(head: Buffer) {
        const name = COMMAND_NAMES[this.command]!;
        const spec = COMMAND_SPECS[name];
        const payloadBytes = this.payloadSize(head, 1, 'client', `${name} payload`);
        if (spec.variable ? payloadBytes < spec.requestBytes : payloadBytes !== spec.requestBytes) {
            const wanted = spec.variable ? `at least ${spec.requestBytes}` : `${spec.requestBytes}`;
            throw new RpcViolation('bad-size', 'client', `sent ${name} with ${payloadBytes} payload bytes, not ${wanted}`);
        }
        this.payloadBytes = payloadBytes;
        const guarded = this.guarded(name, () => this.hostGuard?.inspectBytes(this.command, payloadBytes)) ?? 0;
        return {payloadBytes, inspectBytes: Math.max(requestInspectBytes(this.command, spec), guarded)};
    }

    private inspectRequest(prefix: Buffer) {
        const name = COMMAND_NAMES[this.command]!;
        const spec = COMMAND_SPECS[name];
        const device = spec.device ? prefix.readUInt32LE(0) : 0;
        if (device >= STAGE_DEVICES)
            throw new RpcViolation('bad-device', 'client', `sent ${name} for device ${device}; the stage has ${STAGE_DEVICES}`);
        if (this.command === RpcCommand.HELLO) {
            // Caps would upgrade the connection (RDMA) past the tunnel: all zero keeps both ends on the stream.
            prefix.fill(0);
            this.helloSeen = true;
        }
        if (spec.replyBytes !== null && this.expected.length >= MAX_PENDING_REPLIES)
            throw new RpcViolation('reply-backlog', 'client', `sent ${name} with ${MAX_PENDING_REPLIES} replies outstanding`);
        const bytes = spec.replyBytes === 'requested'
            ? this.payloadSize(prefix, GET_TENSOR_SIZE_OFFSET, 'client', `${name} requested size`)
            : spec.replyBytes;
        const guarded = this.guarded(name, () => this.hostGuard?.checkRequest(this.command, prefix, this.payloadBytes));
        if (bytes !== null)
            this.expected.push({command: this.command, bytes, device, ...(guarded && {guarded})});
        this.stats.commands[name]++;
        if (this.command === RpcCommand.GRAPH_COMPUTE || this.command === RpcCommand.GRAPH_RECOMPUTE)
            this.stats.graphComputes++;
    }

    /** Runs one of the guard's checks of the current request, its refusal a violation naming the rule. */
    private guarded<T>(name: string, check: () => T): T {
        try {
            return check();
        } catch (error) {
            if (error instanceof GuardRefusal)
                throw new RpcViolation('unsafe', 'client', `sent ${name} that breaks the ${error.rule} rule: ${error.message}`, error.rule);
            throw error;
        }
    }

    private beginReply() {
        if (this.expected.length === 0)
            throw new RpcViolation('unexpected-reply', 'server', 'replied while no reply is expected');
    }

    private replyHeader(head: Buffer) {
        const expected = this.expected[0]!;
        const name = COMMAND_NAMES[expected.command]!;
        const payloadBytes = this.payloadSize(head, 0, 'server', `${name} reply`);
        if (payloadBytes !== expected.bytes)
            throw new RpcViolation('bad-reply-size', 'server', `replied to ${name} with ${payloadBytes} bytes, not ${expected.bytes}`);
        const rewritten = expected.command === RpcCommand.HELLO || expected.command === RpcCommand.DEVICE_COUNT
            || expected.command === RpcCommand.GET_DEVICE_MEMORY;
        return {payloadBytes, inspectBytes: rewritten ? payloadBytes : this.hostGuard?.replyInspectBytes(expected.guarded) ?? 0};
    }

    private inspectReply(prefix: Buffer) {
        const expected = this.expected.shift()!;
        if (expected.guarded !== undefined)
            this.hostGuard?.checkReply(expected.guarded, prefix);
        switch (expected.command) {
            case RpcCommand.HELLO:
                if (prefix[0] !== RPC_PROTO_MAJOR_VERSION)
                    throw new RpcViolation('version', 'server', `speaks protocol ${prefix[0]}.${prefix[1]}.${prefix[2]}, not ${RPC_PROTO_MAJOR_VERSION}.x`);
                prefix.fill(0, HELLO_VERSION_BYTES);
                break;
            case RpcCommand.DEVICE_COUNT:
                if (prefix.readUInt32LE(0) > STAGE_DEVICES)
                    prefix.writeUInt32LE(STAGE_DEVICES, 0);
                break;
            case RpcCommand.GET_DEVICE_MEMORY: {
                if (this.reportMemory === undefined)
                    break;
                const memory = typeof this.reportMemory === 'function' ? this.reportMemory(expected.device) : this.reportMemory;
                checkMemory(memory);
                prefix.writeBigUInt64LE(memory.free, 0);
                prefix.writeBigUInt64LE(memory.total, 8);
                break;
            }
        }
    }
}

function checkMemory(memory: DeviceMemory) {
    for (const value of [memory.free, memory.total])
        if (typeof value !== 'bigint' || value < 0n || value >= U64_LIMIT)
            throw new RangeError(`reported memory must be a u64 bigint, not ${value}`);
}
