/**
 * The host's guard on one RPC connection from a peer: the checks of docs/peer-protocol.md, "Graph checks", that
 * the codec (`rpc-stream.ts`) asks before it forwards a request. It learns the connection's buffers (handles,
 * sizes, bases) from the server's replies. Pure: it sees bytes, never sockets.
 */
import {checkGraph, type GraphLimits, graphLimitDefaults, graphPayloadBytes} from './ggml/graph-check.js';
import {RPC_TENSOR_BYTES, readRpcTensor} from './ggml/rpc-tensor.js';
import {COMMAND_NAMES, COMMAND_SPECS, RpcCommand} from './rpc-commands.js';
import {checkPlacement, checkRegion, GraphCheckError, type GraphRule, type SessionBuffer, type SessionBuffers, shapeTensor} from './ggml/tensor-check.js';

/**
 * Bytes one session may have allocated on the server at once, all its connections together: what it said it would
 * hold (weights, cache, compute buffers), so that no coordinator makes a host allocate beyond `--max-shard-memory`.
 */
export class AllocationBudget {
    used = 0n;

    constructor(readonly limit: bigint) {}

    reserve(bytes: bigint) {
        if (this.used + bytes > this.limit)
            return false;
        this.used += bytes;
        return true;
    }

    release(bytes: bigint) {
        this.used -= bytes;
    }
}

export type GuardRule = GraphRule | 'budget';

/** A request the guard refused: the session ends, and the log line names `rule`. */
export class GuardRefusal extends Error {
    constructor(readonly rule: GuardRule, message: string) {
        super(message);
        this.name = 'GuardRefusal';
    }
}

/** What a reply must be matched with: the buffer an ALLOC_BUFFER reserved, or whose base a BUFFER_GET_BASE asked. */
export type ReplyContext = {command: 'alloc', reserved: bigint} | {command: 'base', handle: bigint};

export interface RpcGuardOptions {
    budget: AllocationBudget,
    graphLimits?: GraphLimits,
    /**
     * The size of the cached tensor a SET_TENSOR_HASH names, by hash, as the host's cache held it when the session
     * started; defaults to none known. The server loads the file whole into the tensor and aborts if it does not fit.
     */
    cachedTensorBytes?: (hash: bigint) => bigint | undefined,
    /**
     * Most tokens one graph is counted as (CheckedGraph.tokens): an honest pass decodes at most a token and its
     * drafts per sequence, and a crafted multiply must not count for more. Defaults to no limit.
     */
    maxGraphTokens?: number
}

export class RpcGuard implements SessionBuffers {
    private readonly buffers = new Map<bigint, SessionBuffer & {counted: bigint}>();
    /** The server holds a graph this guard accepted, whose buffers are all still there. */
    private graphAccepted = false;
    /** Tokens of the graph the server holds (CheckedGraph.tokens), for a GRAPH_RECOMPUTE of it. */
    private graphTokens = 0;
    /** Tokens of every graph computed so far, recomputes included: what the session's receipts may claim. */
    tokensComputed = 0;

    constructor(private readonly options: RpcGuardOptions) {}

    get(handle: bigint) {
        return this.buffers.get(handle);
    }

    /** Request bytes to hold back and check before any of the command is forwarded. */
    inspectBytes(command: number, payloadBytes: number) {
        // Every command's fixed part (its tensors, handles and sizes); a graph whole.
        if (command !== RpcCommand.GRAPH_COMPUTE) {
            const name = COMMAND_NAMES[command];
            return name === undefined ? 0 : Math.min(COMMAND_SPECS[name].requestBytes, payloadBytes);
        }
        // A graph is held whole before it is checked: no larger than the largest graph the checks allow.
        const {maxNodes, maxTensors} = {...graphLimitDefaults, ...this.options.graphLimits};
        if (payloadBytes > graphPayloadBytes(maxNodes, maxTensors))
            this.refuse('size', `GRAPH_COMPUTE of ${payloadBytes} bytes, more than a graph of ${maxNodes} nodes and ${maxTensors} tensors takes`);
        return payloadBytes;
    }

    /** Checks a request from its first `inspectBytes` bytes; throws a `GuardRefusal`; returns what its reply needs. */
    checkRequest(command: number, prefix: Buffer, payloadBytes: number): ReplyContext | undefined {
        try {
            return this.check(command, prefix, payloadBytes);
        } catch (error) {
            if (error instanceof GraphCheckError)
                throw new GuardRefusal(error.rule, error.message);
            throw error;
        }
    }

    /** Reply bytes to read: the new buffer of an ALLOC_BUFFER, the base of a BUFFER_GET_BASE. */
    replyInspectBytes(context: ReplyContext | undefined) {
        return context === undefined ? 0 : context.command === 'alloc' ? 16 : 8;
    }

    /** Learns the buffer an ALLOC_BUFFER made, or a buffer's base. */
    checkReply(context: ReplyContext, reply: Buffer) {
        if (context.command === 'alloc') {
            const handle = reply.readBigUInt64LE(0);
            const size = reply.readBigUInt64LE(8);
            if (handle === 0n) { // the server could not allocate it
                this.options.budget.release(context.reserved);
                return;
            }
            // The server may round a size up: the rounding counts too, even past the budget (it is the server's choice).
            // biome-ignore lint/complexity/useMathMinMax: bigints
            const counted = size > context.reserved ? size : context.reserved;
            this.options.budget.used += counted - context.reserved;
            this.buffers.set(handle, {handle, size, base: undefined, counted});
        } else {
            const buffer = this.buffers.get(context.handle);
            if (buffer !== undefined)
                buffer.base = reply.readBigUInt64LE(0);
        }
    }

