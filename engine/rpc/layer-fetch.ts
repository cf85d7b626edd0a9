/**
 * Downloads the big tensors of a host's layers straight from the model's public source, so that neither the
 * coordinator's uplink nor a whole model file is needed (docs/architecture.md, "Sharding", "Hosts that hold the
 * model"): one HTTP range request per tensor, several at once, each checked against the SHA-256 the coordinator
 * sent and kept as `<storeDir>/<sha256>.<fnv>`, the FNV-1a 64 being the name ggml-rpc's server looks a tensor up by.
 */
import {createHash, type Hash, randomBytes} from 'node:crypto';
import {lookup as dnsLookup} from 'node:dns';
import {type FileHandle, mkdir, open, readdir, readFile, rename, stat, unlink, utimes, writeFile} from 'node:fs/promises';
import {BlockList, isIP, type LookupFunction} from 'node:net';
import {join, resolve} from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import {Agent, buildConnector, type Dispatcher, EnvHttpProxyAgent, request} from 'undici';
import {Backoff} from '../../core/backoff.js';
import type {ModelSourceRef, TensorDigest} from '../../core/tensor-digest.js';
import {downloadUrlOf} from '../model-download.js';
import {processAlive} from './process-alive.js';
import {Fnv1a64} from './tensor-cache-seed.js';

export interface LayerFetchOptions {
    /**
     * Where the model file is: an `hf:user/repo/path.gguf[#branch]` reference (resolved against this node's
     * `HF_ENDPOINT` or `MODEL_ENDPOINT`, as `models pull` does) or an http(s) URL.
     */
    source: ModelSourceRef,
    /** The tensors to fetch, as the coordinator sent them; one listed twice (same SHA-256) is fetched once. */
    tensors: readonly TensorDigest[],
    /**
     * Where verified tensors are kept, as `<storeDir>/<sha256>.<fnv>`; a download in progress is
     * `<storeDir>/.part-<sha256>` (with `.part-<sha256>.owner`, its process's id and a random nonce of that
     * process), resumed by the next call.
     */
    storeDir: string,
    /** Range requests at once; defaults to 4. */
    concurrency?: number,
    /**
     * Defaults to false: a URL whose host is or resolves to a loopback, private, link-local, CGNAT, multicast,
     * reserved or unspecified address (IPv4 or IPv6, IPv4-mapped included) is refused when connecting, so a peer
     * cannot point this node at its own network; checked in the connection's DNS lookup, which redirects and DNS
     * rebinding pass through too. An `hf:` reference resolves against the endpoint this node's user chose and is
     * exempt. Through a proxy (`HTTPS_PROXY`/`HTTP_PROXY`, lower case too) the proxy resolves the names, so only a
     * literal private address in the URL or a redirect is refused there; the proxy's own address is not checked,
     * the user chose it (one on loopback is common).
     */
    allowPrivateAddresses?: boolean,
    /**
     * Tries per tensor when the failure may pass (connection refused or reset, a 5xx, 408 or 429, a stall), each
     * resuming from the bytes kept; defaults to 3. A SHA-256 mismatch is not retried, but once from zero when the
     * download resumed a partial file an earlier call left (its bytes may be another source's).
     */
    attempts?: number,
    /** How long the source may send nothing (no headers, no body bytes) before a try fails; defaults to 30 s. */
    stallTimeoutMs?: number,
    /**
     * The slowest average rate a tensor may arrive at: all its tries together must end within `stallTimeoutMs` plus
     * its bytes at this rate, else it fails as a stall (a source sending a byte now and then would hold the tensor,
     * and every call waiting for it, forever); defaults to 64 KiB/s.
     */
    minBytesPerSecond?: number,
    /** Ends every request; partial files are kept for the next call to resume, and the call rejects with the reason. */
    signal?: AbortSignal,
    /** Called as bytes arrive (at most every 100 ms) and as each tensor ends. */
    onProgress?: (progress: LayerFetchProgress) => void
}

export interface LayerFetchProgress {
    /** Bytes of the requested tensors held: in the store, or in partial files of tensors still going. */
    doneBytes: number,
    /** Bytes of all requested tensors (each SHA-256 once). */
    totalBytes: number,
    tensorsDone: number,
    tensorsFailed: number
}

export interface StoredTensor {
    sha256: string,
    /** FNV-1a 64 of the bytes, 16 lowercase hex digits: the name ggml-rpc's tensor cache gives the file. */
    fnv: string,
    path: string,
    bytes: number
}

export type LayerFetchErrorCode =
    /**
     * The options or a tensor digest are malformed: nothing was fetched. As a tensor's failure: its size is not the
     * one of the verified tensor of that SHA-256 in the store.
     */
    | 'invalid-input'
    /** The bytes arrived but their SHA-256 is not the one given: discarded. */
    | 'sha-mismatch'
    /** The source has no such file (404, 410). */
    | 'not-found'
    /** The source answers 200 with the whole file to a range request. */
    | 'ranges-ignored'
    /** The source's address is a private one and `allowPrivateAddresses` is off. */
    | 'private-address'
    /** The source cannot be connected to (refused, no such host, unreachable). */
    | 'unreachable'
    /** Another status: 401 or 403 (gated), 416 (the file is shorter than the range), 5xx after the tries, … */
    | 'http-status'
    /**
     * The transfer broke off or the source sent something else than the range asked, after the tries; or the tensor
     * did not arrive by its deadline (`minBytesPerSecond`).
     */
    | 'transfer-failed'
    /** Another live process is downloading this tensor into the same store. */
    | 'busy'
    /** The store cannot be written (disk full, permissions). */
    | 'store-failed';

