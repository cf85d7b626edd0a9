/**
 * Seeds an rpc server's tensor cache from a GGUF file this node holds, so that a coordinator loading the same model
 * sends those tensors' hashes instead of their bytes (docs/architecture.md, "Sharding"). The server looks for
 * `<cache>/%016PRIx64` of the FNV-1a 64 of the bytes given to `set_tensor` (ggml-rpc.cpp), and llama.cpp's loader
 * sets each weight whole from the file (`load_all_data`): the hash of a tensor's `ggml_nbytes` bytes in the file is
 * the one asked for.
 */
import {randomBytes} from 'node:crypto';
import {createReadStream} from 'node:fs';
import {mkdir, open, readdir, readFile, rename, stat, unlink, writeFile} from 'node:fs/promises';
import {join, resolve} from 'node:path';
import {readGgufFileInfo} from 'node-llama-cpp';
import {processAlive} from './process-alive.js';

/** Tensors over this size are offered by hash (ggml-rpc's HASH_THRESHOLD). */
export const HASH_THRESHOLD_BYTES = 10 * 1024 * 1024;
/** The seeding records, in the cache directory: which tensors of which model file are there under which hash. */
const MARKER_SUBDIR = 'seeds';
const READ_CHUNK_BYTES = 1024 * 1024;

const FNV_OFFSET_HIGH = 0xcbf29ce4;
const FNV_OFFSET_LOW = 0x84222325;
/** The 64-bit FNV prime is 2^40 + 0x1b3. */
const FNV_PRIME_LOW = 0x1b3;

/**
 * FNV-1a 64 in two 32-bit halves with integer arithmetic only (BigInt per byte is about a hundred times slower).
 * (high·2^32 + low)·(2^40 + 0x1b3) mod 2^64: the low half is low·0x1b3 mod 2^32, the high half
 * high·0x1b3 + the carry out of low·0x1b3 + low·2^8.
 */
export class Fnv1a64 {
    private high = FNV_OFFSET_HIGH | 0;
    private low = FNV_OFFSET_LOW | 0;

    update(bytes: Uint8Array) {
        let high = this.high;
        let low = this.low;
        for (let index = 0; index < bytes.length; index++) {
            low ^= bytes[index]!;
            // The carry out of low·0x1b3, in 16-bit pieces; off the critical path, which is low's xor and imul.
            const carry = ((low >>> 16) * FNV_PRIME_LOW + (((low & 0xffff) * FNV_PRIME_LOW) >>> 16)) >>> 16;
            high = (Math.imul(high, FNV_PRIME_LOW) + carry + (low << 8)) | 0;
            low = Math.imul(low, FNV_PRIME_LOW);
        }
        this.high = high;
        this.low = low;
        return this;
    }

    /** As the server names its cache files: 16 lowercase hex digits. */
    hex() {
        return (this.high >>> 0).toString(16).padStart(8, '0') + (this.low >>> 0).toString(16).padStart(8, '0');
    }
}

/**
 * ggml's block size and bytes per block of each type a GGUF file may hold (`type_traits` in ggml/src/ggml.c,
 * block sizes from ggml-common.h). A tensor's bytes are ne0 / block · bytes per block · the other dimensions.
 */
const GGML_TYPE_BLOCKS: Record<number, readonly [elements: number, bytes: number]> = {
    0: [1, 4], 1: [1, 2], 2: [32, 18], 3: [32, 20], 6: [32, 22], 7: [32, 24], 8: [32, 34], 9: [32, 36],
    10: [256, 84], 11: [256, 110], 12: [256, 144], 13: [256, 176], 14: [256, 210], 15: [256, 292],
    16: [256, 66], 17: [256, 74], 18: [256, 98], 19: [256, 50], 20: [32, 18], 21: [256, 110], 22: [256, 82], 23: [256, 136],
    24: [1, 1], 25: [1, 2], 26: [1, 4], 27: [1, 8], 28: [1, 8], 29: [256, 56], 30: [1, 2],
    34: [256, 54], 35: [256, 66], 39: [32, 17], 40: [64, 36], 41: [128, 18], 42: [64, 18]
};

