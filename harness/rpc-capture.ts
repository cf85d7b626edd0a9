/**
 * A real coordinator's ggml-rpc session with one stage, recorded both ways, and its replay into another server
 * (docs/peer-protocol.md, "Graph checks"): llama.cpp's own RPC client loads a generated model over a stage and
 * generates, and every byte it sends the stage's rpc-server, and every reply, is kept. Replaying translates the
 * recorded buffer handles and addresses into the new server's, so that recorded graphs run there as they ran.
 */
import {EventEmitter} from 'node:events';
import {mkdtemp, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {type DemoModelOptions, writeDemoModel} from '../engine/demo/demo-model.js';
import {EngineSupervisor} from '../engine/engine-supervisor.js';
import {prepareRpcServerDir} from '../engine/rpc/rpc-server-dir.js';
import {RpcServerHost} from '../engine/rpc/rpc-server-host.js';
import type {GenerationRequest} from '../core/inference-types.js';
import {layerSplit} from '../inference/sharded/layer-split.js';
import {RPC_TENSOR_BYTES, readRpcTensor, writeRpcTensor} from '../inference/sharded/tunnel/ggml/rpc-tensor.js';
import {coordinatorFilter} from '../inference/sharded/tunnel/rpc-filters.js';
import type {SessionBuffer, SessionBuffers} from '../inference/sharded/tunnel/ggml/tensor-check.js';
import {COMMAND_NAMES, COMMAND_SPECS, RpcCommand} from '../inference/sharded/tunnel/rpc-commands.js';
import type {TunnelStream} from '../inference/sharded/tunnel/shard-protocol.js';
import {SocketStream} from '../inference/sharded/tunnel/socket-pipe.js';
import {TunnelEndpoint} from '../inference/sharded/tunnel/tunnel-endpoint.js';
import type {RpcLabClient} from './rpc-lab.js';
import {testRpcBinaries} from './rpc-binaries.js';

export interface RecordedRequest {
    command: number,
    payload: Buffer,
    /** The server's reply payload, for commands that have one. */
    reply?: Buffer
}

/** A request's reply payload size (null: no reply); GET_TENSOR's is the size it asks for. */
export function replyBytesOf(command: number, payload: Buffer) {
    const name = COMMAND_NAMES[command];
    const bytes = name === undefined ? null : COMMAND_SPECS[name].replyBytes;
    return bytes === 'requested' ? Number(payload.readBigUInt64LE(RPC_TENSOR_BYTES + 8)) : bytes;
}

/** Splits the recorded bytes of both directions into requests with their replies. */
export function parseSession(requests: Buffer, replies: Buffer): RecordedRequest[] {
    const parsed: RecordedRequest[] = [];
    let at = 0;
    let replyAt = 0;
    while (at < requests.length) {
        const command = requests[at]!;
        const size = Number(requests.readBigUInt64LE(at + 1));
        const payload = requests.subarray(at + 9, at + 9 + size);
        at += 9 + size;
        const request: RecordedRequest = {command, payload};
        if (replyBytesOf(command, payload) !== null) {
            const replySize = Number(replies.readBigUInt64LE(replyAt));
            request.reply = replies.subarray(replyAt + 8, replyAt + 8 + replySize);
            replyAt += 8 + replySize;
        }
        parsed.push(request);
    }
    return parsed;
}

/** Records what passes through a tunnel stream, both ways. */
class RecordingStream extends EventEmitter implements TunnelStream {
    readonly sent: Buffer[] = [];
    readonly received: Buffer[] = [];

    constructor(private readonly inner: TunnelStream) {
        super();
        inner.on('data', (bytes) => {
            this.received.push(Buffer.from(bytes));
            this.emit('data', bytes);
        });
        inner.on('drain', () => this.emit('drain'));
        inner.on('close', (reason) => this.emit('close', reason));
    }

    get closed() {
        return this.inner.closed;
    }

    write(bytes: Uint8Array) {
        this.sent.push(Buffer.from(bytes));
        return this.inner.write(bytes);
    }

    close(reason: string) {
        this.inner.close(reason);
    }
}

/**
 * Loads a generated model with its first `coordinatorLayers` layers on the CPU and the rest on one rpc-server (the
 * stage), the output layer on another, generates `tokens` tokens with `parallel` sequences, and returns the stage's
 * session as recorded.
 */
export async function captureStageSession(options: {model: DemoModelOptions, coordinatorLayers: number, stageLayers: number,
    parallel?: number, contextSize?: number, tokens?: number, flashAttention?: 'auto' | 'on' | 'off'}) {
    const dir = await mkdtemp(join(tmpdir(), 'strongdoge-capture-'));
    const files = await prepareRpcServerDir(await testRpcBinaries());
    const servers: RpcServerHost[] = [];
    const endpoints: TunnelEndpoint[] = [];
    let engine: EngineSupervisor | undefined;
    try {
        const modelPath = join(dir, 'model.gguf');
        await writeDemoModel(modelPath, {writesBytes: true, ...options.model});
        for (let index = 0; index < 2; index++) {
            const server = new RpcServerHost({binaries: files, threads: 1});
            await server.start();
            servers.push(server);
        }
        const split = layerSplit(options.coordinatorLayers, [options.stageLayers, 0]);
        let recording: RecordingStream | undefined;
        const record = (stream: TunnelStream) => {
            recording = new RecordingStream(stream);
            return recording;
        };
        for (const [index, server] of servers.entries())
            endpoints.push(await TunnelEndpoint.listen({
                connect: () => index === 0 ? record(new SocketStream(server.port!)) : new SocketStream(server.port!),
                createFilter: () => coordinatorFilter({reportMemory: {free: split.reportedBytes[index]!, total: split.reportedBytes[index]!}})
            }, () => undefined));
        engine = new EngineSupervisor({
            models: [{id: 'capture', path: modelPath}], threads: 1, parallelSequences: options.parallel ?? 1, contextSize: options.contextSize ?? 256,
            gpu: false, flashAttention: options.flashAttention ?? 'auto',
            prepareLoad: async () => ({shard: {rpcLibraryPath: files.libraryPath, endpoints: endpoints.map((endpoint) => endpoint.address), gpuLayers: split.gpuLayers}})
        });
        await engine.start();
        const request: GenerationRequest = {
            kind: 'completion', model: 'capture', prompt: 'Once upon a time',
            sampling: {temperature: 0, stop: [], maxTokens: options.tokens ?? 8, responseFormat: {type: 'text'}}
        };
        await engine.generate(request, {onText: () => undefined});
        await engine.dispose();
        engine = undefined;
        return parseSession(Buffer.concat(recording!.sent), Buffer.concat(recording!.received));
    } finally {
        await engine?.dispose();
        await Promise.all(endpoints.map((endpoint) => endpoint.close('done')));
        await Promise.all(servers.map((server) => server.stop()));
        await rm(dir, {recursive: true, force: true});
    }
}

/** Where each tensor of a request sits in its payload. */
export function tensorOffsets(command: number, payload: Buffer): number[] {
    switch (command) {
        case RpcCommand.SET_TENSOR:
        case RpcCommand.SET_TENSOR_HASH:
        case RpcCommand.GET_TENSOR:
        case RpcCommand.INIT_TENSOR:
        case RpcCommand.MEMSET_TENSOR:
            return [0];
        case RpcCommand.COPY_TENSOR:
            return [0, RPC_TENSOR_BYTES];
        case RpcCommand.GET_ALLOC_SIZE:
            return Array.from({length: 11}, (_, slot) => 4 + slot * RPC_TENSOR_BYTES)
                .filter((offset, slot) => slot === 0 || payload.readBigUInt64LE(offset) !== 0n);
        case RpcCommand.GRAPH_COMPUTE: {
            const nodes = payload.readUInt32LE(4);
            const tensors = payload.readUInt32LE(8 + 8 * nodes);
            return Array.from({length: tensors}, (_, index) => 12 + 8 * nodes + index * RPC_TENSOR_BYTES);
        }
        default:
            return [];
    }
}

/**
 * Replays a recorded session into another server through `client`, translating buffer handles and addresses.
 * `translate` rewrites a recorded payload for the new server (every later recorded graph goes through it).
 */
export class SessionReplay implements SessionBuffers {
    /** Recorded handle → the new server's buffer, with its recorded base. */
    private readonly buffers = new Map<bigint, ReplayedBuffer>();
    /** The same buffers by their new handles. */
    private readonly current = new Map<bigint, ReplayedBuffer>();

    constructor(private readonly client: RpcLabClient) {}

    translate(command: number, recorded: Buffer) {
        const payload = Buffer.from(recorded);
        for (const offset of tensorOffsets(command, payload)) {
            const tensor = readRpcTensor(payload, offset);
            if (tensor.buffer === 0n)
                continue;
            const buffer = this.buffers.get(tensor.buffer);
            if (buffer?.base === undefined || buffer.oldBase === undefined)
                throw new Error(`a recorded tensor in an unknown buffer (command ${command})`);
            tensor.buffer = buffer.handle;
            tensor.data = tensor.data - buffer.oldBase + buffer.base;
            writeRpcTensor(tensor, payload, offset);
        }
        if (command === RpcCommand.BUFFER_GET_BASE || command === RpcCommand.FREE_BUFFER || command === RpcCommand.BUFFER_CLEAR)
            payload.writeBigUInt64LE(this.buffers.get(payload.readBigUInt64LE(0))!.handle, 0);
        return payload;
    }

    /** Sends one recorded request; learns new handles and bases from the replies. */
    async send(request: RecordedRequest) {
        const payload = this.translate(request.command, request.payload);
        const reply = await this.client.request(request.command, payload, replyBytesOf(request.command, payload) ?? undefined);
        if (request.command === RpcCommand.ALLOC_BUFFER) {
            const buffer: ReplayedBuffer = {handle: reply!.readBigUInt64LE(0), size: reply!.readBigUInt64LE(8), base: undefined};
            this.buffers.set(request.reply!.readBigUInt64LE(0), buffer);
            this.current.set(buffer.handle, buffer);
        }
        if (request.command === RpcCommand.BUFFER_GET_BASE) {
            const buffer = this.current.get(payload.readBigUInt64LE(0))!;
            buffer.oldBase = request.reply!.readBigUInt64LE(0);
            buffer.base = reply!.readBigUInt64LE(0);
        }
        return reply;
    }

    /** The new server's buffers, as the host's guard keeps them: for checking translated graphs. */
    get(handle: bigint) {
        return this.current.get(handle);
    }
}

interface ReplayedBuffer extends SessionBuffer {
    oldBase?: bigint
}
