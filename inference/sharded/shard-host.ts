import {connect} from 'node:net';
import {LRUCache} from 'lru-cache';
import {join} from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import {MAX_DRAFT_TOKENS} from '../../core/inference-types.js';
import {pruneTensorCache, RpcServerHost, type RpcServerSandboxOptions, TENSOR_CACHE_SUBDIR} from '../../engine/rpc/rpc-server-host.js';
import {HASH_THRESHOLD_BYTES, seedTensorCache} from '../../engine/rpc/tensor-cache-seed.js';
import {removeAbandonedViews, TensorCacheView} from '../../engine/rpc/tensor-cache-view.js';
import {fetchLayers, pruneTensorStore} from '../../engine/rpc/layer-fetch.js';
import type {LayerFetch} from './tunnel/layer-fetch-messages.js';
import type {RpcServerFiles} from '../../engine/rpc/rpc-server-dir.js';
import {hostFilter, type SessionMeter} from './tunnel/rpc-filters.js';
import {AllocationBudget} from './tunnel/rpc-guard.js';
import {RpcViolation} from './tunnel/rpc-stream.js';
import type {SessionRequestBody} from './tunnel/session-request.js';
import type {FetchOutcome, FetchProgress, HostedSession, ShardHostHandler, TunnelStream} from './tunnel/shard-protocol.js';
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
/** Under the cache directory: tensors downloaded from models' sources, named by SHA-256 (layer-fetch.ts). */
export const FETCHED_SUBDIR = 'fetched';
/**
 * What peers may have this node download, per window: each peer twice the room this node offers (a stage, and its
 * spare or a failover's), all peers together four times. A peer's fetch frames cost it little; each tensor they name
 * costs this node its download.
 */
const FETCH_WINDOW_MS = 60 * 60_000;
const PEER_FETCH_ROOMS = 2;
const ALL_FETCH_ROOMS = 4;
/** A tensor whose download failed is not tried again from the same source for a while (a hostile fetch could repeat it). */
const FAILED_FETCH_TTL_MS = 10 * 60_000;
const FAILED_FETCHES_KEPT = 4096;

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
    /**
     * What this node announces as a host changed: its free bytes (a session opened or ended) or its download rate
     * (`fetchOffer`). Coordinators plan from the announcement: a stale one hides room a failover needs. Defaults to nothing.
     */
    onOfferChanged?: () => void,
    /**
     * Downloads the layers a coordinator names from the model's source (docs/architecture.md, "Hosts that fetch their
     * layers"); false: never (each fetch is answered "not fetched" and the coordinator sends the weights). Defaults to
     * `{allowPrivateAddresses: false}`: a plain URL that resolves to a loopback or private address is refused, so a
     * peer cannot point this node at its own network; `hf:` sources resolve against this node's own endpoint.
     */
    fetch?: {allowPrivateAddresses: boolean, concurrency?: number} | false,
    onLog?: (message: string, fields: Record<string, unknown>) => void
}

/**
 * Hosts layer shards for peers: an rpc server per session a coordinator opens, reached only through that session's
 * tunnel streams, every byte past the RPC codec and the guard first (docs/architecture.md, "Sharding").
 */
export class ShardHost implements ShardHostHandler {
    private readonly sessions = new Set<{bytes: number, server: RpcServerHost}>();
    /** The rate of this node's last download from a model's source (bytes/s), announced to coordinators. */
    private downloadRate: number | null = null;
    /** Bytes downloaded for each peer, and for all, in the current window. */
    private readonly downloaded = new LRUCache<string, {since: number, bytes: number}>({max: 4096});
    /** `<source>\n<sha256>` of downloads that failed lately, with why. */
    private readonly failedFetches = new LRUCache<string, string>({max: FAILED_FETCHES_KEPT, ttl: FAILED_FETCH_TTL_MS});

    constructor(private readonly options: ShardHostOptions) {}