    /** The connection closed: the server frees its buffers, and their bytes go back to the session. */
    close() {
        for (const buffer of this.buffers.values())
            this.options.budget.release(buffer.counted);
        this.buffers.clear();
        this.graphAccepted = false;
    }

    private refuse(rule: GuardRule, message: string): never {
        throw new GuardRefusal(rule, message);
    }

    private ownBuffer(handle: bigint, command: string) {
        const buffer = this.buffers.get(handle);
        if (buffer === undefined)
            this.refuse('buffer', `${command} names a buffer this session did not allocate`);
        return buffer;
    }

    /** A tensor at `offset` of the request, shaped and placed in a buffer of this session. */
    private tensor(prefix: Buffer, offset: number, what: string, allowNone = false) {
        const tensor = shapeTensor(readRpcTensor(prefix, offset), what);
        checkPlacement(tensor, this, what, allowNone);
        return tensor;
    }

    private check(command: number, prefix: Buffer, payloadBytes: number): ReplyContext | undefined {
        switch (command) {
            case RpcCommand.ALLOC_BUFFER: {
                const size = prefix.readBigUInt64LE(4);
                if (!this.options.budget.reserve(size))
                    this.refuse('budget', `ALLOC_BUFFER of ${size} bytes: the session has ${this.options.budget.limit - this.options.budget.used} of its ${this.options.budget.limit} left`);
                return {command: 'alloc', reserved: size};
            }
            case RpcCommand.BUFFER_GET_BASE:
                return {command: 'base', handle: this.ownBuffer(prefix.readBigUInt64LE(0), 'BUFFER_GET_BASE').handle};
            case RpcCommand.FREE_BUFFER: {
                const buffer = this.ownBuffer(prefix.readBigUInt64LE(0), 'FREE_BUFFER');
                this.buffers.delete(buffer.handle);
                this.options.budget.release(buffer.counted);
                // The server's stored graph may point into the freed bytes.
                this.graphAccepted = false;
                return undefined;
            }
            case RpcCommand.BUFFER_CLEAR:
                this.ownBuffer(prefix.readBigUInt64LE(0), 'BUFFER_CLEAR');
                return undefined;
            case RpcCommand.SET_TENSOR: {
                const tensor = this.tensor(prefix, 0, 'SET_TENSOR\'s tensor');
                checkRegion(tensor, this, prefix.readBigUInt64LE(RPC_TENSOR_BYTES), BigInt(payloadBytes - RPC_TENSOR_BYTES - 8), 'SET_TENSOR');
                return undefined;
            }
            case RpcCommand.SET_TENSOR_HASH: {
                const tensor = this.tensor(prefix, 0, 'SET_TENSOR_HASH\'s tensor');
                // A hash the cache did not hold at the start is a miss, or a file this node seeded since, from its
                // own copy of the model: of the size of the honest tensor that hashes to it.
                const bytes = this.options.cachedTensorBytes?.(prefix.readBigUInt64LE(RPC_TENSOR_BYTES + 8));
                if (bytes !== undefined)
                    checkRegion(tensor, this, prefix.readBigUInt64LE(RPC_TENSOR_BYTES), bytes, 'SET_TENSOR_HASH');
                return undefined;
            }
            case RpcCommand.GET_TENSOR:
            case RpcCommand.MEMSET_TENSOR: {
                const name = command === RpcCommand.GET_TENSOR ? 'GET_TENSOR' : 'MEMSET_TENSOR';
                const tensor = this.tensor(prefix, 0, `${name}'s tensor`);
                checkRegion(tensor, this, prefix.readBigUInt64LE(RPC_TENSOR_BYTES), prefix.readBigUInt64LE(RPC_TENSOR_BYTES + 8), name);
                return undefined;
            }
            case RpcCommand.COPY_TENSOR: {
                const source = this.tensor(prefix, 0, 'COPY_TENSOR\'s source');
                const destination = this.tensor(prefix, RPC_TENSOR_BYTES, 'COPY_TENSOR\'s destination');
                checkRegion(destination, this, 0n, source.nbytes, 'COPY_TENSOR');
                return undefined;
            }
            case RpcCommand.INIT_TENSOR:
                this.tensor(prefix, 0, 'INIT_TENSOR\'s tensor');
                return undefined;
            case RpcCommand.GET_ALLOC_SIZE: {
                this.tensor(prefix, 4, 'GET_ALLOC_SIZE\'s tensor', true);
                for (let slot = 0; slot < 10; slot++) {
                    const offset = 4 + (slot + 1) * RPC_TENSOR_BYTES;
                    if (prefix.readBigUInt64LE(offset) !== 0n) // the server reads the sources whose id is set
                        this.tensor(prefix, offset, `GET_ALLOC_SIZE's source ${slot}`, true);
                }
                return undefined;
            }
            case RpcCommand.GRAPH_COMPUTE:
                // Accepted or not, it replaces what the server holds: a refused graph ends the session anyway.
                this.graphAccepted = false;
                this.graphTokens = Math.min(checkGraph(prefix, this, this.options.graphLimits).tokens, this.options.maxGraphTokens ?? Infinity);
                this.graphAccepted = true;
                this.tokensComputed += this.graphTokens;
                return undefined;
            case RpcCommand.GRAPH_RECOMPUTE:
                if (!this.graphAccepted)
                    this.refuse('recompute', 'GRAPH_RECOMPUTE without an accepted graph on the server');
                this.tokensComputed += this.graphTokens;
                return undefined;
            default:
                return undefined;
        }
    }
}
