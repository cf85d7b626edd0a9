/**
 * The SHA-256 of each large tensor of a model file, which the coordinator sends to hosts that fetch their layers from
 * the model's source so that they can check each one (docs/architecture.md, "Hosts that fetch their layers"). Reading
 * a large model takes a while, so the digests are computed once per file and kept in `<cacheDir>/<file sha256>.json`,
 * as the file's own hash is (engine/model-hash-cache.ts).
 */
import {createHash, randomBytes} from 'node:crypto';
import {createReadStream} from 'node:fs';
import {mkdir, readFile, rename, stat, unlink, writeFile} from 'node:fs/promises';
import {dirname, join, resolve} from 'node:path';
import type {TensorDigest} from '../core/tensor-digest.js';
import {largeTensors} from './rpc/tensor-cache-seed.js';

/** Where a node keeps its digests, beside the file hashes (`<data dir>/cache/model-hashes.json`). */
export function tensorDigestsDir(dataDir: string) {
    return join(dataDir, 'cache', 'tensor-digests');
}

/** Large reads: the file is read once, front to back, and hashing keeps up with the disk. */
const READ_CHUNK_BYTES = 8 * 1024 * 1024;

export interface TensorDigestsOptions {
    /** Called with the fraction of the tensors' bytes hashed so far, when they are read (not when cached). */
    onProgress?: (fraction: number) => void
}

export type TensorDigestErrorCode = 'INVALID_SHA256' | 'TRUNCATED';

export class TensorDigestError extends Error {
    constructor(message: string, readonly code: TensorDigestErrorCode) {
        super(message);
        this.name = 'TensorDigestError';
    }
}

interface DigestRecord {
    size: number,
    mtimeMs: number,
    tensors: TensorDigest[]
}

interface Computation {
    promise: Promise<TensorDigest[]>,
    listeners: Set<(fraction: number) => void>
}

/** The computations under way in this process: callers asking for the same file share one reading of it. */
const computing = new Map<string, Computation>();

/**
 * Every tensor of the file that ggml-rpc offers by hash (`largeTensors`: over 10 MiB), in file order, with the
 * SHA-256 of exactly its `ggml_nbytes` bytes. `fileSha256` is the file's SHA-256 (as ModelHashCache gives it) and
 * names the record; the record holds only while the file keeps the size and modification time it was read with.
 */
export function tensorDigests(path: string, fileSha256: string, cacheDir: string, options: TensorDigestsOptions = {}): Promise<TensorDigest[]> {
    if (!/^[0-9a-f]{64}$/.test(fileSha256))
        return Promise.reject(new TensorDigestError(`not a lowercase hex SHA-256: "${fileSha256.slice(0, 80)}"`, 'INVALID_SHA256'));
    const key = JSON.stringify([resolve(path), fileSha256, resolve(cacheDir)]);
    let computation = computing.get(key);
    if (computation === undefined) {
        const listeners = new Set<(fraction: number) => void>();
        const promise = digestsOf(path, join(cacheDir, `${fileSha256}.json`), (fraction) => {
            for (const listener of listeners)
                listener(fraction);
        });
        computation = {promise, listeners};
        computing.set(key, computation);
        void promise.finally(() => computing.delete(key)).catch(() => undefined);
    }
    if (options.onProgress)
        computation.listeners.add(options.onProgress);
    return computation.promise;
}

/** The digests of blocks `first..last` (`blk.N.*`), the tensors a stage holding those layers loads. */
export function digestsOfLayers(digests: readonly TensorDigest[], [first, last]: readonly [number, number]): TensorDigest[] {
    return digests.filter((digest) => {
        const block = /^blk\.(\d+)\./.exec(digest.name);
        return block !== null && Number(block[1]) >= first && Number(block[1]) <= last;
    });
}

async function digestsOf(path: string, recordPath: string, onProgress: (fraction: number) => void): Promise<TensorDigest[]> {
    const {size, mtimeMs} = await stat(path);
    const cached = await readRecord(recordPath, size, mtimeMs);
    if (cached !== undefined)
        return cached;
    const tensors = await largeTensors(path);
    const total = tensors.reduce((sum, tensor) => sum + tensor.bytes, 0);
    const digests: TensorDigest[] = [];
    let hashed = 0;
    for (const tensor of tensors) {
        const hash = createHash('sha256');
        let read = 0;
        for await (const chunk of createReadStream(path, {start: tensor.start, end: tensor.start + tensor.bytes - 1, highWaterMark: READ_CHUNK_BYTES}) as AsyncIterable<Buffer>) {
            hash.update(chunk);
            read += chunk.length;
            onProgress(total > 0 ? (hashed + read) / total : 1);
        }
        if (read !== tensor.bytes)
            throw new TensorDigestError(`${path}: ${tensor.name}: the file ended after ${read} of its ${tensor.bytes} bytes`, 'TRUNCATED');
        hashed += read;
        digests.push({name: tensor.name, offset: tensor.start, bytes: tensor.bytes, sha256: hash.digest('hex')});
    }
    // A record that cannot be written costs a second reading next time, not this session.
    await writeRecord(recordPath, {size, mtimeMs, tensors: digests}).catch(() => undefined);
    return digests;
}

function isDigest(value: unknown, fileSize: number): value is TensorDigest {
    const digest = value as Partial<TensorDigest> | null;
    return typeof digest === 'object' && digest !== null
        && typeof digest.name === 'string' && digest.name.length > 0 && digest.name.length <= 256
        && Number.isSafeInteger(digest.offset) && digest.offset! >= 0
        && Number.isSafeInteger(digest.bytes) && digest.bytes! > 0 && digest.offset! + digest.bytes! <= fileSize
        && typeof digest.sha256 === 'string' && /^[0-9a-f]{64}$/.test(digest.sha256);
}

/** The record if it is whole and was made from the file as it is now; else undefined (absent or damaged: read again). */
async function readRecord(path: string, size: number, mtimeMs: number): Promise<TensorDigest[] | undefined> {
    try {
        const record = JSON.parse(await readFile(path, 'utf8')) as Partial<DigestRecord> | null;
        if (record?.size === size && record.mtimeMs === mtimeMs && Array.isArray(record.tensors)
            && record.tensors.every((digest) => isDigest(digest, size)))
            return record.tensors.map(({name, offset, bytes, sha256}) => ({name, offset, bytes, sha256}));
    } catch {
        // absent or not JSON
    }
    return undefined;
}

async function writeRecord(path: string, record: DigestRecord) {
    await mkdir(dirname(path), {recursive: true});
    const temporary = `${path}.${process.pid}-${randomBytes(6).toString('hex')}`;
    try {
        await writeFile(temporary, JSON.stringify(record));
        await rename(temporary, path);
    } catch (error) {
        await unlink(temporary).catch(() => undefined);
        throw error;
    }
}
