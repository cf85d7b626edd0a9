import {mkdir, readFile, stat, writeFile} from 'node:fs/promises';
import {dirname} from 'node:path';
import {sha256OfFile} from './model-files.js';

interface CachedHash {
    size: number,
    mtimeMs: number,
    sha256: string
}

/**
 * SHA-256 of model files, remembered by path, size and modification time: hashing a large model takes
 * seconds to minutes, and peers match models by hash.
 */
export class ModelHashCache {
    private entries: Record<string, CachedHash> | undefined;
    private writing: Promise<void> = Promise.resolve();

    constructor(private readonly cacheFile: string) {}

    /** The cached hash if the file is unchanged, else undefined. */
    async cached(path: string): Promise<string | undefined> {
        return (await this.lookup(path)).sha256;
    }

    async hash(path: string): Promise<string> {
        const {sha256: known, size, mtimeMs} = await this.lookup(path);
        if (known !== undefined)
            return known;
        const sha256 = await sha256OfFile(path);
        (await this.load())[path] = {size, mtimeMs, sha256};
        this.writing = this.writing.then(() => this.save()).catch(() => undefined);
        await this.writing;
        return sha256;
    }

    /** The file's size and time now, and its hash if the cache holds one for exactly that file. */
    private async lookup(path: string) {
        const entry = (await this.load())[path];
        const {size, mtimeMs} = await stat(path);
        const sha256 = entry && entry.size === size && entry.mtimeMs === mtimeMs ? entry.sha256 : undefined;
        return {size, mtimeMs, sha256};
    }

    private async load() {
        if (this.entries === undefined) {
            try {
                this.entries = JSON.parse(await readFile(this.cacheFile, 'utf8')) as Record<string, CachedHash>;
            } catch {
                this.entries = {}; // absent or damaged: a cache, rebuilt by hashing again
            }
        }
        return this.entries;
    }

    private async save() {
        await mkdir(dirname(this.cacheFile), {recursive: true});
        await writeFile(this.cacheFile, JSON.stringify(this.entries, null, 1));
    }
}
