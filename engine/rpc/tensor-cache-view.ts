/**
 * The tensor cache one hosted session's rpc server reads (docs/architecture.md, "Hosts that fetch their layers"): a
 * directory of hard links, made per session, holding what this node seeded from its own model files (trusted for
 * every session) and the tensors downloaded for this session's model whose SHA-256 its coordinator stated.
 *
 * Why not one shared directory: the server looks tensors up by their FNV-1a hash, which anyone can collide. A
 * coordinator names the source and the SHA-256s of what it asks a host to download, so a hostile one could have a
 * crafted tensor stored under the hash of a popular model's; in a shared cache, other coordinators' sessions would
 * load it. Downloads are kept by SHA-256 instead, and only linked into the views of sessions that asked for that one.
 */
import {randomBytes} from 'node:crypto';
import {copyFile, link, mkdir, readdir, rename, rm, stat, unlink} from 'node:fs/promises';
import {join} from 'node:path';
import {processAlive} from './process-alive.js';
import {TENSOR_CACHE_SUBDIR} from './rpc-server-host.js';

/** Under the cache directory: one directory per hosted session, named `<pid>-<process nonce>-<random>`. */
const VIEWS_SUBDIR = 'sessions';
const CACHE_FILE = /^[0-9a-f]{16}$/;
/** Tells this process's views from those of an earlier process that had the same pid (pids repeat in containers). */
const PROCESS_NONCE = randomBytes(4).toString('hex');

export class TensorCacheView {
    /** FNV-1a hash → bytes of each tensor the server may load by hash (`hostFilter`'s `cachedTensorBytes`). */
    private readonly sizes = new Map<bigint, bigint>();
    /** Links being made now: `dispose()` waits for them, or its removal would race them. */
    private readonly adding = new Set<Promise<void>>();
    /** Closed: no more links (the load began with the sandbox off, or the session ended). */
    private closed = false;

    private constructor(private readonly seededDir: string, readonly dir: string) {}

    /** A new view under `cacheDir` (whose `rpc/` holds the seeded tensors), named now and made by `prepare()`. */
    static under(cacheDir: string) {
        return new TensorCacheView(join(cacheDir, TENSOR_CACHE_SUBDIR),
            join(cacheDir, VIEWS_SUBDIR, `${process.pid}-${PROCESS_NONCE}-${randomBytes(6).toString('hex')}`));
    }

    async prepare() {
        await mkdir(join(this.dir, TENSOR_CACHE_SUBDIR), {recursive: true});
    }

    /** What the server takes as its `$LLAMA_CACHE` (`RpcServerHost`'s `cacheDir`): the links are in its `rpc/`. */
    get llamaCacheDir() {
        return this.dir;
    }

    /** The size of the tensor a SET_TENSOR_HASH names, when the server will find it. */
    cachedBytes(hash: bigint) {
        return this.sizes.get(hash);
    }

    /** Links every tensor seeded from this node's own model files that the view lacks (after a seeding, again). */
    async linkSeeded() {
        const names = await readdir(this.seededDir).catch(() => [] as string[]);
        for (const name of names.filter((candidate) => CACHE_FILE.test(candidate))) {
            if (this.closed)
                return;
            await this.add(join(this.seededDir, name), name);
        }
    }

    /**
     * No more links from now on. A server outside the sandbox can write its cache, and ggml-rpc truncates and rewrites
     * `<fnv>` when it receives a big tensor it did not find: a link made meanwhile would let it rewrite a shared file.
     */
    close() {
        this.closed = true;
    }

    /**
     * Links a verified file as the tensor of hash `fnv` (16 hex digits). A name already there is kept: both were
     * checked, and the first may be loading.
     */
    async add(path: string, fnv: string) {
        if (!CACHE_FILE.test(fnv))
            throw new Error(`not a tensor cache name: ${fnv}`);
        if (this.closed || this.sizes.has(BigInt(`0x${fnv}`)))
            return;
        const adding = this.link(path, fnv);
        this.adding.add(adding);
        try {
            await adding;
        } finally {
            this.adding.delete(adding);
        }
    }

    private async link(path: string, fnv: string) {
        const target = join(this.dir, TENSOR_CACHE_SUBDIR, fnv);
        try {
            await link(path, target);
        } catch (error) {
            const code = (error as NodeJS.ErrnoException).code;
            if (code === 'EEXIST') {
                // linked by a concurrent call
            } else if (code === 'EXDEV' || code === 'EPERM' || code === 'EMLINK') {
                // Another file system, or one without hard links: a copy, named once whole (the server accepts a short file).
                const temporary = join(this.dir, `.copy-${fnv}-${randomBytes(4).toString('hex')}`);
                try {
                    await copyFile(path, temporary);
                    await rename(temporary, target);
                } catch (copyError) {
                    await unlink(temporary).catch(() => undefined);
                    if ((copyError as NodeJS.ErrnoException).code === 'ENOENT')
                        return;
                    throw copyError;
                }
            } else if (code === 'ENOENT')
                return; // evicted meanwhile, or the view is gone: the coordinator sends it
            else
                throw error;
        }
        const info = await stat(target).catch(() => undefined);
        if (info !== undefined)
            this.sizes.set(BigInt(`0x${fnv}`), BigInt(info.size));
    }

    /** Removes the view once the links being made are done; never fails (a leftover goes with the next start's clean-up). */
    async dispose() {
        this.closed = true;
        await Promise.allSettled([...this.adding]);
        await rm(this.dir, {recursive: true, force: true, maxRetries: 3}).catch(() => undefined);
    }
}

/**
 * Views of sessions whose process is gone (a node killed outright leaves them behind), or was an earlier process with
 * this one's pid.
 */
export async function removeAbandonedViews(cacheDir: string) {
    const root = join(cacheDir, VIEWS_SUBDIR);
    for (const name of await readdir(root).catch(() => [] as string[])) {
        const [pidText, nonce] = name.split('-');
        const pid = Number(pidText);
        const abandoned = pid === process.pid ? nonce !== PROCESS_NONCE : Number.isInteger(pid) && !processAlive(pid);
        if (abandoned)
            await rm(join(root, name), {recursive: true, force: true, maxRetries: 3}).catch(() => undefined);
    }
}