export class LayerFetchError extends Error {
    /** Whether another try may succeed (the transfer broke off, the server was busy). */
    readonly retryable: boolean;

    constructor(readonly code: LayerFetchErrorCode, message: string, options: {retryable?: boolean} = {}) {
        super(message);
        this.name = 'LayerFetchError';
        this.retryable = options.retryable ?? false;
    }
}

export interface LayerFetchFailure {
    digest: TensorDigest,
    code: LayerFetchErrorCode,
    reason: string
}

export interface LayerFetchOutcome {
    /** Every requested tensor now in the store: downloaded by this call or there before. */
    stored: StoredTensor[],
    /** The tensors not in the store, each with why; the caller has them sent through the coordinator instead. */
    failed: LayerFetchFailure[],
    /** How many were in the store before. */
    present: number,
    /** Bytes of all requested tensors (each SHA-256 once). */
    totalBytes: number,
    /** Bytes received from the source by this call (resumed bytes already on disk not counted). */
    downloadedBytes: number,
    elapsedMs: number,
    /** `downloadedBytes` over the time at least one request was open; null when nothing was downloaded. */
    bytesPerSecond: number | null
}

export interface PruneOutcome {
    removedFiles: number,
    removedBytes: number,
    keptBytes: number
}

const DEFAULT_CONCURRENCY = 4;
const DEFAULT_ATTEMPTS = 3;
const DEFAULT_STALL_TIMEOUT_MS = 30_000;
const DEFAULT_MIN_BYTES_PER_SECOND = 64 * 1024;
const CONNECT_TIMEOUT_MS = 10_000;
const RETRY_INITIAL_MS = 250;
const RETRY_MAX_MS = 5_000;
const MAX_REDIRECTS = 5;
const MAX_CONCURRENCY = 64;
const MAX_ATTEMPTS = 20;
const MAX_NAME_LENGTH = 1_024;
const PROGRESS_INTERVAL_MS = 100;
const READ_CHUNK_BYTES = 1024 * 1024;
const FILE_MODE = 0o644;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const STORED_FILE = /^([0-9a-f]{64})\.([0-9a-f]{16})$/;
const PART_FILE = /^\.part-([0-9a-f]{64})$/;
const OWNER_FILE = /^\.part-([0-9a-f]{64})\.owner$/;
/**
 * What this process writes into the owner files of its partial files: its pid alone would not do, as pids repeat
 * (a container's process restarted gets the pid its earlier incarnation had, whose partials would look alive).
 */
const OWNER_RECORD = `${process.pid} ${randomBytes(8).toString('hex')}`;
/** Set on the error a connection refused for its address fails with. */
const PRIVATE_ADDRESS_CODE = 'ERR_STRONGDOGE_PRIVATE_ADDRESS';
const UNREACHABLE_CODES = new Set([
    'ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN',
    'UND_ERR_CONNECT_TIMEOUT'
]);
const STORE_ERROR_CODES = new Set(['ENOSPC', 'EDQUOT', 'EACCES', 'EPERM', 'EROFS', 'EISDIR', 'ENOTDIR', 'EMFILE']);
/** Failures that stand for every tensor of the source: once one tensor ends with one, the others are not tried. */
const SOURCE_WIDE_CODES = new Set<LayerFetchErrorCode>(['unreachable', 'private-address', 'ranges-ignored', 'not-found']);
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/**
 * Addresses a peer must not make this node connect to: its own machine and networks (RFC 1918, 6598 CGNAT, 3927
 * link-local, 4193 unique local, 6890 IETF protocol assignments, 2544 benchmarking), multicast, documentation
 * (TEST-NETs, 2001:db8::/32), reserved and unspecified; and tunnels whose far end cannot be checked: Teredo
 * (2001::/32) and local-use NAT64 (64:ff9b:1::/48, where the IPv4 address sits as its operator chose). The
 * well-known NAT64 prefix and 6to4 embed an IPv4 address, checked as such (`isPrivateAddress`).
 */
const PRIVATE_ADDRESSES = new BlockList();
for (const [network, prefix] of [
    ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
    ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24],
    ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4]
] as const)
    PRIVATE_ADDRESSES.addSubnet(network, prefix, 'ipv4');
for (const [network, prefix] of [
    ['::', 128], ['::1', 128], ['64:ff9b:1::', 48], ['2001::', 32], ['2001:db8::', 32], ['fc00::', 7], ['fe80::', 10],
    ['fec0::', 10], ['ff00::', 8]
] as const)
    PRIVATE_ADDRESSES.addSubnet(network, prefix, 'ipv6');

/** Whether an IP address (v4 or v6, with or without brackets or a zone) is one `PRIVATE_ADDRESSES` holds. */
export function isPrivateAddress(address: string) {
    const bare = address.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
    const family = isIP(bare);
    if (family === 4)
        return PRIVATE_ADDRESSES.check(bare, 'ipv4');
    if (family !== 6)
        return false;
    const embedded = embeddedIpv4(ipv6Groups(new URL(`http://[${bare}]/`).hostname));
    return embedded === undefined ? PRIVATE_ADDRESSES.check(bare, 'ipv6') : PRIVATE_ADDRESSES.check(embedded, 'ipv4');
}

