import {setTimeout as sleep} from 'node:timers/promises';
import type Hypercore from 'hypercore';
import type Protomux from 'protomux';
import type {ContributionLog} from '../ledger/contribution-log.js';
import {LedgerError} from '../ledger/ledger-error.js';
import {MessageRateLimiter} from '../swarm/channel/message-rate-limiter.js';

/**
 * What a node replicates for peers, and how much (docs/peer-protocol.md, "Ledger replication"): its own log, and a
 * peer's log only while it verifies it; that one no longer or larger than the limits, downloaded at a bounded rate;
 * the logs it keeps of peers within a total. Hypercore has no per-peer throttle (holepunchto/hypercore#555), so
 * uploads beyond the rate end that log's replication with that peer, and this node paces its own downloads.
 */

export interface ReplicationLimits {
    /** The most records of a peer's log this node downloads. */
    maxRecords: number,
    /** The most bytes of one peer's log. */
    maxBytes: number,
    /** The most bytes of peers' logs kept here in all; copies of other peers' logs are removed to make room. */
    maxTotalBytes: number,
    /** Replication bytes per second with one peer, each way (bursts of 4 s worth). */
    bytesPerSecond: number
}

/** The connection a log replicates over: a `PeerConnection`. */
export interface ReplicationPeer {
    readonly peerId: string,
    readonly mux: Protomux,
    once(event: 'closed', listener: () => void): unknown
}

export interface LedgerReplicationOptions {
    log: ContributionLog,
    limits: ReplicationLimits,
    /** How long to wait for a peer's log to update, or for a part of it to arrive; defaults to 30 s. */
    timeoutMs?: number,
    /** Told each time a replication is ended, and why. */
    onNotice: (level: 'info' | 'warn', message: string, fields?: object) => void
}

/** Blocks downloaded per request to Hypercore while fetching a peer's log: the pace is kept between them. */
const DOWNLOAD_WINDOW = 1_024;
const BURST_SECONDS = 4;

/** Hypercore's peer, as its `upload` events name it (hypercore/lib/replicator.js). */
interface HypercorePeer {
    remotePublicKey: Buffer,
    protomux: Protomux,
    channel: {close(): void}
}

export class LedgerReplication {
    private readonly peers = new Set<ReplicationPeer>();
    /** Peers' logs being fetched now: attached to every connection, this node's own log besides. */
    private readonly fetching = new Set<Hypercore<unknown>>();
    /** Per connection: what this node's logs upload on it, all logs together. */
    private readonly limiters = new WeakMap<Protomux, MessageRateLimiter>();
    private readonly timeoutMs: number;

    constructor(private readonly options: LedgerReplicationOptions) {
        this.timeoutMs = options.timeoutMs ?? 30_000;
        this.meter(options.log.hypercore);
    }

    /** Replicates this node's log, and the logs it is fetching, with a peer, for as long as the connection lasts. */
    attach(peer: ReplicationPeer) {
        this.peers.add(peer);
        peer.once('closed', () => this.peers.delete(peer));
        this.options.log.hypercore.replicate(peer.mux);
        for (const core of this.fetching)
            core.replicate(peer.mux);
    }

    /**
     * Opens the peer log `key` read-only and, `online`, brings it up to date from connected peers within the limits
     * (refused with NOT_CONFIGURED naming the setting when it is beyond one). The caller closes the session.
     */
    async open(key: string, {online}: {online: boolean}): Promise<Hypercore<unknown>> {
        const remote = this.options.log.corestore.get({key: Buffer.from(key, 'hex'), valueEncoding: 'json'});
        try {
            await remote.ready();
            if (online)
                await this.fetch(key, remote);
            return remote;
        } catch (error) {
            await remote.close();
            throw error;
        }
    }

    /** Asks the peers once more for the rest of an open log (an anchor says it is longer than what arrived), within the same limits. */
    refresh(key: string, remote: Hypercore<unknown>) {
        return this.fetch(key, remote);
    }

