import {mkdir, readFile, writeFile} from 'node:fs/promises';
import {dirname, join} from 'node:path';
import type {DeviceBenchmarkResult} from './device-benchmark.js';

interface CacheFile {
    /** Every result, by device and model. */
    results: Record<string, Record<string, DeviceBenchmarkResult>>,
    /** The latest result per device: what the node announces. */
    latest: Record<string, DeviceBenchmarkResult>
}

export function benchmarkCachePath(dataDir: string) {
    return join(dataDir, 'cache', 'device-benchmark.json');
}

async function readCache(path: string): Promise<CacheFile> {
    try {
        const parsed = JSON.parse(await readFile(path, 'utf8')) as CacheFile;
        if (typeof parsed.results === 'object' && typeof parsed.latest === 'object')
            return parsed;
    } catch {
        // absent or damaged: a cache, rebuilt by benchmarking again
    }
    return {results: {}, latest: {}};
}

/** Device benchmark results, cached per device and model in the data dir. */
export class BenchmarkCache {
    constructor(private readonly path: string) {}

    async find(device: string, modelKey: string) {
        return (await readCache(this.path)).results[device]?.[modelKey];
    }

    async latest(device: string) {
        return (await readCache(this.path)).latest[device];
    }

    async store(device: string, modelKey: string, result: DeviceBenchmarkResult) {
        const cache = await readCache(this.path);
        cache.results[device] = {...cache.results[device], [modelKey]: result};
        cache.latest[device] = result;
        await mkdir(dirname(this.path), {recursive: true});
        await writeFile(this.path, JSON.stringify(cache, null, 2));
    }
}
