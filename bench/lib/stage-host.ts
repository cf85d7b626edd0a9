/**
 * A layer host for the direct pipeline, doing what ShardHost does for a session (inference/sharded/shard-host.ts) with
 * the same parts: a tensor store the host's downloads go to (`fetchLayers`, every tensor's SHA-256 checked), a
 * TensorCacheView per session that its rpc server reads (`-c`), and the host's own link to the model's source.
 */
import {join} from 'node:path';
import type {TensorDigest} from '../../core/tensor-digest.js';
import {fetchLayers, type LayerFetchOutcome} from '../../engine/rpc/layer-fetch.js';
import type {RpcServerFiles} from '../../engine/rpc/rpc-server-dir.js';
import {RpcServerHost} from '../../engine/rpc/rpc-server-host.js';
import {TensorCacheView} from '../../engine/rpc/tensor-cache-view.js';
import {FETCHED_SUBDIR} from '../../inference/sharded/shard-host.js';
import {RateLimitedLink, startThrottledProxy} from './rate-limited-link.js';

export interface StageHostOptions {
    name: string,
    /** The host's cache directory: the store (`fetched/`) and the sessions' views. */
    cacheDir: string,
    files: RpcServerFiles,
    threads: number,
    /** The model's source, on loopback, and the file's path there. */
    source: {port: number, path: string},
    /** The rate of this host's link to the source. */
    downloadBytesPerSecond: number
}

/** One session's server: `fetched` says what was downloaded for it (undefined: everything comes through the coordinator). */
export interface StageSession {
    server: RpcServerHost,
    address: {host: string, port: number},
    fetched: LayerFetchOutcome | undefined,
    /** From the session's start: its server listening, and its tensors stored (the slower of both, as they run together). */
    serverStartMs: number,
    fetchMs: number | null,
    close(): Promise<void>
}

export class StageHost {
    private constructor(private readonly options: StageHostOptions, readonly link: RateLimitedLink, private readonly proxy: {port: number, close(): Promise<void>}) {}

    static async start(options: StageHostOptions) {
        const link = new RateLimitedLink(options.downloadBytesPerSecond);
        const proxy = await startThrottledProxy({host: '127.0.0.1', port: options.source.port}, link);
        return new StageHost(options, link, proxy);
    }

    get name() {
        return this.options.name;
    }

    /** The source as this host reaches it: through its own link. */
    get sourceUrl() {
        return `http://127.0.0.1:${this.proxy.port}/${this.options.source.path}`;
    }

    /** Downloads `tensors` into the store (a spare's prefetch, or a session's fetch): those already there are not downloaded again. */
    fetch(tensors: readonly TensorDigest[]) {
        return fetchLayers({source: this.sourceUrl, tensors, storeDir: join(this.options.cacheDir, FETCHED_SUBDIR), allowPrivateAddresses: true});
    }

    /**
     * A session's rpc server. With `tensors`, as a host that fetches: the server reads a new view of the cache, the
     * tensors are fetched (or found in the store) while it starts and each stored one is linked into the view, so the
     * coordinator's SET_TENSOR_HASH finds it. Without, as today's path: no cache, every byte comes through the coordinator.
     */
    async open(tensors?: readonly TensorDigest[]): Promise<StageSession> {
        const {files, threads, cacheDir} = this.options;
        const started = performance.now();
        const view = tensors === undefined ? undefined : TensorCacheView.under(cacheDir);
        await view?.prepare();
        const server = new RpcServerHost({binaries: files, threads, ...(view !== undefined && {cacheDir: view.llamaCacheDir})});
        const [serverStartMs, fetched] = await Promise.all([
            server.start().then(() => performance.now() - started),
            tensors === undefined ? undefined : this.fetch(tensors).then(async (outcome) => {
                for (const tensor of outcome.stored)
                    await view!.add(tensor.path, tensor.fnv);
                return {outcome, ms: performance.now() - started};
            })
        ]);
        return {
            server, address: {host: '127.0.0.1', port: server.port!}, fetched: fetched?.outcome, serverStartMs, fetchMs: fetched?.ms ?? null,
            async close() {
                await server.stop();
                await view?.dispose();
            }
        };
    }

    close() {
        return this.proxy.close();
    }
}
