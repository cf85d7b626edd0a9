import {connect} from 'node:net';
import {join} from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import {MAX_DRAFT_TOKENS} from '../../core/inference-types.js';
import {pruneTensorCache, RpcServerHost, type RpcServerSandboxOptions, TENSOR_CACHE_SUBDIR, tensorCacheSizes} from '../../engine/rpc/rpc-server-host.js';
import {seedTensorCache} from '../../engine/rpc/tensor-cache-seed.js';
import type {RpcServerFiles} from '../../engine/rpc/rpc-server-dir.js';
import {hostFilter, type SessionMeter} from './tunnel/rpc-filters.js';
import {AllocationBudget} from './tunnel/rpc-guard.js';
import {RpcViolation} from './tunnel/rpc-stream.js';
import type {SessionRequestBody} from './tunnel/session-request.js';
import type {HostedSession, ShardHostHandler, TunnelStream} from './tunnel/shard-protocol.js';
import {pipeSocket} from './tunnel/socket-pipe.js';
import {shortPeerId} from '../../core/display.js';

/**
 * What one RPC message may carry beyond the bytes the session said it would hold: the server reads a whole message
 * into memory before it looks at it, so a message larger than any tensor of the stage is refused before it arrives.
 * The slack covers a graph's description and llama.cpp's compute buffers.
 */
const PAYLOAD_SLACK_BYTES = 64 * 1024 * 1024;
/**
 * What a session may allocate on its server beyond the bytes it asked for: backends round buffers up (alignment,
 * GPU row padding of quantized weights). A sixteenth, and at least 16 MiB.
 */
export function allocationLimit(bytes: number) {
    return BigInt(bytes) + BigInt(Math.max(16 * 2 ** 20, Math.ceil(bytes / 16)));
}
/** How long an open waits for the tensor cache's seeding, within the coordinator's 30 s open timeout. */
const SEED_WAIT_MS = 20_000;

/**
 * What serves sessions: the built rpc server and the sandbox each one runs in ('off': none, for the trusted peers of a
 * private network; docs/architecture.md, "Sharding").
 */
export interface ShardHostRuntime {
    binaries: RpcServerFiles,
    sandbox: RpcServerSandboxOptions | 'off'
}

export interface ShardHostOptions {
    /** What serves sessions, or why nothing can (yet): every session is refused with that reason. */
    runtime: () => ShardHostRuntime | string,
    /** Most bytes of weights and cache this node holds for peers, all sessions together (`--max-shard-memory`). */
    maxBytes: number,
    /** Threads of each rpc server. */
    threads: number,
    /** The rpc servers' tensor cache: big tensors this node seeded from its own copy of a model are not sent (read-only to the servers). */
    cacheDir: string,
    /** The cache's size limit; the least recently used tensors are evicted at each session start. */
    cacheMaxBytes: number,
    /** This node's own copy of a model, by the SHA-256 of its file, to seed the cache from; defaults to none. */
    modelFile?: (sha256: string) => string | undefined,
    /** How long an open waits for the seeding; defaults to `SEED_WAIT_MS`. */
    seedWaitMs?: number,
    onLog?: (message: string, fields: Record<string, unknown>) => void
}

/**
 * Hosts layer shards for peers: an rpc server per session a coordinator opens, reached only through that session's
 * tunnel streams, every byte past the RPC codec and the guard first (docs/architecture.md, "Sharding").
 */
export class ShardHost implements ShardHostHandler {
    private readonly sessions = new Set<{bytes: number, server: RpcServerHost}>();

    constructor(private readonly options: ShardHostOptions) {}

    /** Bytes still offered to peers. */
    get freeBytes() {
        return Math.max(0, this.options.maxBytes - [...this.sessions].reduce((sum, session) => sum + session.bytes, 0));
    }

    get sessionCount() {
        return this.sessions.size;
    }

    get available() {
        return typeof this.options.runtime() !== 'string';
    }

    /** Why no session can be served now; null when they can. */
    get unavailableReason() {
        const runtime = this.options.runtime();
        return typeof runtime === 'string' ? runtime : null;
    }