    private async fetch(key: string, remote: Hypercore<unknown>) {
        this.fetching.add(remote);
        this.meter(remote);
        try {
            for (const peer of this.peers)
                remote.replicate(peer.mux);
            await within(remote.update({wait: true}).catch(() => false), this.timeoutMs);
            const {maxRecords, maxBytes, bytesPerSecond} = this.options.limits;
            if (remote.length > maxRecords)
                throw LedgerError.notConfigured(`the log ${key} has ${remote.length} records, more than --peer-log-max-records (${maxRecords}): not downloaded`);
            if (remote.byteLength > maxBytes)
                throw LedgerError.notConfigured(`the log ${key} takes ${remote.byteLength} bytes, more than --peer-log-max-bytes (${maxBytes}): not downloaded`);
            await this.makeRoom(remote);
            // Paced: a window at a time, each waiting until the bytes so far fit the rate.
            const started = performance.now();
            let bytes = 0;
            remote.on('download', (_index: number, byteLength: number) => {
                bytes += byteLength;
            });
            for (let start = remote.contiguousLength; start < remote.length; start = Math.max(start + DOWNLOAD_WINDOW, remote.contiguousLength)) {
                const range = remote.download({start, end: Math.min(remote.length, start + DOWNLOAD_WINDOW)});
                const arrived = await within(range.done().then(() => true, () => false), this.timeoutMs);
                range.destroy();
                if (!arrived)
                    break;
                const ahead = bytes / bytesPerSecond - (performance.now() - started) / 1000;
                if (ahead > 0)
                    await sleep(ahead * 1000);
            }
        } finally {
            this.fetching.delete(remote);
        }
    }

    /** Removes other peers' logs kept here, until `remote` fits in the total. */
    private async makeRoom(remote: Hypercore<unknown>) {
        const {maxTotalBytes} = this.options.limits;
        if (remote.byteLength > maxTotalBytes)
            throw LedgerError.notConfigured(`the log takes ${remote.byteLength} bytes, more than --peer-logs-max-bytes (${maxTotalBytes})`);
        const store = this.options.log.corestore;
        const kept: Hypercore<unknown>[] = [];
        try {
            for await (const discoveryKey of store.list()) {
                if (discoveryKey.equals(remote.discoveryKey!) || discoveryKey.equals(this.options.log.hypercore.discoveryKey!))
                    continue;
                const core = store.get({discoveryKey});
                await core.ready();
                // A log this node can write is its own, never a copy to remove.
                if (core.writable)
                    await core.close();
                else
                    kept.push(core);
            }
            let total = remote.byteLength + kept.reduce((sum, core) => sum + core.byteLength, 0);
            for (const core of kept) {
                if (total <= maxTotalBytes)
                    break;
                if ([...this.fetching].some((fetching) => fetching.discoveryKey!.equals(core.discoveryKey!)))
                    continue;
                total -= core.byteLength;
                this.options.onNotice('info', 'removed a peer\'s log kept here to make room (--peer-logs-max-bytes)', {core: core.key!.toString('hex')});
                await core.purge();
            }
            if (total > maxTotalBytes)
                throw LedgerError.notConfigured(`peers' logs in use here and this one would take ${total} bytes, more than --peer-logs-max-bytes (${maxTotalBytes})`);
        } finally {
            await Promise.all(kept.map((core) => core.close().catch(() => undefined)));
        }
    }

    /** Counts what `core` uploads to each peer; a peer past the rate gets no more of it on this connection. */
    private meter(core: Hypercore<unknown>) {
        const {bytesPerSecond} = this.options.limits;
        core.on('upload', (_index: number, byteLength: number, from: HypercorePeer) => {
            let limiter = this.limiters.get(from.protomux);
            if (limiter === undefined) {
                limiter = new MessageRateLimiter(bytesPerSecond, bytesPerSecond * BURST_SECONDS);
                this.limiters.set(from.protomux, limiter);
            }
            if (limiter.take(byteLength))
                return;
            // Unpaired first, so that the peer cannot open the channel again; the connection and its other channels stay.
            (core as unknown as {core: {replicator: {detachFrom(mux: Protomux): void}}}).core.replicator.detachFrom(from.protomux);
            from.channel.close();
            this.options.onNotice('warn', 'ended the replication of a log with a peer: it asked for more than --peer-log-rate',
                {peer: from.remotePublicKey.toString('hex'), core: core.key!.toString('hex'), bytesPerSecond});
        });
    }
}

/** What `promise` gives within `ms`, or undefined; the timer is cleared either way. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
    let timer: NodeJS.Timeout | undefined;
    try {
        return await Promise.race([promise, new Promise<undefined>((resolve) => {
            timer = setTimeout(() => resolve(undefined), ms);
        })]);
    } finally {
        clearTimeout(timer);
    }
}