    /** Bytes still offered to peers. */
    get freeBytes() {
        return Math.max(0, this.options.maxBytes - [...this.sessions].reduce((sum, session) => sum + session.bytes, 0));
    }

    /** What coordinators are told of this node's downloads: absent when it does not fetch layers. */
    get fetchOffer(): {bytesPerSecond: number | null} | undefined {
        return this.options.fetch === false ? undefined : {bytesPerSecond: this.downloadRate};
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
        // The server reads its own view of the cache: what this node seeded, and what was downloaded for this session.
        const view = TensorCacheView.under(this.options.cacheDir);
        const server = new RpcServerHost({binaries: runtime.binaries, threads: this.options.threads, cacheDir: view.llamaCacheDir,
            ...(runtime.sandbox !== 'off' && {sandbox: runtime.sandbox})});
        const entry = {bytes: request.bytes, server};
        this.sessions.add(entry);
        this.options.onOfferChanged?.();
        let ended = false;
        server.on('exit', (code, signal) => {
            if (!ended)
                control.end(`the rpc server exited (${signal ?? code})`);
        });
        try {
            await this.pruneCaches();
            await view.prepare();
            const seeding = await this.seedFromOwnCopy(request);
            await view.linkSeeded();
            // Seeded after the wait: linked for the rest of the load (the coordinator sends what it asks before that).
            void seeding?.seeding.then(() => ended ? undefined : view.linkSeeded()).catch(() => undefined);
            await server.start();
        } catch (error) {
            this.sessions.delete(entry);
            this.options.onOfferChanged?.();
            await server.stop();
            await view.dispose();
            throw error;
        }
        this.options.onLog?.('hosting layers for a peer', {peer: shortPeerId(peerId), model: request.model.id, layers: request.layers, bytes: request.bytes,
            sandbox: runtime.sandbox === 'off' ? 'off' : 'bubblewrap'});
        // Shared by the session's connections: the server frees a connection's buffers when it closes.
        const budget = new AllocationBudget(allocationLimit(request.bytes));
        const meter: SessionMeter = {graphComputes: 0, graphTokens: 0};
        /** The tensors this session's fetches asked for (SHA-256 → bytes). */
        const asked = new Map<string, number>();
        return {
            connect: (stream: TunnelStream) => {
                // Outside the sandbox the server may write its cache (view.close says why): no link once it is reached.
                if (runtime.sandbox === 'off')
                    view.close();
                const socket = connect(server.connectOptions!);
                // The coordinator's bytes are checked before the server sees them; its replies pass unchanged.
                pipeSocket(socket, stream, hostFilter({maxPayloadBytes: request.bytes + PAYLOAD_SLACK_BYTES, budget, meter, cachedTensorBytes: (hash) => view.cachedBytes(hash),
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
            fetch: async (fetch, onProgress, signal) => {
                if (fetch.model !== request.model.sha256)
                    return notFetched(fetch, 'the fetch names another model file than the session');
                // All of a session's fetches together stay within its bytes: distinct tensors, counted when asked for.
                const added = fetch.tensors.filter((tensor) => !asked.has(tensor.sha256));
                const askedBytes = [...asked.values()].reduce((sum, bytes) => sum + bytes, 0) + added.reduce((sum, tensor) => sum + tensor.bytes, 0);
                if (askedBytes > request.bytes)
                    return notFetched(fetch, `the session's fetches ask for ${askedBytes} bytes; it holds at most ${request.bytes}`);
                for (const tensor of added)
                    asked.set(tensor.sha256, tensor.bytes);
                const outcome = await this.download(peerId, fetch, request.bytes, onProgress, signal);
                for (const tensor of outcome.stored)
                    await view.add(tensor.path, tensor.fnv);
                // Within the cache's limit again at once: the view keeps its own links to what it uses.
                await this.pruneCaches();
                return outcome.report;
            },
            end: (reason: string) => {
                ended = true;
                this.sessions.delete(entry);
                this.options.onOfferChanged?.();
                void server.stop().finally(() => view.dispose()).catch(() => undefined);
                this.options.onLog?.('stopped hosting layers for a peer', {peer: shortPeerId(peerId), reason});
            }
        };
    }

    /** A spare's fetch: the tensors wait in the store for a session that may come after a failure. */
    async prefetch(peerId: string, fetch: LayerFetch, onProgress: (progress: FetchProgress) => void, signal: AbortSignal): Promise<FetchOutcome> {
        const runtime = this.options.runtime();
        if (typeof runtime === 'string')
            return notFetched(fetch, `this node cannot host layers: ${runtime}`);
        // A spare is worth only the layers it could host: no more than the room this node offers now. Room is made once
        // the fetch passed its checks, and before the download, not after: its tensors must still be there when its stage fails.
        const limit = Math.min(this.freeBytes, this.options.cacheMaxBytes);
        return (await this.download(peerId, fetch, limit, onProgress, signal, (total) => this.pruneCaches(Math.min(total, limit)))).report;
    }

    /**
     * Downloads a fetch's tensors into the store (at most `maxBytes` of them: a session's own bytes, or for a spare the
     * room this node offers, within the cache's size). A node that holds the model seeds from its own copy instead, and tensors at or under
     * ggml-rpc's hash threshold would be sent anyway: neither is downloaded.
     */
    private async download(peerId: string, fetch: LayerFetch, maxBytes: number, onProgress: (progress: FetchProgress) => void, signal: AbortSignal,
        beforeDownload?: (totalBytes: number) => Promise<void>) {
        const fields = {peer: shortPeerId(peerId), layers: fetch.layers, tensors: fetch.tensors.length};
        const refused = (reason: string) => ({stored: [], report: notFetched(fetch, reason)});
        if (this.options.fetch === false)
            return refused('this node does not download layers from models\' sources');
        if (this.options.modelFile?.(fetch.model) !== undefined)
            return refused('this node holds the model file: it seeds its cache from its own copy');
        const total = fetch.tensors.reduce((sum, tensor) => sum + tensor.bytes, 0);
        if (total > maxBytes)
            return refused(`the fetch asks for ${total} bytes; this node keeps at most ${maxBytes} for it`);
        if (fetch.tensors.some((tensor) => tensor.bytes <= HASH_THRESHOLD_BYTES))
            return refused(`tensors of ${HASH_THRESHOLD_BYTES} bytes or less are sent whole by ggml-rpc: they are not fetched`);
        const window = this.fetchWindow(peerId);
        if (window.peer.bytes >= PEER_FETCH_ROOMS * this.options.maxBytes || window.all.bytes >= ALL_FETCH_ROOMS * this.options.maxBytes)
            return refused(`this node downloaded ${window.peer.bytes} bytes for this peer and ${window.all.bytes} for all in the last hour: no more for now`);
        const {allowPrivateAddresses = false, concurrency} = this.options.fetch ?? {};
        const failedLately = (tensor: LayerFetch['tensors'][number]) => this.failedFetches.get(`${fetch.source}\n${tensor.sha256}`);
        const skipped = fetch.tensors.filter((tensor) => failedLately(tensor) !== undefined);
        const tensors = fetch.tensors.filter((tensor) => !skipped.includes(tensor));
        await beforeDownload?.(total);
        this.options.onLog?.('downloading layers from the model\'s source', {...fields, source: fetch.source, bytes: total});
        const outcome = tensors.length === 0
            ? {stored: [], failed: [], present: 0, totalBytes: 0, downloadedBytes: 0, elapsedMs: 0, bytesPerSecond: null}
            : await fetchLayers({source: fetch.source, tensors, storeDir: join(this.options.cacheDir, FETCHED_SUBDIR),
                allowPrivateAddresses, ...(concurrency !== undefined && {concurrency}), signal,
                onProgress: ({doneBytes, totalBytes}) => onProgress({doneBytes, totalBytes})});
        window.peer.bytes += outcome.downloadedBytes;
        window.all.bytes += outcome.downloadedBytes;
        for (const failure of outcome.failed)
            if (failure.code !== 'busy' && failure.code !== 'invalid-input')
                this.failedFetches.set(`${fetch.source}\n${failure.digest.sha256}`, failure.reason);
        for (const tensor of skipped)
            outcome.failed.push({digest: tensor, code: 'transfer-failed', reason: `${tensor.name}: failed lately, not tried again for now (${failedLately(tensor)})`});
        if (outcome.bytesPerSecond !== null && outcome.downloadedBytes >= HASH_THRESHOLD_BYTES) {
            this.downloadRate = outcome.bytesPerSecond;
            this.options.onOfferChanged?.();
        }
        const reason = outcome.failed.length === 0 ? undefined
            : `${outcome.failed.length} tensor(s) not fetched: ${outcome.failed.slice(0, 3)
                .map((failure) => failure.reason.startsWith(`${failure.digest.name}: `) ? failure.reason : `${failure.digest.name}: ${failure.reason}`).join('; ')}`;
        this.options.onLog?.('downloaded layers from the model\'s source', {...fields, stored: outcome.stored.length, failed: outcome.failed.length,
            downloadedBytes: outcome.downloadedBytes, elapsedMs: outcome.elapsedMs, ...(reason !== undefined && {reason})});
        return {
            stored: outcome.stored,
            report: {stored: outcome.stored.length, failed: outcome.failed.length, downloadedBytes: outcome.downloadedBytes,
                bytesPerSecond: outcome.bytesPerSecond, ...(reason !== undefined && {reason: reason.slice(0, 512)})} satisfies FetchOutcome
        };
    }

    /** The download counts of the window now, for a peer and for all (a new window starts from nothing). */
    private fetchWindow(peerId: string) {
        const current = (key: string) => {
            let entry = this.downloaded.get(key);
            if (entry === undefined || Date.now() - entry.since >= FETCH_WINDOW_MS) {
                entry = {since: Date.now(), bytes: 0};
                this.downloaded.set(key, entry);
            }
            return entry;
        };
        return {peer: current(`peer:${peerId}`), all: current('all')};
    }

    /**
     * Seeded and downloaded tensors together stay within the cache's limit, least recently used first, with room for
     * `headroomBytes` about to be downloaded; abandoned views go.
     */
    private async pruneCaches(headroomBytes = 0) {
        await removeAbandonedViews(this.options.cacheDir);
        const seeded = await pruneTensorCache(this.options.cacheDir, this.options.cacheMaxBytes);
        await pruneTensorStore(join(this.options.cacheDir, FETCHED_SUBDIR), Math.max(0, this.options.cacheMaxBytes - seeded.keptBytes - headroomBytes));
    }

    /**
     * When this node holds the model, the stage's big tensors go into the cache from its own file, not over the
     * network. Waits at most `SEED_WAIT_MS` (the coordinator gives up on an open after 30 s): the rest is seeded in
     * the background, for the tensors the coordinator has not offered yet and for the next load. Returns the
     * seeding (wrapped: an async function would wait for it), or undefined when there is none.
     */
    private async seedFromOwnCopy(request: SessionRequestBody) {
        const {sha256} = request.model;
        const ownCopy = sha256 === null ? undefined : this.options.modelFile?.(sha256);
        if (sha256 === null || ownCopy === undefined)
            return undefined;
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
        return {seeding};
    }

    async stop() {
        await Promise.all([...this.sessions].map(({server}) => server.stop()));
        this.sessions.clear();
    }
}

/** A fetch answered without downloading: every tensor comes through the coordinator. */
function notFetched(fetch: LayerFetch, reason: string): FetchOutcome {
    return {stored: 0, failed: fetch.tensors.length, downloadedBytes: 0, bytesPerSecond: null, reason};
}