/** The eight 16-bit groups of an IPv6 address as the URL parser writes it (bracketed, hex, `::` compressed). */
function ipv6Groups(canonical: string) {
    const [head = '', tail] = canonical.replace(/^\[|\]$/g, '').split('::');
    const groupsOf = (part: string | undefined) => part === undefined || part === '' ? [] : part.split(':').map((group) => Number.parseInt(group, 16));
    const high = groupsOf(head);
    const low = groupsOf(tail);
    return [...high, ...Array<number>(8 - high.length - low.length).fill(0), ...low];
}

/**
 * The IPv4 address an IPv6 address reaches: IPv4-mapped (::ffff:a.b.c.d) and -compatible (::a.b.c.d), the
 * well-known NAT64 prefix (64:ff9b::a.b.c.d, RFC 6052) and 6to4 (2002:aabb:ccdd::/48, RFC 3056).
 */
function embeddedIpv4(groups: readonly number[]) {
    const zero = (from: number, to: number) => groups.slice(from, to).every((group) => group === 0);
    const ipv4 = (high: number, low: number) => `${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`;
    if (zero(0, 5) && (groups[5] === 0 || groups[5] === 0xffff))
        return ipv4(groups[6]!, groups[7]!);
    if (groups[0] === 0x64 && groups[1] === 0xff9b && zero(2, 6))
        return ipv4(groups[6]!, groups[7]!);
    if (groups[0] === 0x2002)
        return ipv4(groups[1]!, groups[2]!);
    return undefined;
}

function privateAddressError(host: string, address: string) {
    const error = new Error(`${host} is ${address === host ? 'a private address' : `at ${address}, a private address`}: refused (allowPrivateAddresses is off)`);
    return Object.assign(error, {code: PRIVATE_ADDRESS_CODE});
}

/** dns.lookup that fails when any address of the name is private: the check happens where the socket connects. */
const publicOnlyLookup: LookupFunction = (hostname, options, callback) => {
    dnsLookup(hostname, {...options, all: true}, (error, addresses) => {
        if (error !== null)
            return callback(error, '', 0);
        const refused = addresses.find((address) => isPrivateAddress(address.address));
        if (refused !== undefined)
            return callback(privateAddressError(hostname, refused.address), '', 0);
        if (options.all)
            return callback(null, addresses);
        if (addresses.length === 0)
            return callback(Object.assign(new Error(`${hostname}: no address`), {code: 'ENOTFOUND'}), '', 0);
        callback(null, addresses[0]!.address, addresses[0]!.family);
    });
};

/** undici's connector with the address check; a literal IP never reaches the lookup, so it is checked first. */
function publicOnlyConnector(): buildConnector.connector {
    const connector = buildConnector({lookup: publicOnlyLookup, timeout: CONNECT_TIMEOUT_MS});
    return (options, callback) => {
        if (isPrivateAddress(options.hostname)) {
            callback(privateAddressError(options.hostname, options.hostname), null);
            return;
        }
        connector(options, callback);
    };
}

function proxyConfigured() {
    return ['https_proxy', 'HTTPS_PROXY', 'http_proxy', 'HTTP_PROXY'].some((name) => Boolean(process.env[name]));
}

/**
 * The dispatcher of one call: with a proxy configured, undici's EnvHttpProxyAgent (HTTPS_PROXY, HTTP_PROXY and
 * NO_PROXY, lower case too; hosts NO_PROXY exempts connect directly, with the check); else a plain Agent.
 */
function dispatcherFor(checkAddresses: boolean, stallTimeoutMs: number): Dispatcher {
    const options = {
        headersTimeout: stallTimeoutMs,
        bodyTimeout: stallTimeoutMs,
        connect: checkAddresses ? publicOnlyConnector() : {timeout: CONNECT_TIMEOUT_MS}
    };
    return proxyConfigured() ? new EnvHttpProxyAgent(options) : new Agent(options);
}

/** The tensors, checked as input from a peer and each SHA-256 once; throws `invalid-input`. */
function validTensors(tensors: readonly TensorDigest[]) {
    if (!Array.isArray(tensors))
        throw new LayerFetchError('invalid-input', 'tensors must be an array');
    const bySha = new Map<string, TensorDigest>();
    for (const [index, tensor] of tensors.entries()) {
        const at = `tensor ${index}`;
        if (typeof tensor !== 'object' || tensor === null)
            throw new LayerFetchError('invalid-input', `${at}: not an object`);
        const {name, offset, bytes, sha256} = tensor;
        if (typeof name !== 'string' || name.length > MAX_NAME_LENGTH)
            throw new LayerFetchError('invalid-input', `${at}: the name must be a string of at most ${MAX_NAME_LENGTH} characters`);
        if (typeof sha256 !== 'string' || !SHA256_HEX.test(sha256))
            throw new LayerFetchError('invalid-input', `${at} (${name}): sha256 must be 64 lowercase hex digits`);
        if (!Number.isSafeInteger(offset) || offset < 0)
            throw new LayerFetchError('invalid-input', `${at} (${name}): offset must be a non-negative integer`);
        if (!Number.isSafeInteger(bytes) || bytes <= 0 || !Number.isSafeInteger(offset + bytes))
            throw new LayerFetchError('invalid-input', `${at} (${name}): bytes must be a positive integer`);
        const same = bySha.get(sha256);
        if (same !== undefined && same.bytes !== bytes)
            throw new LayerFetchError('invalid-input', `${at} (${name}): sha256 ${sha256} is given with ${same.bytes} and ${bytes} bytes`);
        if (same === undefined)
            bySha.set(sha256, {name, offset, bytes, sha256});
    }
    return [...bySha.values()];
}