    async open(peerId: string, request: SessionRequestBody, control: {end(reason: string): void}): Promise<HostedSession> {
        const runtime = this.options.runtime();
        if (typeof runtime === 'string')
            throw new Error(`this node cannot host layers: ${runtime}`);
        if (request.bytes > this.freeBytes)
            throw new Error(`the stage needs ${request.bytes} bytes; this node offers ${this.freeBytes}`);
        // Counted at once, so that sessions opening together cannot share the same free bytes.
        const server = new RpcServerHost({binaries: runtime.binaries, threads: this.options.threads, cacheDir: this.options.cacheDir,
            ...(runtime.sandbox !== 'off' && {sandbox: runtime.sandbox})});
        const entry = {bytes: request.bytes, server};
        this.sessions.add(entry);
        let ended = false;
        server.on('exit', (code, signal) => {
            if (!ended)
                control.end(`the rpc server exited (${signal ?? code})`);
        });
        let cached: Map<bigint, bigint>;
        try {
            await pruneTensorCache(this.options.cacheDir, this.options.cacheMaxBytes);
            await this.seedFromOwnCopy(request);
            cached = await tensorCacheSizes(this.options.cacheDir);
            await server.start();
        } catch (error) {
            this.sessions.delete(entry);
            await server.stop();
            throw error;
        }
        this.options.onLog?.('hosting layers for a peer', {peer: shortPeerId(peerId), model: request.model.id, layers: request.layers, bytes: request.bytes,
            sandbox: runtime.sandbox === 'off' ? 'off' : 'bubblewrap'});
        // Shared by the session's connections: the server frees a connection's buffers when it closes.
        const budget = new AllocationBudget(allocationLimit(request.bytes));
        const meter: SessionMeter = {graphComputes: 0, graphTokens: 0};
        return {
            connect: (stream: TunnelStream) => {
                const socket = connect(server.connectOptions!);
                // The coordinator's bytes are checked before the server sees them; its replies pass unchanged.
                pipeSocket(socket, stream, hostFilter({maxPayloadBytes: request.bytes + PAYLOAD_SLACK_BYTES, budget, meter, cachedTensorBytes: (hash) => cached.get(hash),
                    maxGraphTokens: request.sequences * (1 + MAX_DRAFT_TOKENS)}), (reason, refused) => {
                    if (refused !== undefined) {
                        // Bytes that break the RPC protocol: the server never saw them, and the session ends here.
                        this.options.onLog?.('a peer broke the RPC protocol: its shard session ends',
                            {peer: shortPeerId(peerId), reason, ...(refused instanceof RpcViolation && refused.rule !== undefined && {rule: refused.rule})});
                        control.end(`the RPC stream broke the protocol: ${reason}`);
                    } else if (reason !== 'the socket closed')
                        this.options.onLog?.('shard stream closed', {peer: shortPeerId(peerId), reason});
                });
            },
            graphComputes: () => meter.graphComputes,
            graphTokens: () => meter.graphTokens,
            end: (reason: string) => {
                ended = true;
                this.sessions.delete(entry);
                void server.stop();
                this.options.onLog?.('stopped hosting layers for a peer', {peer: shortPeerId(peerId), reason});
            }
        };
    }

    /**
     * When this node holds the model, the stage's big tensors go into the cache from its own file, not over the
     * network. Waits at most `SEED_WAIT_MS` (the coordinator gives up on an open after 30 s): the rest is seeded in
     * the background, for the tensors the coordinator has not offered yet and for the next load.
     */
    private async seedFromOwnCopy(request: SessionRequestBody) {
        const {sha256} = request.model;
        const ownCopy = sha256 === null ? undefined : this.options.modelFile?.(sha256);
        if (sha256 === null || ownCopy === undefined)
            return;
        const fields = {model: request.model.id, layers: request.layers};
        const seeding = seedTensorCache(ownCopy, join(this.options.cacheDir, TENSOR_CACHE_SUBDIR),
            {layers: request.layers, sha256, maxBytes: this.options.cacheMaxBytes}).then(
            (outcome) => this.options.onLog?.('seeded the tensor cache from this node\'s copy of the model', {...fields, ...outcome}),
            (error: Error) => this.options.onLog?.('could not seed the tensor cache from this node\'s copy of the model', {...fields, error: error.message}));
        const seeded = new AbortController();
        const waited = await Promise.race([
            seeding.then(() => true),
            sleep(this.options.seedWaitMs ?? SEED_WAIT_MS, false, {signal: seeded.signal}).catch(() => false)
        ]);
        seeded.abort(); // ends the wait once seeding finished first
        if (!waited)
            this.options.onLog?.('still seeding the tensor cache; the session starts meanwhile (the tensors not seeded yet are sent)', fields);
    }

    async stop() {
        await Promise.all([...this.sessions].map(({server}) => server.stop()));
        this.sessions.clear();
    }
}
