import {availableParallelism} from 'node:os';
import {fileURLToPath} from 'node:url';
import {Worker} from 'node:worker_threads';
import type Hypercore from 'hypercore';
import {LedgerError} from './ledger-error.js';
import {checkRecord} from './record-check.js';
import type {SigningDomain} from './signing-domain.js';
import type {LedgerRecord} from './records.js';

/**
 * `verify`'s record checks on a pool of worker threads (docs/architecture.md, "Verification"): a million records
 * cost minutes of signature checks, which must not stall the node's event loop nor wait on one core. The calling
 * thread reads the log in chunks and hands them out; verdicts come back in record order, so whoever counts points
 * adds them in exactly the order a single thread would.
 */

/** A record that passed its check (parsed, as `checkRecord` returns it), or why it did not. */
export type RecordVerdict = LedgerRecord | string;

/** What a worker is sent: blocks laid end to end in `bytes`, each `lengths[i]` long (-1: not here). */
export interface VerifyChunk {
    id: number,
    owner: string,
    coreKey: string,
    /** The log's signing domain, as its header names it. */
    domain: SigningDomain,
    /** The owner's own signatures are its log's (`checkRecord`'s `attestedByLog`). */
    attestedByLog: boolean,
    firstIndex: number,
    bytes: ArrayBuffer,
    lengths: Int32Array
}

export interface CheckRecordsOptions {
    /** Worker threads; defaults to the machine's cores, at least 1. */
    threads?: number,
    /** Records read and checked together; defaults to 1,024. */
    chunkRecords?: number,
    /** A log this short or shorter is checked on the calling thread: starting threads would cost more; defaults to 512. */
    inlineRecords?: number
}

export const checkRecordsDefaults = {
    threads: Math.max(1, availableParallelism()),
    chunkRecords: 1_024,
    inlineRecords: 512
};

/** Checks a chunk's records, each as before an append: one verdict per record, in order. */
export function checkChunk({owner, coreKey, domain, attestedByLog, firstIndex}: {
    owner: string, coreKey: string, domain: SigningDomain, attestedByLog: boolean, firstIndex: number
}, bytes: Buffer, lengths: Int32Array) {
    const verdicts: RecordVerdict[] = [];
    let offset = 0;
    for (let position = 0; position < lengths.length; position++) {
        const length = lengths[position]!;
        if (length < 0) {
            verdicts.push('the record is not replicated here');
            continue;
        }
        const text = bytes.toString('utf8', offset, offset + length);
        offset += length;
        let candidate: unknown;
        try {
            candidate = JSON.parse(text);
        } catch {
            verdicts.push('the record is not JSON');
            continue;
        }
        try {
            verdicts.push(checkRecord(candidate, {owner, coreKey, domain, attestedByLog, index: firstIndex + position}));
        } catch (error) {
            verdicts.push((error as Error).message);
        }
    }
    return verdicts;
}

/**
 * The verdicts on records [0, `length`) of `core`, a chunk at a time, in record order. Up to two chunks per
 * thread are in flight while the next ones are read.
 */
export async function* checkLogRecords(core: Hypercore<unknown>, context: {owner: string, coreKey: string, domain: SigningDomain, attestedByLog: boolean, length: number},
    options: CheckRecordsOptions = {}): AsyncGenerator<RecordVerdict[]> {
    const {threads, chunkRecords, inlineRecords} = {...checkRecordsDefaults, ...options};
    const chunk = Math.max(1, chunkRecords);
    if (context.length <= inlineRecords) {
        for (let start = 0; start < context.length; start += chunk) {
            const {bytes, lengths} = await readBlocks(core, start, Math.min(context.length, start + chunk));
            yield checkChunk({...context, firstIndex: start}, bytes, lengths);
        }
        return;
    }
    const pool = new VerifyPool(Math.max(1, Math.min(threads, Math.ceil(context.length / chunk))));
    try {
        const inFlight: Promise<RecordVerdict[]>[] = [];
        let next = 0;
        const dispatch = async () => {
            const start = next;
            next = Math.min(context.length, start + chunk);
            const {bytes, lengths} = await readBlocks(core, start, next);
            const verdicts = pool.check({owner: context.owner, coreKey: context.coreKey, domain: context.domain, attestedByLog: context.attestedByLog,
                firstIndex: start, bytes, lengths});
            verdicts.catch(() => undefined); // awaited in order below, or dropped with the pool when the caller stops
            inFlight.push(verdicts);
        };
        while (next < context.length && inFlight.length < pool.size * 2)
            await dispatch();
        while (inFlight.length > 0) {
            const verdicts = await inFlight.shift()!;
            if (next < context.length)
                await dispatch();
            yield verdicts;
        }
    } finally {
        await pool.close();
    }
}

/**
 * Blocks [start, end) as raw bytes, end to end. Hypercore's storage is read in one batch (one RocksDB read for the
 * chunk, several times faster than a `get` per block); a block it lacks, or a core whose blocks are encrypted, goes
 * through `core.get`, which never waits for a peer here.
 */