function positiveInteger(value: number | undefined, fallback: number, max: number, name: string) {
    if (value === undefined)
        return fallback;
    if (!Number.isInteger(value) || value < 1 || value > max)
        throw new LayerFetchError('invalid-input', `${name} must be an integer from 1 to ${max}`);
    return value;
}

/** The URL to fetch, and whether its addresses are checked (not for `hf:`, which this node's endpoint resolves). */
function sourceUrl(source: ModelSourceRef, allowPrivateAddresses: boolean) {
    if (typeof source !== 'string')
        throw new LayerFetchError('invalid-input', 'source must be a string');
    const resolved = downloadUrlOf(source);
    let url: URL | undefined;
    try {
        url = resolved === undefined ? undefined : new URL(resolved);
    } catch {
        // not a URL: refused below
    }
    if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:'))
        throw new LayerFetchError('invalid-input', `${source}: neither an http(s) URL nor an hf:user/repo/path.gguf reference`);
    return {url, checkAddresses: !allowPrivateAddresses && !/^hf:/i.test(source)};
}

/** Tensors in use by a call of this process, by store and SHA-256: pruning leaves them. */
const pinned = new Map<string, number>();
/** The download of each partial file of this process, by its path: one at a time, later calls wait for it. */
const writing = new Map<string, Promise<unknown>>();

function pinKey(storeDir: string, sha256: string) {
    return `${resolve(storeDir)}/${sha256}`;
}

/**
 * Fetches each tensor not yet in `storeDir` from the source and keeps the ones whose SHA-256 matches. A tensor that
 * cannot be had is listed in `failed`, never thrown: the call rejects only for invalid input (`LayerFetchError`
 * 'invalid-input', before any request), a store directory that cannot be created, and cancellation (with the
 * signal's reason, once every request has ended and the partial files are complete up to their last byte).
 */
export async function fetchLayers(options: LayerFetchOptions): Promise<LayerFetchOutcome> {
    const startedAt = performance.now();
    if (typeof options.storeDir !== 'string' || options.storeDir === '')
        throw new LayerFetchError('invalid-input', 'storeDir must be a directory path');
    const tensors = validTensors(options.tensors);
    const {url, checkAddresses} = sourceUrl(options.source, options.allowPrivateAddresses ?? false);
    const concurrency = positiveInteger(options.concurrency, DEFAULT_CONCURRENCY, MAX_CONCURRENCY, 'concurrency');
    const attempts = positiveInteger(options.attempts, DEFAULT_ATTEMPTS, MAX_ATTEMPTS, 'attempts');
    const stallTimeoutMs = positiveInteger(options.stallTimeoutMs, DEFAULT_STALL_TIMEOUT_MS, 3_600_000, 'stallTimeoutMs');
    const minBytesPerSecond = positiveInteger(options.minBytesPerSecond, DEFAULT_MIN_BYTES_PER_SECOND, 2 ** 40, 'minBytesPerSecond');
    const {storeDir, signal} = options;
    signal?.throwIfAborted();
    await mkdir(storeDir, {recursive: true});

    const keys = tensors.map((tensor) => pinKey(storeDir, tensor.sha256));
    for (const key of keys)
        pinned.set(key, (pinned.get(key) ?? 0) + 1);
    const progress = new Progress(tensors.reduce((sum, tensor) => sum + tensor.bytes, 0), options.onProgress);
    const meter = new RateMeter();
    const dispatcher = dispatcherFor(checkAddresses, stallTimeoutMs);
    const outcome: LayerFetchOutcome = {
        stored: [], failed: [], present: 0, totalBytes: progress.totalBytes, downloadedBytes: 0, elapsedMs: 0, bytesPerSecond: null
    };
    const context: FetchContext = {url, checkAddresses, dispatcher, storeDir, attempts, stallTimeoutMs, minBytesPerSecond, signal, progress, meter};
    const fail = (tensor: TensorDigest, error: unknown) => {
        const failure = failureOf(error);
        if (SOURCE_WIDE_CODES.has(failure.code))
            context.sourceFailure ??= failure;
        outcome.failed.push({digest: tensor, code: failure.code, reason: failure.message});
        progress.held(tensor.sha256, 0);
        progress.tensorsFailed++;
    };
    try {
        const index = await storeIndex(storeDir);
        const queue: TensorDigest[] = [];
        for (const tensor of tensors) {
            let found: StoredTensor | undefined;
            try {
                found = await usableStored(storeDir, tensor, index.get(tensor.sha256));
            } catch (error) {
                fail(tensor, error);
                continue;
            }
            if (found === undefined)
                queue.push(tensor);
            else {
                outcome.stored.push(found);
                outcome.present++;
                progress.held(tensor.sha256, tensor.bytes);
                progress.tensorsDone++;
            }
        }
        progress.report(true);
        const worker = async () => {
            for (let tensor = queue.shift(); tensor !== undefined && !signal?.aborted; tensor = queue.shift()) {
                try {
                    const {stored, present} = await fetchOnce(context, tensor);
                    outcome.stored.push(stored);
                    if (present)
                        outcome.present++;
                    progress.held(tensor.sha256, tensor.bytes);
                    progress.tensorsDone++;
                } catch (error) {
                    if (signal?.aborted)
                        return;
                    fail(tensor, error);
                }
                progress.report(true);
            }
        };
        await Promise.all(Array.from({length: Math.min(concurrency, queue.length)}, worker));
        signal?.throwIfAborted();
    } finally {
        for (const key of keys) {
            const count = pinned.get(key)! - 1;
            if (count === 0)
                pinned.delete(key);
            else
                pinned.set(key, count);
        }
        await dispatcher.destroy().catch(() => undefined);
    }
    outcome.downloadedBytes = meter.bytes;
    outcome.bytesPerSecond = meter.bytesPerSecond();
    outcome.elapsedMs = Math.round(performance.now() - startedAt);
    return outcome;
}