/** `ggml_nbytes` of a contiguous tensor; undefined for a type this table does not know (such a tensor is not seeded). */
export function ggmlTensorBytes(type: number, dimensions: readonly number[]) {
    const block = GGML_TYPE_BLOCKS[type];
    if (block === undefined || dimensions.length === 0 || dimensions[0]! % block[0] !== 0)
        return undefined;
    return dimensions.slice(1).reduce((product, dimension) => product * dimension, (dimensions[0]! / block[0]) * block[1]);
}

export interface LargeTensor {
    name: string,
    /** Where its bytes start in the file. */
    start: number,
    bytes: number
}

/**
 * The tensors of a GGUF file that ggml-rpc offers by hash, in file order; with `layers`, only those of blocks
 * `first..last` (`blk.N.*`), the weights a stage holding those layers receives. node-llama-cpp's `fileOffset` is
 * from the start of the file (the aligned data section's offset plus the tensor's own).
 */
export async function largeTensors(ggufPath: string, layers?: readonly [number, number]): Promise<LargeTensor[]> {
    const info = await readGgufFileInfo(ggufPath, {readTensorInfo: true, spliceSplitFiles: false});
    return [...(info.fullTensorInfo ?? [])]
        .filter((tensor) => tensor.filePart === 1)
        .filter((tensor) => {
            if (layers === undefined)
                return true;
            const block = /^blk\.(\d+)\./.exec(tensor.name);
            return block !== null && Number(block[1]) >= layers[0] && Number(block[1]) <= layers[1];
        })
        .flatMap((tensor) => {
            const bytes = ggmlTensorBytes(Number(tensor.ggmlType), tensor.dimensions.map(Number));
            return bytes !== undefined && bytes > HASH_THRESHOLD_BYTES ? [{name: tensor.name, start: Number(tensor.fileOffset), bytes}] : [];
        })
        .sort((a, b) => a.start - b.start);
}

export interface SeedOptions {
    /** Only the tensors of these blocks, first and last inclusive; defaults to every tensor over the threshold. */
    layers?: readonly [number, number],
    /** The file's SHA-256 if known: names its record; defaults to the file's size and modification time. */
    sha256?: string,
    /** Writes at most this many bytes this call; the tensors left out are sent over the network as before. */
    maxBytes?: number
}

export interface SeedOutcome {
    /** Tensors written into the cache by this call. */
    seeded: number,
    /** Tensors that were there already. */
    present: number,
    /** Tensors left out by `maxBytes`. */
    skipped: number,
    /** Bytes read from the model file and hashed (none for tensors the record says are there). */
    bytesHashed: number,
    bytesWritten: number,
    elapsedMs: number
}

interface SeedRecord {
    size: number,
    mtimeMs: number,
    /** Tensor name → its cache file's name and size. */
    tensors: Record<string, {hash: string, bytes: number}>
}

/** One seeding per cache directory at a time in this process: two sessions of one model share the work. */
const seeding = new Map<string, Promise<unknown>>();

/**
 * Writes each tensor of `ggufPath` larger than the hash threshold (of `options.layers` only, if given) into
 * `cacheDir` (the server's `$LLAMA_CACHE/rpc`) under its hash, as the server itself would; files already there are
 * kept, and the record per model file (`<cacheDir>/seeds/`) spares re-reading them (docs/architecture.md, "Hosts
 * that hold the model"). Each file appears by a rename, so a server never reads half of one.
 */
export function seedTensorCache(ggufPath: string, cacheDir: string, options: SeedOptions = {}): Promise<SeedOutcome> {
    const key = resolve(cacheDir);
    const run = (seeding.get(key) ?? Promise.resolve()).catch(() => undefined).then(() => seedOnce(ggufPath, cacheDir, options));
    seeding.set(key, run);
    void run.finally(() => {
        if (seeding.get(key) === run)
            seeding.delete(key);
    }).catch(() => undefined);
    return run;
}

