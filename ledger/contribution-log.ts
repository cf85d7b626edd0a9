import {EventEmitter} from 'node:events';
import {access, rename} from 'node:fs/promises';
import Corestore from 'corestore';
import type Hypercore from 'hypercore';
import {Backoff} from '../core/backoff.js';
import {LedgerError} from './ledger-error.js';
import {PointsCounter, type PointsTally} from './points.js';
import {type AnchorAuthorization, checkRecord, signAnchorAuthorization, signAnchorRevocation, signLogHeader, workKey} from './record-check.js';
import {LEDGER_RECORD_VERSION, ledgerRecordSchema, type AnchorRecord, type HeaderRecord, type LedgerRecord} from './records.js';
import {DEFAULT_SIGNING_DOMAIN, type SigningDomain} from './signing-domain.js';

/** The name of this node's own log in its corestore. */
const CORE_NAME = 'contributions';
/** Records kept in memory for `recent()`. */
const RECENT_RECORDS = 50;
/** The public swarm network on Dogechain: the node settings' defaults. */

export interface ContributionLogOptions {
    /** The corestore's folder, in the data dir. */
    directory: string,
    /** The node's key pair: its public key (hex) owns the log, its secret key signs the log's header. */
    identity: {publicKey: Buffer, secretKey: Buffer},
    /** The swarm network and chain a new log's header names (its signing domain); defaults to `public` on Dogechain (2000). */
    domain?: SigningDomain,
    /** A record waits at most this long to be appended with others; defaults to 20 ms. */
    flushIntervalMs?: number,
    /** …or until this many wait; defaults to 1,000. */
    maxBatch?: number,
    /** Node ids whose receipts this node stands behind, for its tally's witnessed points; defaults to none. */
    witnesses?: ReadonlySet<string>,
    /** After a failed write, the longest wait before the records are written again; defaults to 5 s. */
    maxRetryMs?: number
}

export const contributionLogDefaults = {
    flushIntervalMs: 20,
    maxBatch: 1_000,
    maxRetryMs: 5_000
};

/** Records waiting to be written together, and the promise every `append` of them returned. */
class PendingBatch {
    readonly records: LedgerRecord[] = [];
    readonly written: Promise<void>;
    resolve!: () => void;
    reject!: (error: Error) => void;

    constructor() {
        this.written = new Promise<void>((resolve, reject) => {
            this.resolve = resolve;
            this.reject = reject;
        });
        // A caller that does not wait is told by `rejected`/`writeFailed` instead: never an unhandled rejection.
        this.written.catch(() => undefined);
    }
}

export interface ContributionLogEvents {
    /** Records now on disk. */
    appended: [records: LedgerRecord[]],
    /** A record that was refused, never appended, and why. */
    rejected: [reason: string],
    /** Writing a batch failed; its records stay queued and are written again (their `append` promises wait). */
    writeFailed: [reason: string]
}

/**
 * This node's append-only log of contributions on Hypercore (docs/architecture.md, "The log"). Appends are batched,
 * so a burst of receipts costs the token stream nothing; a record that does not check out is never appended. An
 * append's promise resolves once its record is on disk: acknowledge nothing to a peer before.
 */
export class ContributionLog extends EventEmitter<ContributionLogEvents> {
    readonly owner: string;
    private readonly options: Required<Omit<ContributionLogOptions, 'identity' | 'directory' | 'domain' | 'witnesses'>>;
    private readonly counter: PointsCounter;
    private readonly work = new Set<string>();
    private readonly anchorRecords: AnchorRecord[] = [];
    private readonly recentRecords: LedgerRecord[] = [];
    private queue = new PendingBatch();
    private flushTimer: NodeJS.Timeout | undefined;
    private flushing: Promise<void> = Promise.resolve();
    private readonly retries: Backoff;
    private closing = false;

    private readonly secretKey: Buffer;
    /** The network and chain the log's header names: what its owner's signatures for it are bound to. */
    domain: SigningDomain = DEFAULT_SIGNING_DOMAIN;
    /** An older log this open moved aside to start a new one (docs/architecture.md, "The log"), or null. */
    replacedLog: {version: number, movedTo: string} | null = null;

    private constructor(private readonly store: Corestore, private readonly core: Hypercore<unknown>, owner: string, options: ContributionLogOptions) {
        super();
        this.owner = owner;
        this.secretKey = options.identity.secretKey;
        this.options = {...contributionLogDefaults, ...options};
        this.counter = new PointsCounter(owner, {...(options.witnesses && {witnesses: options.witnesses})});
        this.retries = new Backoff({initialMs: this.options.flushIntervalMs, maxMs: this.options.maxRetryMs});
    }