async function readBlocks(core: Hypercore<unknown>, start: number, end: number) {
    const internal = core as unknown as {encryption: unknown, state?: {storage?: {read(): {getBlock(index: number): Promise<Buffer | null>, tryFlush(): void}}}};
    let blocks: (Buffer | null)[];
    const storage = internal.encryption ? undefined : internal.state?.storage;
    if (storage === undefined) {
        blocks = await Promise.all(Array.from({length: end - start}, (_, offset) => rawBlock(core, start + offset)));
    } else {
        const batch = storage.read();
        const reads = Array.from({length: end - start}, (_, offset) => batch.getBlock(start + offset));
        batch.tryFlush();
        blocks = await Promise.all(reads);
        blocks = await Promise.all(blocks.map((block, offset) => block ?? rawBlock(core, start + offset)));
    }
    const lengths = Int32Array.from(blocks, (block) => block?.length ?? -1);
    // One new buffer of exactly these bytes: a pooled slice would send its whole pool to the worker.
    const bytes = Buffer.concat(blocks.filter((block) => block !== null));
    return {bytes, lengths};
}

function rawBlock(core: Hypercore<unknown>, index: number): Promise<Buffer | null> {
    return (core.get(index, {wait: false, valueEncoding: 'binary'}) as Promise<Buffer | null>).catch(() => null);
}

/**
 * Starts a thread of the pool on `verify-worker`, next to this file: as .js when built, or as .ts when run through
 * tsx (tests, benchmarks), where the thread registers tsx's loader first (Node 20 ignores `--import` in a worker's
 * execArgv, so the engine's way of starting its child does not carry over).
 */
function startWorker() {
    const self = fileURLToPath(import.meta.url);
    if (!self.endsWith('.ts'))
        return new Worker(fileURLToPath(new URL('./verify-worker.js', import.meta.url)));
    const entry = new URL('./verify-worker.ts', import.meta.url).href;
    const tsx = import.meta.resolve('tsx/esm/api');
    return new Worker(`import(${JSON.stringify(tsx)}).then(({register}) => { register(); return import(${JSON.stringify(entry)}); });`, {eval: true});
}

interface Job {
    chunk: Omit<VerifyChunk, 'id' | 'bytes'> & {bytes: Buffer},
    resolve: (verdicts: RecordVerdict[]) => void,
    reject: (error: Error) => void
}

/** Worker threads that each check one chunk at a time; chunks wait in line for a free thread. */
class VerifyPool {
    private readonly idle: Worker[] = [];
    private readonly busy = new Map<Worker, Job>();
    private readonly waiting: Job[] = [];
    private readonly workers: Worker[] = [];
    private failure: Error | undefined;
    private nextId = 0;

    constructor(readonly size: number) {
        for (let index = 0; index < size; index++) {
            const worker = startWorker();
            worker.on('message', ({verdicts}: {verdicts: RecordVerdict[]}) => {
                const job = this.busy.get(worker)!;
                this.busy.delete(worker);
                this.idle.push(worker);
                this.pump();
                job.resolve(verdicts);
            });
            worker.on('error', (error) => this.fail(LedgerError.storage(`a verify thread failed: ${error.message}`)));
            worker.on('exit', (code) => this.fail(LedgerError.storage(`a verify thread exited (code ${code})`)));
            this.workers.push(worker);
            this.idle.push(worker);
        }
    }

    check(chunk: Job['chunk']): Promise<RecordVerdict[]> {
        if (this.failure !== undefined)
            return Promise.reject(this.failure);
        return new Promise((resolve, reject) => {
            this.waiting.push({chunk, resolve, reject});
            this.pump();
        });
    }

    async close() {
        this.failure ??= LedgerError.storage('the verify threads were closed');
        for (const job of [...this.waiting.splice(0), ...this.busy.values()])
            job.reject(this.failure);
        this.busy.clear();
        await Promise.all(this.workers.map((worker) => worker.terminate()));
    }

    private pump() {
        while (this.idle.length > 0 && this.waiting.length > 0) {
            const worker = this.idle.pop()!;
            const job = this.waiting.shift()!;
            this.busy.set(worker, job);
            const {bytes, lengths} = job.chunk;
            // The bytes move to the worker instead of being copied (Buffer.concat made them their own memory).
            const buffer = (bytes.buffer.byteLength === bytes.length && bytes.byteOffset === 0 ? bytes.buffer
                : bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)) as ArrayBuffer;
            worker.postMessage({...job.chunk, id: this.nextId++, bytes: buffer, lengths} satisfies VerifyChunk, [buffer, lengths.buffer as ArrayBuffer]);
        }
    }

    private fail(error: Error) {
        if (this.failure !== undefined)
            return;
        this.failure = error;
        for (const job of [...this.waiting.splice(0), ...this.busy.values()])
            job.reject(error);
        this.busy.clear();
    }
}
