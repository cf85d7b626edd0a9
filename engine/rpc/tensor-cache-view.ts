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
import {copyFile, link, mkdir, readdir, rm, stat} from 'node:fs/promises';
import {join} from 'node:path';
import {processAlive} from './process-alive.js';
import {TENSOR_CACHE_SUBDIR} from './rpc-server-host.js';

/** Under the cache directory: one directory per hosted session, named `<pid>-<random>`. */
const VIEWS_SUBDIR = 'sessions';
const CACHE_FILE = /^[0-9a-f]{16}$/;

export class TensorCacheView {
    /** FNV-1a hash → bytes of each tensor the server may load by hash (`hostFilter`'s `cachedTensorBytes`). */
    private readonly sizes = new Map<bigint, bigint>();

    private constructor(private readonly seededDir: string, readonly dir: string) {}

    /** A new view under `cacheDir` (whose `rpc/` holds the seeded tensors), named now and made by `prepare()`. */
    static under(cacheDir: string) {
        return new TensorCacheView(join(cacheDir, TENSOR_CACHE_SUBDIR), join(cacheDir, VIEWS_SUBDIR, `${process.pid}-${randomBytes(6).toString('hex')}`));
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
        for (const name of names.filter((candidate) => CACHE_FILE.test(candidate)))
            await this.add(join(this.seededDir, name), name);
    }

    /**
     * Links a verified file as the tensor of hash `fnv` (16 hex digits). A name already there is kept: both were
     * checked, and the first may be loading.
     */
    async add(path: string, fnv: string) {
        if (!CACHE_FILE.test(fnv))
            throw new Error(`not a tensor cache name: ${fnv}`);
        const target = join(this.dir, TENSOR_CACHE_SUBDIR, fnv);
        const hash = BigInt(`0x${fnv}`);
        if (this.sizes.has(hash))
            return;
        try {
            await link(path, target);
        } catch (error) {
            const code = (error as NodeJS.ErrnoException).code;
            if (code === 'EEXIST') {
                // linked by a concurrent call
            } else if (code === 'EXDEV' || code === 'EPERM' || code === 'EMLINK')
                await copyFile(path, target); // another file system, or one without hard links
            else if (code === 'ENOENT')
                return; // evicted meanwhile: the coordinator sends it
            else
                throw error;
        }
        const info = await stat(target).catch(() => undefined);
        if (info !== undefined)
            this.sizes.set(hash, BigInt(info.size));
    }

    async dispose() {
        await rm(this.dir, {recursive: true, force: true});
    }
}

/** Views of sessions whose process is gone (a node killed outright leaves them behind). */
export async function removeAbandonedViews(cacheDir: string) {
    const root = join(cacheDir, VIEWS_SUBDIR);
    for (const name of await readdir(root).catch(() => [] as string[])) {
        const pid = Number(/^(\d+)-/.exec(name)?.[1]);
        if (Number.isInteger(pid) && pid !== process.pid && !processAlive(pid))
            await rm(join(root, name), {recursive: true, force: true});
    }
}