    /**
     * Opens the log (creating it, with its signed header, the first time) and replays it for points. A log of an
     * older record version is moved aside whole (`<directory>-v<version>-<date>`) and a new one started: its records
     * were signed under rules that no longer hold, and one identity has one log (docs/architecture.md, "The log").
     */
    static async open(options: ContributionLogOptions): Promise<ContributionLog> {
        const replaced = await moveAsideOlderLog(options.directory);
        const store = new Corestore(options.directory);
        try {
            const core = store.get({name: CORE_NAME, valueEncoding: 'json'});
            await core.ready();
            const owner = options.identity.publicKey.toString('hex');
            const log = new ContributionLog(store, core, owner, options);
            log.replacedLog = replaced;
            if (core.length === 0) {
                const coreKey = core.key!.toString('hex');
                const domain = options.domain ?? DEFAULT_SIGNING_DOMAIN;
                const claim = {core: coreKey, network: domain.network, chainId: domain.chainId};
                await core.append({version: LEDGER_RECORD_VERSION, type: 'header', at: new Date().toISOString(), owner, ...claim,
                    signature: signLogHeader(claim, options.identity.secretKey)} satisfies HeaderRecord);
                log.domain = domain;
            } else {
                await log.replay();
            }
            return log;
        } catch (error) {
            await store.close().catch(() => undefined);
            throw error instanceof LedgerError ? error : LedgerError.storage(`cannot open the contribution log in ${options.directory}: ${(error as Error).message}`);
        }
    }

    /** The log's public key (hex): what peers replicate and what anchors name. */
    get key() {
        return this.core.key!.toString('hex');
    }

    /** Records on disk. */
    get length() {
        return this.core.length;
    }

    /** Records waiting to be appended. */
    get pending() {
        return this.queue.records.length;
    }

    get tally(): PointsTally {
        return this.counter.tally;
    }

    /** Whether the log holds, or has queued, the piece of work `key` (`workKey` in ledger/record-check.ts). */
    hasWork(key: string) {
        return this.work.has(key);
    }

    get anchors(): readonly AnchorRecord[] {
        return this.anchorRecords;
    }

    /** The latest records, newest first. */
    recent(): readonly LedgerRecord[] {
        return this.recentRecords;
    }

    /**
     * Queues a record for the next batch; the promise resolves once the batch is on disk (a process killed after that
     * keeps the record). A record that does not verify, or repeats work already recorded, is refused at once: the
     * promise rejects with LedgerError INVALID_RECORD, and `rejected` says why. A write that fails is retried, with
     * backoff, and the promise waits; it rejects with STORAGE only if the log closes before the record is written.
     * Callers that do not wait are told by `rejected` and `writeFailed`: the promise never rejects unhandled.
     */
    append(record: LedgerRecord): Promise<void> {
        if (this.closing)
            return refused(LedgerError.storage('the contribution log is closed'));
        try {
            // Only the header is ever at index 0, and it is written when the log is created: any later record is past it.
            const checked = checkRecord(record, {owner: this.owner, coreKey: this.key, index: Math.max(1, this.length + this.queue.records.length), domain: this.domain});
            const key = workKey(checked);
            if (key !== undefined) {
                if (this.work.has(key))
                    throw LedgerError.invalidRecord(`${key} is in the log already`);
                this.work.add(key);
            }
            this.queue.records.push(checked);
        } catch (error) {
            this.emit('rejected', (error as Error).message);
            return refused(error instanceof LedgerError ? error : LedgerError.invalidRecord((error as Error).message));
        }
        const {written} = this.queue;
        if (this.queue.records.length >= this.options.maxBatch)
            this.flush().catch(() => undefined); // reported with `writeFailed`; the records are written again
        else
            this.flushTimer ??= setTimeout(() => this.flush().catch(() => undefined), this.options.flushIntervalMs);
        return written;
    }

    /**
     * Appends what waits, in one batch; resolves once it is on disk. A write that fails keeps its records queued,
     * first in line, schedules another try (backoff from `flushIntervalMs` to `maxRetryMs`) and rejects this call only.
     */
    flush(): Promise<void> {
        clearTimeout(this.flushTimer);
        this.flushTimer = undefined;
        const run = this.flushing.then(async () => {
            const batch = this.queue;
            if (batch.records.length === 0)
                return;
            this.queue = new PendingBatch();
            try {
                await this.core.append(batch.records);
            } catch (error) {
                // The failed batch waits again, before what was queued since; those appends resolve with it.
                const later = this.queue;
                batch.records.push(...later.records);
                batch.written.then(later.resolve, later.reject);
                this.queue = batch;
                this.emit('writeFailed', (error as Error).message);
                if (!this.closing)
                    this.flushTimer ??= setTimeout(() => this.flush().catch(() => undefined), this.retries.failed());
                throw LedgerError.storage(`cannot write to the contribution log: ${(error as Error).message}`);
            }
            this.retries.succeeded();
            for (const record of batch.records)
                this.count(record);
            batch.resolve();
            this.emit('appended', batch.records);
        });
        this.flushing = run.catch(() => undefined);
        return run;
    }