interface FetchContext {
    url: URL,
    checkAddresses: boolean,
    dispatcher: Dispatcher,
    storeDir: string,
    attempts: number,
    stallTimeoutMs: number,
    minBytesPerSecond: number,
    signal: AbortSignal | undefined,
    progress: Progress,
    meter: RateMeter,
    /** The first failure that stands for the whole source: the tensors not yet tried fail with it at once. */
    sourceFailure?: LayerFetchError
}

/**
 * One tensor, after any download of the same partial file in this process (a concurrent call's): present if that
 * one stored it, else downloaded.
 */
function fetchOnce(context: FetchContext, tensor: TensorDigest): Promise<{stored: StoredTensor, present: boolean}> {
    const part = resolve(context.storeDir, `.part-${tensor.sha256}`);
    const previous = writing.get(part);
    const run = (previous ?? Promise.resolve()).catch(() => undefined).then(async () => {
        const found = previous === undefined ? undefined : await storedTensor(context.storeDir, tensor.sha256);
        if (found !== undefined && found.bytes !== tensor.bytes)
            throw sizeMismatch(tensor, found.bytes);
        if (found !== undefined)
            return {stored: found, present: true};
        if (context.sourceFailure !== undefined)
            throw context.sourceFailure;
        return {stored: await downloadTensor(context, tensor), present: false};
    });
    writing.set(part, run);
    void run.finally(() => {
        if (writing.get(part) === run)
            writing.delete(part);
    }).catch(() => undefined);
    return run;
}

/** Downloads one tensor into its partial file, retrying what may pass, and names it by its hashes once it verifies. */
async function downloadTensor(context: FetchContext, tensor: TensorDigest): Promise<StoredTensor> {
    const part = join(context.storeDir, `.part-${tensor.sha256}`);
    const owner = `${part}.owner`;
    const claimedBy = await claimPartial(owner);
    if (claimedBy !== undefined)
        throw new LayerFetchError('busy', `process ${claimedBy} is downloading this tensor into the same store`);
    try {
        // Bytes an earlier call left may be another source's (a hostile peer's could poison a popular tensor): a
        // mismatch after resuming them is tried once more, from zero.
        const held = await sizeOf(part);
        let fnv: string;
        try {
            fnv = await downloadVerified(context, tensor, part);
        } catch (error) {
            if (!(held > 0 && held <= tensor.bytes && error instanceof LayerFetchError && error.code === 'sha-mismatch'))
                throw error;
            fnv = await downloadVerified(context, tensor, part);
        }
        const path = join(context.storeDir, `${tensor.sha256}.${fnv}`);
        try {
            await rename(part, path);
        } catch (error) {
            throw failureOf(error);
        }
        await unlink(owner).catch(() => undefined);
        return {sha256: tensor.sha256, fnv, path, bytes: tensor.bytes};
    } catch (error) {
        // Nothing to resume: leave no trace. A partial file with bytes stays for the next call, prunable.
        if (await sizeOf(part) <= 0) {
            await unlink(part).catch(() => undefined);
            await unlink(owner).catch(() => undefined);
        }
        throw error;
    }
}

/**
 * Tries until the partial file holds the tensor's bytes, by the tensor's deadline (`minBytesPerSecond`: a source
 * sending a byte now and then would hold it, and every call waiting for it, forever); returns their FNV-1a 64. A
 * mismatch removes the partial file.
 */
async function downloadVerified(context: FetchContext, tensor: TensorDigest, part: string): Promise<string> {
    const limitMs = context.stallTimeoutMs + Math.ceil(tensor.bytes / context.minBytesPerSecond * 1000);
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), limitMs);
    const signal = context.signal === undefined ? deadline.signal : AbortSignal.any([context.signal, deadline.signal]);
    const late = () => new LayerFetchError('transfer-failed',
        `the tensor did not arrive within ${Math.round(limitMs / 1000)} s (${context.minBytesPerSecond} bytes per second after ${Math.round(context.stallTimeoutMs / 1000)} s): given up as a stall`);
    const backoff = new Backoff({initialMs: RETRY_INITIAL_MS, maxMs: RETRY_MAX_MS});
    try {
        for (let attempt = 1; ; attempt++) {
            let hashes: {sha256: string, fnv: string};
            try {
                hashes = await downloadPartial(context, tensor, part, signal);
            } catch (error) {
                if (deadline.signal.aborted && !context.signal?.aborted)
                    throw late();
                const failure = failureOf(error);
                if (context.signal?.aborted || !failure.retryable || attempt >= context.attempts)
                    throw failure.retryable && attempt > 1 ? new LayerFetchError(failure.code, `${failure.message} (${attempt} tries)`) : failure;
                await sleep(backoff.failed(), undefined, {signal}).catch((reason: unknown) => {
                    throw deadline.signal.aborted && !context.signal?.aborted ? late() : reason;
                });
                continue;
            }
            if (hashes.sha256 !== tensor.sha256) {
                await unlink(part).catch(() => undefined);
                throw new LayerFetchError('sha-mismatch',
                    `${tensor.name}: the source's bytes have SHA-256 ${hashes.sha256}, not ${tensor.sha256}: discarded`);
            }
            return hashes.fnv;
        }
    } finally {
        clearTimeout(timer);
    }
}