async function seedOnce(ggufPath: string, cacheDir: string, options: SeedOptions): Promise<SeedOutcome> {
    const startedAt = Date.now();
    const {size, mtimeMs} = await stat(ggufPath);
    const recordPath = join(cacheDir, MARKER_SUBDIR, `${options.sha256 ?? `${size}-${Math.round(mtimeMs)}`}.json`);
    await mkdir(join(cacheDir, MARKER_SUBDIR), {recursive: true});
    await removeAbandonedFiles(cacheDir);
    const record = await readRecord(recordPath, size, mtimeMs);
    const outcome: SeedOutcome = {seeded: 0, present: 0, skipped: 0, bytesHashed: 0, bytesWritten: 0, elapsedMs: 0};
    let changed = false;
    try {
        for (const tensor of await largeTensors(ggufPath, options.layers)) {
            const known = record.tensors[tensor.name];
            if (known !== undefined && known.bytes === tensor.bytes && await sizeOf(join(cacheDir, known.hash)) === tensor.bytes) {
                outcome.present++;
                continue;
            }
            if (options.maxBytes !== undefined && outcome.bytesWritten + tensor.bytes > options.maxBytes) {
                outcome.skipped++;
                continue;
            }
            const {hash, written} = await copyTensor(ggufPath, tensor, cacheDir);
            record.tensors[tensor.name] = {hash, bytes: tensor.bytes};
            changed = true;
            outcome.bytesHashed += tensor.bytes;
            if (written) {
                outcome.seeded++;
                outcome.bytesWritten += tensor.bytes;
            } else
                outcome.present++;
        }
    } finally {
        if (changed)
            await writeAtomically(recordPath, JSON.stringify(record));
    }
    outcome.elapsedMs = Date.now() - startedAt;
    return outcome;
}

/** Streams one tensor from the model file into a temporary file while hashing it, then names it by its hash. */
async function copyTensor(ggufPath: string, tensor: LargeTensor, cacheDir: string) {
    const hash = new Fnv1a64();
    const temporary = join(cacheDir, `.seed-${process.pid}-${randomBytes(6).toString('hex')}`);
    const output = await open(temporary, 'w');
    try {
        const input = createReadStream(ggufPath, {start: tensor.start, end: tensor.start + tensor.bytes - 1, highWaterMark: READ_CHUNK_BYTES});
        let read = 0;
        for await (const chunk of input as AsyncIterable<Buffer>) {
            hash.update(chunk);
            await output.write(chunk);
            read += chunk.length;
        }
        if (read !== tensor.bytes)
            throw new Error(`${tensor.name}: the model file ended after ${read} of its ${tensor.bytes} bytes`);
    } catch (error) {
        await output.close();
        await unlink(temporary).catch(() => undefined);
        throw error;
    }
    await output.close();
    const file = join(cacheDir, hash.hex());
    if (await sizeOf(file) === tensor.bytes) {
        await unlink(temporary);
        return {hash: hash.hex(), written: false};
    }
    await rename(temporary, file);
    return {hash: hash.hex(), written: true};
}

async function readRecord(path: string, size: number, mtimeMs: number): Promise<SeedRecord> {
    try {
        const record = JSON.parse(await readFile(path, 'utf8')) as SeedRecord;
        if (record.size === size && record.mtimeMs === mtimeMs && typeof record.tensors === 'object' && record.tensors !== null)
            return record;
    } catch {
        // absent or damaged: rebuilt by reading the file again
    }
    return {size, mtimeMs, tensors: {}};
}

/** Temporary files of seedings whose process died midway (the server ignores them, and so does the pruning). */
async function removeAbandonedFiles(cacheDir: string) {
    for (const name of await readdir(cacheDir).catch(() => [] as string[])) {
        const pid = Number(/^\.seed-(\d+)-/.exec(name)?.[1]);
        if (Number.isInteger(pid) && pid !== process.pid && !processAlive(pid))
            await unlink(join(cacheDir, name)).catch(() => undefined);
    }
}

function sizeOf(path: string) {
    return stat(path).then((found) => found.size, () => undefined);
}

async function writeAtomically(path: string, text: string) {
    const temporary = `${path}.${process.pid}-${randomBytes(6).toString('hex')}`;
    await writeFile(temporary, text);
    await rename(temporary, path);
}