    /** The log's Merkle tree hash at `length` records (hex): what an anchor commits to. */
    async treeHash(length = this.length) {
        return (await this.core.treeHash(length)).toString('hex');
    }

    /**
     * The owner's permission (hex signature) for the wallet `sender` to anchor this log on a contract of the log's
     * chain until `validUntil` (unix seconds).
     */
    authorizeAnchoring(sender: string, contract: string, validUntil: number) {
        return signAnchorAuthorization(this.anchorAuthorization(sender, contract, validUntil), this.secretKey);
    }

    /** The owner's revocation (hex signature) of that permission. */
    revokeAnchoring(sender: string, contract: string, validUntil: number) {
        return signAnchorRevocation(this.anchorAuthorization(sender, contract, validUntil), this.secretKey);
    }

    private anchorAuthorization(sender: string, contract: string, validUntil: number): AnchorAuthorization {
        return {...this.domain, contract, core: this.key, sender, validUntil};
    }

    /** Lets a peer replicate this log, and only it (read-only for the peer), over its connection's protomux or a stream. */
    replicate(stream: unknown) {
        return this.core.replicate(stream);
    }

    /** The corestore, for reading other nodes' replicated logs beside this one. */
    get corestore() {
        return this.store;
    }

    /** The log's Hypercore, for verification. */
    get hypercore() {
        return this.core;
    }

    /** Writes what waits and closes; records that cannot be written by then reject their appends with STORAGE. */
    async close() {
        this.closing = true;
        try {
            await this.flush();
        } catch (error) {
            clearTimeout(this.flushTimer);
            this.queue.reject(error as Error);
            throw error;
        } finally {
            await this.store.close();
        }
    }

    /**
     * Counts what is on disk. Records were checked when they were appended, so only their shape is checked here (a
     * million signature checks would delay every start by minutes); `ledger verify` checks everything.
     */
    private async replay() {
        let index = 0;
        for await (const block of this.core.createReadStream()) {
            const parsed = ledgerRecordSchema.safeParse(block);
            if (!parsed.success)
                throw LedgerError.storage(`record ${index} of the contribution log is damaged; run \`strongdoge ledger verify\``);
            const record = parsed.data;
            if (index === 0) {
                if (record.type !== 'header' || record.owner !== this.owner)
                    throw LedgerError.storage('the contribution log in this data dir belongs to another node');
                this.domain = {network: record.network, chainId: record.chainId};
            }
            const key = workKey(record);
            if (key !== undefined)
                this.work.add(key);
            this.count(record);
            index++;
        }
    }

    private count(record: LedgerRecord) {
        this.counter.add(record);
        if (record.type === 'anchor')
            this.anchorRecords.push(record);
        this.recentRecords.unshift(record);
        this.recentRecords.length = Math.min(this.recentRecords.length, RECENT_RECORDS);
    }
}

/**
 * Moves the corestore in `directory` aside when its log's header is of an older record version; returns where, or
 * null when there is nothing to move (no log yet, or one of this version).
 */
async function moveAsideOlderLog(directory: string): Promise<{version: number, movedTo: string} | null> {
    if (await access(directory).then(() => false, () => true))
        return null;
    const store = new Corestore(directory);
    let version: unknown;
    try {
        const core = store.get({name: CORE_NAME, valueEncoding: 'json'});
        await core.ready();
        version = core.length === 0 ? undefined : (await core.get(0) as {version?: unknown} | null)?.version;
    } catch (error) {
        throw LedgerError.storage(`cannot open the contribution log in ${directory}: ${(error as Error).message}`);
    } finally {
        await store.close().catch(() => undefined);
    }
    if (typeof version !== 'number' || version >= LEDGER_RECORD_VERSION)
        return null;
    const base = `${directory}-v${version}-${new Date().toISOString().slice(0, 10)}`;
    let movedTo = base;
    for (let attempt = 2; await access(movedTo).then(() => true, () => false); attempt++)
        movedTo = `${base}-${attempt}`;
    await rename(directory, movedTo);
    return {version, movedTo};
}

/** A refused append's promise: rejected, and handled already so that a caller that does not wait is not crashed. */
function refused(error: LedgerError) {
    const promise = Promise.reject(error);
    promise.catch(() => undefined);
    return promise;
}