/**
 * One try: hashes the bytes the partial file holds, asks for the rest, appends it while hashing, and makes the file
 * durable and 0644 before it is renamed (a server must never read half of a tensor, even after a crash).
 */
async function downloadPartial(context: FetchContext, tensor: TensorDigest, part: string, signal: AbortSignal) {
    const handle = await open(part, 'a+', FILE_MODE);
    try {
        let held = (await handle.stat()).size;
        if (held > tensor.bytes) {
            // Longer than the tensor: not its bytes.
            await handle.truncate(0);
            held = 0;
        }
        const sha256 = createHash('sha256');
        const fnv = new Fnv1a64();
        await hashFile(handle, held, [sha256, fnv]);
        context.progress.held(tensor.sha256, held);
        if (held < tensor.bytes)
            held = await appendRange(context, tensor, handle, held, [sha256, fnv], signal);
        await handle.chmod(FILE_MODE);
        await handle.datasync();
        return {sha256: sha256.digest('hex'), fnv: fnv.hex()};
    } finally {
        await handle.close();
    }
}

async function hashFile(handle: FileHandle, bytes: number, hashes: readonly (Hash | Fnv1a64)[]) {
    const buffer = Buffer.allocUnsafe(Math.min(READ_CHUNK_BYTES, Math.max(bytes, 1)));
    for (let position = 0; position < bytes;) {
        const {bytesRead} = await handle.read(buffer, 0, Math.min(buffer.length, bytes - position), position);
        if (bytesRead === 0)
            throw new LayerFetchError('store-failed', 'the partial file shrank while it was read');
        for (const hash of hashes)
            hash.update(buffer.subarray(0, bytesRead));
        position += bytesRead;
    }
}

/** Requests the tensor's bytes from `held` on and appends them; returns how many the file holds then. */
async function appendRange(context: FetchContext, tensor: TensorDigest, handle: FileHandle, held: number, hashes: readonly (Hash | Fnv1a64)[],
    signal: AbortSignal) {
    const {meter, progress} = context;
    meter.begin();
    try {
        const body = await openRange(context, tensor.offset + held, tensor.offset + tensor.bytes - 1, signal);
        for await (const chunk of body as AsyncIterable<Buffer>) {
            if (held + chunk.length > tensor.bytes)
                throw new LayerFetchError('transfer-failed', 'the source sent more bytes than the range asked for');
            await handle.write(chunk);
            for (const hash of hashes)
                hash.update(chunk);
            held += chunk.length;
            meter.bytes += chunk.length;
            progress.held(tensor.sha256, held);
            progress.report(false);
        }
    } finally {
        meter.end();
    }
    if (held < tensor.bytes)
        throw new LayerFetchError('transfer-failed', `the source ended the range with ${tensor.bytes - held} bytes missing`, {retryable: true});
    return held;
}

/** A GET of bytes `start..end` (inclusive), redirects followed here so that each hop's URL is checked too. */
async function openRange(context: FetchContext, start: number, end: number, signal: AbortSignal) {
    let url = context.url;
    for (let hop = 0; ; hop++) {
        if (context.checkAddresses && isPrivateAddress(url.hostname))
            throw new LayerFetchError('private-address', privateAddressError(url.hostname, url.hostname).message);
        const {statusCode, headers, body} = await request(url, {
            method: 'GET',
            headers: {range: `bytes=${start}-${end}`, 'accept-encoding': 'identity'},
            dispatcher: context.dispatcher,
            signal
        });
        if (REDIRECT_STATUSES.has(statusCode)) {
            await body.dump().catch(() => undefined);
            const location = headerOf(headers.location);
            if (location === undefined || hop >= MAX_REDIRECTS)
                throw new LayerFetchError('http-status', location === undefined ? `the source answered ${statusCode} without a location` : 'too many redirects');
            url = new URL(location, url);
            if (url.protocol !== 'http:' && url.protocol !== 'https:')
                throw new LayerFetchError('http-status', `the source redirected to a ${url.protocol} URL`);
            continue;
        }
        if (statusCode === 206) {
            const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(headerOf(headers['content-range']) ?? '');
            if (range !== null && Number(range[1]) === start && Number(range[2]) === end)
                return body;
            discard(body);
            throw new LayerFetchError('transfer-failed',
                `the source answered ${headerOf(headers['content-range']) ?? 'no Content-Range'} to bytes=${start}-${end}`);
        }
        // Not read: a 200 would be the whole file.
        discard(body);
        throw statusFailure(statusCode);
    }
}

/** Closes a body unread (its connection with it): undici's stream then emits an AbortError nobody waits for. */
function discard(body: Dispatcher.ResponseData['body']) {
    body.on('error', () => undefined);
    body.destroy();
}

function statusFailure(status: number) {
    if (status === 200)
        return new LayerFetchError('ranges-ignored', 'the source ignores range requests (it answered 200 with the whole file)');
    if (status === 404 || status === 410)
        return new LayerFetchError('not-found', `the source has no such file (HTTP ${status})`);
    if (status === 416)
        return new LayerFetchError('http-status', 'the source\'s file is shorter than the tensor\'s range (HTTP 416)');
    if (status === 401 || status === 403)
        return new LayerFetchError('http-status', `the source refuses access (HTTP ${status})`);
    return new LayerFetchError('http-status', `the source answered HTTP ${status}`, {retryable: status === 408 || status === 429 || status >= 500});
}

function headerOf(value: string | string[] | undefined) {
    return Array.isArray(value) ? value[0] : value;
}

function errorCode(error: unknown): string | undefined {
    const found = error as {code?: unknown, cause?: {code?: unknown}, errors?: {code?: unknown}[]} | undefined;
    const code = found?.code ?? found?.cause?.code ?? found?.errors?.[0]?.code;
    return typeof code === 'string' ? code : undefined;
}

/** What a failed try means: a LayerFetchError as is, a network or file system error by its code. */
function failureOf(error: unknown): LayerFetchError {
    if (error instanceof LayerFetchError)
        return error;
    const code = errorCode(error);
    const message = (error as Error | undefined)?.message ?? String(error);
    if (code === PRIVATE_ADDRESS_CODE)
        return new LayerFetchError('private-address', message);
    if (code !== undefined && UNREACHABLE_CODES.has(code))
        return new LayerFetchError('unreachable', `cannot reach the source: ${code}`, {retryable: true});
    if (code !== undefined && STORE_ERROR_CODES.has(code))
        return new LayerFetchError('store-failed', `cannot write the store: ${message}`);
    return new LayerFetchError('transfer-failed', `the transfer failed: ${code ?? message}`, {retryable: true});
}

/**
 * Makes this process the partial file's owner (recorded in `.part-<sha256>.owner`) unless another live process is;
 * returns that process's id then. A dead owner's partial, or one of this process's earlier calls, is taken over
 * and resumed.
 */
async function claimPartial(owner: string): Promise<number | undefined> {
    try {
        await writeFile(owner, OWNER_RECORD, {flag: 'wx', mode: FILE_MODE});
        return undefined;
    } catch (error) {
        if (errorCode(error) !== 'EEXIST')
            throw error;
    }
    const holder = await partialOwner(owner);
    if (typeof holder === 'number')
        return holder;
    if (holder === undefined)
        await writeFile(owner, OWNER_RECORD, {mode: FILE_MODE});
    return undefined;
}

/**
 * Who holds a partial file, by its owner record: this process ('self'), another live process (its pid), or none
 * (undefined: its process died, or it was an earlier process that had this pid, with another nonce or none).
 */
async function partialOwner(owner: string): Promise<'self' | number | undefined> {
    const record = (await readFile(owner, 'utf8').catch(() => '')).trim();
    if (record === OWNER_RECORD)
        return 'self';
    const pid = Number(record.split(' ')[0]);
    return pid !== process.pid && Number.isSafeInteger(pid) && pid > 0 && processAlive(pid) ? pid : undefined;
}

const sizeOf = (path: string) => stat(path).then((found) => found.size, () => -1);

/** A tensor's size disagrees with the verified tensor of its SHA-256: the peer's claim is wrong, the file is kept. */
function sizeMismatch(tensor: TensorDigest, storedBytes: number) {
    return new LayerFetchError('invalid-input', `${tensor.name}: SHA-256 ${tensor.sha256} is a tensor of ${storedBytes} bytes, not ${tensor.bytes}`);
}

/** The complete tensor files of the store, by SHA-256. */
async function storeIndex(storeDir: string) {
    const index = new Map<string, string>();
    for (const name of await readdir(storeDir).catch(() => [] as string[])) {
        const stored = STORED_FILE.exec(name);
        if (stored !== null)
            index.set(stored[1]!, name);
    }
    return index;
}

/**
 * The stored file of a tensor (marked used, for pruning), undefined when there is none; throws `invalid-input` when
 * its size is not the one asked for: the file was verified, the size is a peer's claim, so it is never removed for it.
 */
async function usableStored(storeDir: string, tensor: TensorDigest, name: string | undefined): Promise<StoredTensor | undefined> {
    if (name === undefined)
        return undefined;
    const path = join(storeDir, name);
    const size = await sizeOf(path);
    if (size < 0)
        return undefined;
    if (size !== tensor.bytes)
        throw sizeMismatch(tensor, size);
    const now = new Date();
    await utimes(path, now, now).catch(() => undefined);
    return {sha256: tensor.sha256, fnv: STORED_FILE.exec(name)![2]!, path, bytes: size};
}

/** A verified tensor in the store, by its SHA-256; undefined when absent. */
export async function storedTensor(storeDir: string, sha256: string): Promise<StoredTensor | undefined> {
    if (typeof sha256 !== 'string' || !SHA256_HEX.test(sha256))
        throw new LayerFetchError('invalid-input', 'sha256 must be 64 lowercase hex digits');
    const name = (await storeIndex(storeDir)).get(sha256);
    if (name === undefined)
        return undefined;
    const path = join(storeDir, name);
    const info = await stat(path).catch(() => undefined);
    return info === undefined ? undefined : {sha256, fnv: STORED_FILE.exec(name)![2]!, path, bytes: info.size};
}

/**
 * Keeps the store within `maxBytes`: removes the partial files of processes that died (and their owner records, not
 * counted), then the least recently used tensors and partial files of this process's ended calls first (by access
 * or modification time, whichever is later), as `pruneTensorCache` does for the server's cache. Tensors a call of
 * this process is using, partial files being written now and those of other live processes are kept (and counted).
 */
export async function pruneTensorStore(storeDir: string, maxBytes: number): Promise<PruneOutcome> {
    if (typeof maxBytes !== 'number' || Number.isNaN(maxBytes) || maxBytes < 0)
        throw new LayerFetchError('invalid-input', 'maxBytes must be a non-negative number');
    const names = await readdir(storeDir).catch(() => [] as string[]);
    let removedFiles = 0;
    let removedBytes = 0;
    let totalBytes = 0;
    const remove = async (path: string, bytes: number) => {
        await unlink(path);
        removedFiles++;
        removedBytes += bytes;
    };
    // Partial files of this process that no call is writing: an aborted or failed call's, kept to be resumed, but
    // pruned like tensors, else a peer could fill the disk with them (docs/architecture.md, "Sharding").
    const candidates: {path: string, bytes: number, usedMs: number, partial: boolean}[] = [];
    for (const name of names) {
        const path = join(storeDir, name);
        const stored = STORED_FILE.exec(name);
        const partOf = PART_FILE.exec(name)?.[1] ?? OWNER_FILE.exec(name)?.[1];
        if (stored === null && partOf === undefined)
            continue;
        const info = await stat(path).catch(() => undefined);
        if (info === undefined)
            continue;
        const usedMs = Math.max(info.atimeMs, info.mtimeMs);
        if (stored !== null) {
            if (pinned.has(pinKey(storeDir, stored[1]!)))
                totalBytes += info.size;
            else
                candidates.push({path, bytes: info.size, usedMs, partial: false});
            continue;
        }
        const part = join(storeDir, `.part-${partOf}`);
        const record = name.endsWith('.owner');
        const holder = writing.has(resolve(part)) ? 'writing' : await partialOwner(`${part}.owner`);
        if (holder === 'writing' || typeof holder === 'number')
            totalBytes += record ? 0 : info.size;
        else if (holder === 'self') {
            // The record goes with its partial file (or alone, where that is gone).
            if (!record)
                candidates.push({path, bytes: info.size, usedMs, partial: true});
            else if (!names.includes(`.part-${partOf}`))
                await unlink(path).catch(() => undefined);
        } else if (record)
            await unlink(path).catch(() => undefined);
        else
            await remove(path, info.size).catch(() => undefined);
    }
    candidates.sort((a, b) => a.usedMs - b.usedMs);
    totalBytes += candidates.reduce((sum, candidate) => sum + candidate.bytes, 0);
    for (const candidate of candidates) {
        if (totalBytes <= maxBytes)
            break;
        // A call may have taken the partial file up again meanwhile.
        if (candidate.partial && writing.has(resolve(candidate.path)))
            continue;
        await remove(candidate.path, candidate.bytes).catch(() => undefined);
        if (candidate.partial)
            await unlink(`${candidate.path}.owner`).catch(() => undefined);
        totalBytes -= candidate.bytes;
    }
    return {removedFiles, removedBytes, keptBytes: totalBytes};
}

/** The progress of one call, reported at most every `PROGRESS_INTERVAL_MS` but at each tensor's end. */
class Progress {
    tensorsDone = 0;
    tensorsFailed = 0;
    private doneBytes = 0;
    private readonly heldBySha = new Map<string, number>();
    private reportedAt = 0;

    constructor(readonly totalBytes: number, private readonly onProgress: LayerFetchOptions['onProgress']) {}

    held(sha256: string, bytes: number) {
        this.doneBytes += bytes - (this.heldBySha.get(sha256) ?? 0);
        this.heldBySha.set(sha256, bytes);
    }

    report(force: boolean) {
        const now = performance.now();
        if (this.onProgress === undefined || (!force && now - this.reportedAt < PROGRESS_INTERVAL_MS))
            return;
        this.reportedAt = now;
        try {
            this.onProgress({doneBytes: this.doneBytes, totalBytes: this.totalBytes, tensorsDone: this.tensorsDone, tensorsFailed: this.tensorsFailed});
        } catch {
            // A failing progress callback must not fail the tensors.
        }
    }
}

/** Bytes received over the time at least one request was open: the download rate of this call. */
class RateMeter {
    bytes = 0;
    private open = 0;
    private since = 0;
    private spentMs = 0;

    begin() {
        if (this.open++ === 0)
            this.since = performance.now();
    }

    end() {
        if (--this.open === 0)
            this.spentMs += performance.now() - this.since;
    }

    bytesPerSecond() {
        return this.bytes === 0 ? null : this.bytes / (Math.max(this.spentMs, 1) / 1000);
    }
}
