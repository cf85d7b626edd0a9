import {randomBytes} from 'node:crypto';
import {EventEmitter} from 'node:events';
import {LRUCache} from 'lru-cache';
import {priceWeiPerMillion, stageCostWei, weiToDoge} from '../../../ledger/payments/pricing.js';
import type {ShardReceipt, ShardReceiptBody} from '../../../ledger/records.js';
import {countersignShardReceipt, shardReceiptProblem, signShardReceipt, verifyShardReceipt, withHostSignature} from '../../../ledger/shard-receipt.js';
import type {SigningDomain} from '../../../ledger/signing-domain.js';
import {BoundedChannel} from '../../../swarm/channel/bounded-channel.js';
import {ProtocolViolation} from '../../../swarm/channel/errors.js';
import type {PeerConnection} from '../../../swarm/peer-connection.js';
import type {PeerProtocol} from '../../../swarm/peer-protocol.js';
import type {Capabilities} from '../../../swarm/capabilities.js';
import type {JobPayment, WireVoucher} from '../../remote/jobs/job-payments.js';
import {encodeData, MAX_SHARD_DATA_BYTES, SHARD_CHANNEL, type ShardControl, type ShardData} from './shard-messages.js';
import {shortPeerId} from '../../../core/display.js';
import {type SessionRequestBody, sessionRequestProblem, signSessionRequest} from './session-request.js';
import type {LayerFetch} from './layer-fetch-messages.js';
import {PAYMENT_WINDOW_TOKENS_PER_SEQUENCE, paymentWindowTokens, shardPaymentKey, type ShardPayments} from './shard-payments.js';

/**
 * What a coordinator asks of a host when it opens a session; the channel adds the session's id, both parties, the
 * signing domain and the time, and signs it (session-request.ts).
 */
export type SessionRequest = Pick<SessionRequestBody, 'model' | 'layers' | 'layerCount' | 'sequences' | 'bytes'>;

/** Session ids a host remembers, to refuse a request that reuses one (a stale one is refused by its date). */
const REMEMBERED_SESSION_IDS = 4096;
/** Receipts a coordinator keeps while it waits for their countersignatures, per peer (the oldest are dropped beyond). */
const PENDING_RECEIPTS = 256;

/** One end of a byte stream through the tunnel. */
export interface TunnelStream {
    /** Queues bytes for the other end; false when the peer connection is congested (wait for `drain`). */
    write(bytes: Uint8Array): boolean,
    close(reason: string): void,
    readonly closed: boolean,
    on(event: 'data', listener: (bytes: Buffer) => void): this,
    on(event: 'drain', listener: () => void): this,
    on(event: 'close', listener: (reason: string) => void): this
}

/** A session this node hosts: the host decides what serves it (an rpc server) and is told when it ends. */
export interface HostedSession {
    /** Opens the byte stream a new tunnel stream is joined to (a TCP connection to the session's rpc server). */
    connect(stream: TunnelStream): void,
    /** The coordinator ended the session or left: stop serving it. */
    end(reason: string): void,
    /** Graph computations the session's server was sent so far (GRAPH_COMPUTE and GRAPH_RECOMPUTE, all its streams). */
    graphComputes(): number,
    /**
     * Tokens those graphs computed (each graph's batch: a pass of several sequences, or of drafted tokens, counts
     * them all): each generated token passes each stage at least once, so this bounds the tokens receipts may claim.
     */
    graphTokens(): number,
    /**
     * Downloads the tensors of a `fetch` from the model's source into the cache this session's server reads
     * (docs/architecture.md, "Hosts that fetch their layers"); resolves with the outcome, which is never an error:
     * the tensors not stored are sent by the coordinator as before. Absent: every fetch is answered "not fetched".
     */
    fetch?(fetch: LayerFetch, onProgress: (progress: FetchProgress) => void, signal: AbortSignal): Promise<FetchOutcome>
}

/** How far a fetch has come. */
export interface FetchProgress {
    doneBytes: number,
    totalBytes: number
}

/** A fetch's end, as the host reports it in `fetched`. */
export interface FetchOutcome {
    stored: number,
    failed: number,
    downloadedBytes: number,
    /** The download rate measured, null when nothing was downloaded. */
    bytesPerSecond: number | null,
    reason?: string
}

export interface ShardHostHandler {
    /** A peer asks this node to host layers: resolve with the session, or reject with the reason for refusing. */
    open(peerId: string, request: SessionRequestBody, session: {end(reason: string): void}): Promise<HostedSession>,
    /**
     * A spare's fetch (`session` null): download the tensors into this node's cache for a session that may come after
     * a failure. Absent: spares' fetches are answered "not fetched".
     */
    prefetch?(peerId: string, fetch: LayerFetch, onProgress: (progress: FetchProgress) => void, signal: AbortSignal): Promise<FetchOutcome>
}

/** What a coordinator asks a host to download: a fetch frame less the ids the channel adds. */
export type FetchRequest = Omit<LayerFetch, 'fetch' | 'session'>;

export interface ShardProtocolOptions {
    /** This node: it signs the session requests it sends, and countersigns the receipts of sessions it hosts. */
    identity: {id: string, secretKey: Buffer},
    /** The network and chain every signature names (ledger/signing-domain.ts). */
    domain: SigningDomain,
    /** Serves sessions for peers; defaults to none (every request is refused). */
    host?: ShardHostHandler,
    /** Host: a coordinator's receipt passed the checks and was countersigned (the host's `shard` record). */
    onShardReceipt?: (peerId: string, receipt: ShardReceipt) => void,
    /** Coordinator: a host countersigned a receipt this node sent (its `shard-consumed` record). */
    onShardConsumed?: (peerId: string, receipt: ShardReceipt) => void,
    /** A receipt was refused (the host's checks) or its countersignature was bad (the coordinator's): why. */
    onReceiptProblem?: (peerId: string, problem: string) => void,
    /**
     * Pays priced hosts for this node's sessions, and has peers pay for the sessions this node hosts when it charges
     * (node/node-payments.ts; docs/peer-protocol.md, "Shard channel"); defaults to none: no session is opened on a
     * priced host, and sessions are hosted for free.
     */
    payments?: ShardPayments,
    /**
     * A payment failed: this node could not pay a host (the session ends), or, as host, refused a coordinator's
     * voucher or found it owing (the session ends, or is refused): why.
     */
    onPaymentProblem?: (peerId: string, problem: string) => void,
    /** How long a host may take to make a session ready (start an rpc server); defaults to 30 s. */
    openTimeoutMs?: number,
    /** Sessions one peer may have open on this host at once; defaults to 2. */
    maxSessionsPerPeer?: number,
    /** Streams one session may have open at once; defaults to 8 (ggml-rpc keeps one per device). */
    maxStreamsPerSession?: number,
    /** Fetches one peer may have running on this host at once, spares' included; defaults to 4. */
    maxFetchesPerPeer?: number,
    /** Control frames per second from one peer; defaults to 200, bursts of 5 s' worth (1,000). */
    controlFramesPerSecond?: number
}

const {controlFrames} = SHARD_CHANNEL.rates;

export const shardProtocolDefaults = {
    openTimeoutMs: 30_000,
    maxSessionsPerPeer: 2,
    maxStreamsPerSession: 8,
    maxFetchesPerPeer: 4,
    controlFramesPerSecond: controlFrames.perSecond
};

type Callbacks = 'host' | 'onShardReceipt' | 'onShardConsumed' | 'onReceiptProblem' | 'payments' | 'onPaymentProblem';
type ResolvedOptions = Required<Omit<ShardProtocolOptions, Callbacks>> & Pick<ShardProtocolOptions, Callbacks>;

/** `unpaid`: the host charges, and this node cannot pay it (no payments, no channel with enough left); nothing was sent. */
export class ShardSessionError extends Error {
    constructor(readonly code: 'refused' | 'disconnected' | 'timeout' | 'ended' | 'unpaid', message: string) {
        super(message);
        this.name = 'ShardSessionError';
    }
}

/** Sends a data frame on the channel's message for one direction. */
type DataSender = (frame: Uint8Array) => boolean;

/** The end of a stream on this node, for either role; bytes go out on the channel's data message for its direction. */
class ChannelStream extends EventEmitter implements TunnelStream {
    closed = false;

    constructor(readonly id: number, private readonly send: DataSender, private readonly onClosed: (reason: string, sendClose: boolean) => void) {
        super();
    }

    write(bytes: Uint8Array) {
        if (this.closed)
            return false;
        let drained = true;
        for (let offset = 0; offset < bytes.byteLength; offset += MAX_SHARD_DATA_BYTES)
            drained = this.send(encodeData(this.id, bytes.subarray(offset, offset + MAX_SHARD_DATA_BYTES)));
        return drained;
    }

    close(reason: string) {
        this.finish(reason, true);
    }

    /** Ends this end: tells the other side unless it was the one that closed. */
    finish(reason: string, sendClose: boolean) {
        if (this.closed)
            return;
        this.closed = true;
        this.onClosed(reason, sendClose);
        this.emit('close', reason);
    }
}

/** How a priced session is paid, on either side: the price its receipts are paid at, and the window held ahead. */
interface SessionPayment {
    /** Wei per million tokens: the terms' price. */
    priceWei: bigint,
    /** The worst case held on the channel for the session's next receipt, in wei (`paymentWindowTokens` at the stage's share). */
    window: bigint,
    /** The payment key holding the window now; none between a receipt and the next hold, or once the session ended. */
    held: string | undefined
}

/** A session this node coordinates, on a host peer. */
export class CoordinatorSession extends EventEmitter<{ended: [reason: string]}> {
    ended = false;
    /** Whether this node ended it: its receipts on their way still go out (and are paid) before the host is told. */
    endedHere = false;
    /** The number of the session's next receipt. */
    private nextSequence = 1;
    /** Receipts are paid and sent one at a time, in order (a voucher is kept on disk before it is sent). */
    receipts: Promise<void> = Promise.resolve();

    /**
     * `request`: what this node signed when it opened the session; `payment`: how a priced host is paid (with its
     * capabilities as announced at the open: its wallet), none for a free one.
     */
    constructor(readonly peerId: string, readonly id: number, readonly request: SessionRequestBody, private readonly channel: ShardChannel,
        readonly payment: (SessionPayment & {capabilities: Capabilities}) | undefined) {
        super();
    }

    /** A new byte stream to the session's rpc server. */
    connect(): TunnelStream {
        if (this.ended)
            throw new ShardSessionError('ended', 'the shard session has ended');
        return this.channel.openStream(this);
    }

    /** Ends the session: the host stops its rpc server. */
    end(reason: string) {
        this.channel.endOutgoing(this.id, reason, true);
    }

    /**
     * Asks the host to download tensors of its layers from the model's source into this session's cache; resolves
     * with its report once it is done, rejects when the session ends first.
     */
    fetch(request: FetchRequest, onProgress?: (progress: FetchProgress) => void): Promise<FetchOutcome> {
        if (this.ended)
            return Promise.reject(new ShardSessionError('ended', 'the shard session has ended'));
        return this.channel.sendFetch(this.id, request, onProgress);
    }

    /**
     * Gives the host a signed receipt for the `tokens` its layers helped generate for a request (the next of the
     * session); the host countersigns it and sends it back (`onShardConsumed`). None for no token.
     */
    sendReceipt(tokens: number, computeMs: number) {
        if (!this.ended && tokens > 0)
            this.channel.sendReceipt(this, this.nextSequence++, tokens, computeMs);
    }
}

/**
 * Passes a priced session's server may run past its last receipt: four windows' worth (a pass moves every sequence
 * on by at least a token), room for the longest honest request while its receipt is on its way.
 */
const UNPAID_PASSES = 4 * PAYMENT_WINDOW_TOKENS_PER_SEQUENCE;
/** How often a priced session's passes are checked against its receipts. */
const UNPAID_CHECK_MS = 1000;

interface HostedState {
    request: SessionRequestBody,
    session: HostedSession | undefined,
    /** The number the session's next receipt must carry. */
    nextSequence: number,
    /** Tokens of the receipts countersigned so far. */
    tokens: number,
    streams: Set<ChannelStream>,
    ended: boolean,
    /** A priced session: its channel and how it is paid; none when this node hosts for free. */
    payment: (SessionPayment & {channel: string}) | undefined,
    /** Receipts are checked one at a time, in order: a voucher's check may read the chain. */
    receipts: Promise<void>,
    /** Receipts waiting for their check. */
    queuedReceipts: number,
    /** The server's passes when the last receipt was countersigned: a priced session runs only so far ahead of its receipts. */
    computesAtReceipt: number,
    /** Checks a priced session's passes against its receipts while it is served. */
    unpaidWatch: NodeJS.Timeout | undefined,
    /** Its fetches running: they stop when it ends. */
    fetches: Set<AbortController>
}

/** How often a host reports a fetch's progress, at most. */
const FETCH_PROGRESS_MS = 500;

/** The shard channel of one peer connection: this node's sessions on the peer and the peer's sessions here. */
class ShardChannel {
    private readonly channel: BoundedChannel<typeof SHARD_CHANNEL>;
    private readonly toHost: DataSender = (frame) => this.channel.send('toHost', frame);
    private readonly toCoordinator: DataSender = (frame) => this.channel.send('toCoordinator', frame);
    private readonly outgoing = new Map<number, {session: CoordinatorSession, ready: (error?: Error) => void, streams: Map<number, ChannelStream>}>();
    private readonly outgoingStreams = new Map<number, ChannelStream>();
    private readonly hosted = new Map<number, HostedState>();
    private readonly hostedStreams = new Map<number, ChannelStream>();
    /** Receipts sent, by `<session>:<sequence>`, until their countersignatures come. */
    private readonly pendingReceipts = new LRUCache<string, ShardReceipt>({max: PENDING_RECEIPTS});
    /** Coordinator: fetches sent, until their `fetched`; each with the session it is for (0 for a spare's). */
    private readonly outgoingFetches = new Map<number, {session: number, progress: ((progress: FetchProgress) => void) | undefined,
        done: (outcome: FetchOutcome | Error) => void}>();
    /** Host: the peer's fetches running here, by id. */
    private readonly hostedFetches = new Map<number, AbortController>();
    private nextFetchId = 1;
    private nextSessionId = 1;
    private nextStreamId = 1;
    closed = false;

    constructor(readonly peer: PeerConnection, private readonly options: ResolvedOptions, private readonly seenSessions: LRUCache<string, true>) {
        const perSecond = options.controlFramesPerSecond;
        this.channel = new BoundedChannel(peer, SHARD_CHANNEL, {
            messages: {
                control: (message) => this.receiveControl(message),
                toHost: (data) => this.receiveData(data, this.hostedStreams),
                toCoordinator: (data) => this.receiveData(data, this.outgoingStreams),
                fetch: (message) => this.receiveFetch(message)
            },
            onclose: () => this.shutDown('the peer connection closed'),
            ondrain: () => {
                for (const stream of [...this.outgoingStreams.values(), ...this.hostedStreams.values()])
                    stream.emit('drain');
            }
        }, {rates: {controlFrames: {perSecond, burst: perSecond * (controlFrames.burst / controlFrames.perSecond)}}});
    }

    async openSession(request: SessionRequest): Promise<CoordinatorSession> {
        if (!await this.channel.opened || this.closed)
            throw new ShardSessionError('disconnected', 'the peer has no shard channel open');
        const {identity, domain} = this.options;
        const body: SessionRequestBody = {
            version: 1, network: domain.network, chainId: domain.chainId, session: randomBytes(32).toString('hex'),
            coordinator: identity.id, host: this.peer.peerId,
            model: {id: request.model.id, bytes: request.model.bytes, sha256: request.model.sha256},
            layers: [request.layers[0], request.layers[1]], layerCount: request.layerCount, sequences: request.sequences, bytes: request.bytes,
            openedAt: new Date().toISOString()
        };
        const payment = await this.payHost(body);
        if (payment !== undefined)
            body.payment = payment.terms;
        if (this.closed) {
            if (payment?.held !== undefined)
                this.options.payments?.release(payment.held);
            throw new ShardSessionError('disconnected', 'the peer connection closed');
        }
        const session = new CoordinatorSession(this.peer.peerId, this.nextSessionId++, body, this, payment);
        this.peer.state?.holdWhile(`shard-host:${request.model.id}`, () => !session.ended);
        const ready = new Promise<void>((resolve, reject) => {
            this.outgoing.set(session.id, {session, streams: new Map(), ready: (error) => error ? reject(error) : resolve()});
        });
        this.sendControl({type: 'open', session: session.id, request: signSessionRequest(body, identity.secretKey)});
        const timer = setTimeout(() => this.endOutgoing(session.id, 'no answer to the session request in time', true,
            new ShardSessionError('timeout', `the host did not open the session within ${this.options.openTimeoutMs} ms`)), this.options.openTimeoutMs);
        try {
            await ready;
        } finally {
            clearTimeout(timer);
        }
        return session;
    }

    openStream(session: CoordinatorSession): TunnelStream {
        const entry = this.outgoing.get(session.id);
        if (entry === undefined || this.closed)
            throw new ShardSessionError('ended', 'the shard session has ended');
        const id = this.nextStreamId++;
        const stream: ChannelStream = new ChannelStream(id, this.toHost, (reason, sendClose) => {
            this.outgoingStreams.delete(id);
            entry.streams.delete(id);
            if (sendClose && !this.closed)
                this.sendControl({type: 'close', stream: id, reason});
        });
        this.outgoingStreams.set(id, stream);
        entry.streams.set(id, stream);
        this.sendControl({type: 'connect', session: session.id, stream: id});
        return stream;
    }

    /** Ends a session this node coordinates: its streams close, and the host is told unless it ended it. */
    endOutgoing(sessionId: number, reason: string, tell: boolean, error?: Error) {
        const entry = this.outgoing.get(sessionId);
        if (entry === undefined)
            return;
        this.outgoing.delete(sessionId);
        const {payment} = entry.session;
        const finish = () => {
            if (payment?.held !== undefined) {
                this.options.payments?.release(payment.held);
                payment.held = undefined;
            }
            if (tell && !this.closed)
                this.sendControl({type: 'end', session: sessionId, reason});
        };
        for (const stream of entry.streams.values())
            stream.finish(reason, false);
        entry.ready(error ?? new ShardSessionError('ended', reason));
        for (const [fetchId, fetch] of this.outgoingFetches)
            if (fetch.session === sessionId) {
                this.outgoingFetches.delete(fetchId);
                fetch.done(new ShardSessionError('ended', reason));
            }
        entry.session.ended = true;
        entry.session.endedHere = tell;
        entry.session.emit('ended', reason);
        // Ended here: the receipts of work done go out first, paid, and the host countersigns them before it hears of the end.
        if (tell)
            void entry.session.receipts.finally(finish);
        else
            finish();
    }

    /** Ends a session this node hosts; with `expected`, only while that state is the session's (its id may be reused after it ends). */
    /**
     * Host: a priced session whose server ran more passes since its last receipt than UNPAID_PASSES ends: a
     * coordinator that keeps its receipts (and their vouchers) back gets no more than that unpaid.
     */
    private watchUnpaid(sessionId: number, state: HostedState) {
        state.unpaidWatch = setInterval(() => {
            const passes = (state.session?.graphComputes() ?? 0) - state.computesAtReceipt;
            if (passes > UNPAID_PASSES)
                this.endHosted(sessionId, `the coordinator sent no receipt for ${passes} passes (at most ${UNPAID_PASSES} are served unpaid)`, true, state);
        }, UNPAID_CHECK_MS);
        state.unpaidWatch.unref();
    }

    private endHosted(sessionId: number, reason: string, tell: boolean, expected?: HostedState) {
        const state = this.hosted.get(sessionId);
        if (state === undefined || state.ended || (expected !== undefined && state !== expected))
            return;
        state.ended = true;
        clearInterval(state.unpaidWatch);
        this.hosted.delete(sessionId);
        // Receipts that came before the end are still checked and charged; the hold left after them goes.
        if (state.payment !== undefined)
            void state.receipts.then(() => this.releaseHold(state));
        for (const stream of state.streams)
            stream.finish(reason, false);
        for (const fetch of state.fetches)
            fetch.abort();
        state.session?.end(reason);
        if (tell && !this.closed)
            this.sendControl({type: 'ended', session: sessionId, reason});
    }

    private receiveControl(message: ShardControl) {
        switch (message.type) {
            case 'open':
                this.openHosted(message);
                return;
            case 'end':
                this.endHosted(message.session, `the coordinator ended the session: ${message.reason}`, false);
                return;
            case 'connect':
                this.connectHosted(message.session, message.stream);
                return;
            case 'close':
                this.hostedStreams.get(message.stream)?.finish(message.reason, false);
                return;
            case 'receipt':
                this.receiveReceipt(message);
                return;
            case 'countersigned':
                this.countersigned(message);
                return;
            case 'ready':
                this.outgoing.get(message.session)?.ready();
                return;
            case 'refused':
                this.endOutgoing(message.session, message.reason, false, new ShardSessionError('refused', message.reason));
                return;
            case 'ended':
                this.endOutgoing(message.session, message.reason, false);
                return;
            case 'closed':
                this.outgoingStreams.get(message.stream)?.finish(message.reason, false);
                return;
            case 'fetchProgress':
                this.outgoingFetches.get(message.fetch)?.progress?.({doneBytes: message.doneBytes, totalBytes: message.totalBytes});
                return;
            case 'fetched': {
                const fetch = this.outgoingFetches.get(message.fetch);
                this.outgoingFetches.delete(message.fetch);
                const {stored, failed, downloadedBytes, bytesPerSecond, reason} = message;
                fetch?.done({stored, failed, downloadedBytes, bytesPerSecond, ...(reason !== undefined && {reason})});
                return;
            }
        }
    }

    /** Coordinator: sends a fetch for a session (or, with 0, a spare's) and resolves with the host's report. */
    sendFetch(session: number, request: FetchRequest, onProgress?: (progress: FetchProgress) => void): Promise<FetchOutcome> {
        if (this.closed)
            return Promise.reject(new ShardSessionError('disconnected', 'the peer connection closed'));
        const fetch = this.nextFetchId++;
        this.peer.state?.holdWhile('shard-fetch', () => this.outgoingFetches.has(fetch));
        const outcome = new Promise<FetchOutcome>((resolve, reject) => {
            this.outgoingFetches.set(fetch, {session, progress: onProgress, done: (result) => result instanceof Error ? reject(result) : resolve(result)});
        });
        this.channel.send('fetch', {...request, fetch, session: session === 0 ? null : session});
        return outcome;
    }

    /**
     * Host: a coordinator's fetch, for one of its ready sessions or a spare's (null). A fetch id used twice is a
     * violation; one for a session that is not ready here, or beyond the peer's share, is answered "not fetched".
     */
    private receiveFetch(message: LayerFetch) {
        if (this.hostedFetches.has(message.fetch))
            throw new ProtocolViolation(`layer fetch ${message.fetch} sent twice`);
        const notFetched = (reason: string) => this.sendControl({type: 'fetched', fetch: message.fetch, stored: 0, failed: message.tensors.length,
            downloadedBytes: 0, bytesPerSecond: null, reason: reason.slice(0, 512)});
        const state = message.session === null ? undefined : this.hosted.get(message.session);
        const run = message.session === null ? this.options.host?.prefetch?.bind(this.options.host, this.peer.peerId) : state?.session?.fetch?.bind(state.session);
        if (message.session !== null && state?.session === undefined)
            return notFetched('no such session');
        if (run === undefined)
            return notFetched('this node does not fetch layers from a model\'s source');
        if (this.hostedFetches.size >= this.options.maxFetchesPerPeer)
            return notFetched(`at most ${this.options.maxFetchesPerPeer} fetches per peer at once`);
        const controller = new AbortController();
        this.hostedFetches.set(message.fetch, controller);
        this.peer.state?.holdWhile('shard-fetch', () => this.hostedFetches.has(message.fetch));
        state?.fetches.add(controller);
        let reportedAt = 0;
        const onProgress = ({doneBytes, totalBytes}: FetchProgress) => {
            if (Date.now() - reportedAt < FETCH_PROGRESS_MS || this.closed || controller.signal.aborted)
                return;
            reportedAt = Date.now();
            this.sendControl({type: 'fetchProgress', fetch: message.fetch, doneBytes, totalBytes});
        };
        run(message, onProgress, controller.signal).catch((error: Error) => ({stored: 0, failed: message.tensors.length, downloadedBytes: 0,
            bytesPerSecond: null, reason: error.message} satisfies FetchOutcome)).then((outcome) => {
            this.hostedFetches.delete(message.fetch);
            state?.fetches.delete(controller);
            if (this.closed || controller.signal.aborted)
                return;
            this.sendControl({type: 'fetched', fetch: message.fetch, ...outcome, ...(outcome.reason !== undefined && {reason: outcome.reason.slice(0, 512)})});
        });
    }

    private openHosted(message: Extract<ShardControl, {type: 'open'}>) {
        if (this.hosted.has(message.session))
            throw new ProtocolViolation(`shard session ${message.session} opened twice`);
        const host = this.options.host;
        const refuse = (reason: string) => this.sendControl({type: 'refused', session: message.session, reason});
        if (host === undefined)
            return refuse('this node does not host layers');
        if (this.hosted.size >= this.options.maxSessionsPerPeer)
            return refuse(`at most ${this.options.maxSessionsPerPeer} sessions per peer`);
        const sessionId = message.session;
        const problem = sessionRequestProblem(message.request, {peerId: this.peer.peerId, hostId: this.options.identity.id, domain: this.options.domain});
        if (problem !== undefined)
            return refuse(`the session request is refused: ${problem}`);
        const request = message.request.body;
        if (this.seenSessions.has(request.session))
            return refuse('the session request is refused: its session id was used before');
        const payment = this.sessionPayment(request);
        if (typeof payment === 'string') {
            const reason = `the session's payment is refused: ${payment}`.slice(0, 512);
            this.options.onPaymentProblem?.(this.peer.peerId, reason);
            return refuse(reason);
        }
        this.seenSessions.set(request.session, true);
        const state: HostedState = {request, session: undefined, nextSequence: 1, tokens: 0, streams: new Set(), ended: false, payment,
            receipts: Promise.resolve(), queuedReceipts: 0, computesAtReceipt: 0, unpaidWatch: undefined, fetches: new Set()};
        this.hosted.set(message.session, state);
        this.peer.state?.holdWhile(`shard-coordinator:${request.model.id}`, () => !state.ended);
        const open = async () => {
            // A priced session's first window is held on the channel before anything starts (a coordinator owing vouchers gets none).
            const refusal = await this.holdWindow(state, 1);
            if (refusal !== undefined)
                throw new Error(`the session's payment is refused: ${refusal}`);
            if (state.ended) {
                this.releaseHold(state);
                throw new Error('the session ended while it opened');
            }
            return host.open(this.peer.peerId, request, {end: (reason) => this.endHosted(sessionId, reason, true)});
        };
        open().then((session) => {
            state.session = session;
            if (state.ended) {
                session.end('the session ended while it opened');
                return;
            }
            this.sendControl({type: 'ready', session: sessionId});
            if (payment !== undefined)
                this.watchUnpaid(sessionId, state);
        }, (error: Error) => {
            if (state.ended)
                return;
            this.endHosted(sessionId, error.message, false, state); // releases a window held
            if (payment !== undefined && error.message.startsWith('the session\'s payment'))
                this.options.onPaymentProblem?.(this.peer.peerId, error.message.slice(0, 512));
            refuse(error.message.slice(0, 512));
        });
    }

    /**
     * Host: how a session is paid when this node charges (its terms at this node's price at least), why it is
     * refused when they fall short, or undefined for a free host (terms sent anyway pay for nothing).
     */
    private sessionPayment(request: SessionRequestBody): HostedState['payment'] | string {
        const price = this.options.payments?.price() ?? 0;
        if (price === 0)
            return undefined;
        const terms = request.payment;
        if (terms === undefined)
            return `this node charges ${price} DOGE per million tokens for its share of the layers: the request names no payment channel`;
        if (terms.pricePerMillion < price)
            return `it offers ${terms.pricePerMillion} DOGE per million tokens; this node's price is ${price}`;
        try {
            const priceWei = priceWeiPerMillion(terms.pricePerMillion);
            const window = stageCostWei(paymentWindowTokens(request.sequences), priceWei, request.layers[1] - request.layers[0] + 1, request.layerCount);
            return {channel: terms.channel, priceWei, window, held: undefined};
        } catch (error) {
            return `its terms cannot be priced: ${(error as Error).message}`;
        }
    }

    /**
     * Host: holds a priced session's window on its channel for receipt `sequence` (the payee's admission: the deposit
     * less what is owed and held must cover it, and the coordinator must owe no voucher): why not, or undefined.
     */
    private async holdWindow(state: HostedState, sequence: number): Promise<string | undefined> {
        const {payment} = state;
        const payments = this.options.payments;
        if (payment === undefined || payments === undefined)
            return undefined;
        const key = shardPaymentKey(state.request.session, sequence);
        let refusal: string | undefined;
        try {
            refusal = await payments.admitWei(this.peer.peerId, key, payment.channel, payment.window);
        } catch (error) {
            refusal = `the payment channel cannot be checked: ${(error as Error).message}`;
        }
        if (refusal === undefined)
            payment.held = key;
        return refusal;
    }

    /** Host: a session's window held for a receipt that will not come goes (served for nothing). */
    private releaseHold(state: HostedState) {
        const held = state.payment?.held;
        if (held === undefined)
            return;
        state.payment!.held = undefined;
        try {
            this.options.payments?.servedWei(this.peer.peerId, held, 0n);
        } catch (error) { // called where nothing awaits it: a failure must not become an unhandled rejection
            this.options.onPaymentProblem?.(this.peer.peerId, `cannot release a shard session's payment window: ${(error as Error).message}`);
        }
    }

    private connectHosted(sessionId: number, streamId: number) {
        const state = this.hosted.get(sessionId);
        if (this.hostedStreams.has(streamId))
            throw new ProtocolViolation(`shard stream ${streamId} opened twice`);
        if (state?.session === undefined) // ended, or not ready: nothing serves it
            return this.sendControl({type: 'closed', stream: streamId, reason: 'no such session'});
        if (state.streams.size >= this.options.maxStreamsPerSession)
            return this.sendControl({type: 'closed', stream: streamId, reason: `at most ${this.options.maxStreamsPerSession} streams per session`});
        const stream: ChannelStream = new ChannelStream(streamId, this.toCoordinator, (reason, sendClose) => {
            this.hostedStreams.delete(streamId);
            state.streams.delete(stream);
            if (sendClose && !this.closed)
                this.sendControl({type: 'closed', stream: streamId, reason});
        });
        this.hostedStreams.set(streamId, stream);
        state.streams.add(stream);
        state.session.connect(stream);
    }

    private receiveData({stream: id, bytes}: ShardData, streams: Map<number, ChannelStream>) {
        // Data for a stream that just closed is in flight, not an offence.
        streams.get(id)?.emit('data', bytes);
    }

    /**
     * Coordinator: signs the session's receipt `sequence` and sends it, in a priced session with the voucher paying
     * it; kept until its countersignature comes. Receipts go out one at a time, in order.
     */
    sendReceipt(session: CoordinatorSession, sequence: number, tokens: number, computeMs: number) {
        const {request} = session;
        const receipt = signShardReceipt({
            version: 2, network: request.network, chainId: request.chainId, session: request.session, sequence,
            model: request.model.id, modelBytes: request.model.bytes, modelSha256: request.model.sha256,
            layerCount: request.layerCount, firstLayer: request.layers[0], lastLayer: request.layers[1],
            tokens, computeMs: Math.round(computeMs), host: request.host, coordinator: request.coordinator, completedAt: new Date().toISOString()
        }, this.options.identity.secretKey);
        session.receipts = session.receipts.then(() => this.deliverReceipt(session, receipt))
            .catch((error: Error) => this.options.onReceiptProblem?.(this.peer.peerId, `cannot send shard receipt ${sequence}: ${error.message}`));
    }

    private async deliverReceipt(session: CoordinatorSession, receipt: ShardReceipt) {
        // Ended by the host (or the connection): a receipt it would drop is not paid either.
        if (this.closed || (session.ended && !session.endedHere))
            return;
        const voucher = session.payment === undefined ? undefined : await this.payReceipt(session, receipt.body);
        if (this.closed)
            return;
        this.pendingReceipts.set(`${session.id}:${receipt.body.sequence}`, receipt);
        this.sendControl({type: 'receipt', session: session.id, receipt, ...(voucher !== undefined && {voucher})});
        if (session.payment !== undefined && !session.ended)
            await this.holdNextWindow(session, receipt.body.sequence + 1);
    }

    /**
     * Coordinator: the voucher paying a receipt its stage's share at the session's price (kept before it is sent), or
     * undefined when it costs nothing or cannot be paid (the host then refuses further work: said through
     * `onPaymentProblem`).
     */
    private async payReceipt(session: CoordinatorSession, body: ShardReceiptBody): Promise<WireVoucher | undefined> {
        const payment = session.payment!;
        const payments = this.options.payments!;
        const key = shardPaymentKey(body.session, body.sequence);
        // Not held when the session ended before its window came (receipts still go out then): held now, for its cost.
        const held = payment.held === key;
        payment.held = undefined;
        let cost = 0n;
        try {
            cost = stageCostWei(body.tokens, payment.priceWei, body.lastLayer - body.firstLayer + 1, body.layerCount);
            if (cost > payment.window || !held) {
                // A request longer than the window: its whole cost is held first (deposited, within --auto-deposit).
                payments.release(key);
                await payments.reserveWei(this.peer.peerId, payment.capabilities, key, cost);
            }
            return await payments.payWei(this.peer.peerId, key, cost);
        } catch (error) {
            payments.release(key);
            this.options.onPaymentProblem?.(this.peer.peerId,
                `cannot pay receipt ${body.sequence} of a shard session (${weiToDoge(cost)} DOGE): ${(error as Error).message}`.slice(0, 512));
            return undefined;
        }
    }

    /** Coordinator: holds the window of a priced session's next receipt; when it cannot, the session ends (the host would refuse). */
    private async holdNextWindow(session: CoordinatorSession, sequence: number) {
        const payment = session.payment!;
        const payments = this.options.payments!;
        if (session.ended)
            return;
        const key = shardPaymentKey(session.request.session, sequence);
        try {
            await payments.reserveWei(this.peer.peerId, payment.capabilities, key, payment.window);
        } catch (error) {
            const reason = `this node cannot pay the host for more work: ${(error as Error).message}`.slice(0, 512);
            this.options.onPaymentProblem?.(this.peer.peerId, reason);
            session.end(reason);
            return;
        }
        if (session.ended)
            payments.release(key);
        else
            payment.held = key;
    }

    /**
     * Coordinator: the payment terms for a priced host (its announced price, a channel to its bound wallet holding the
     * session's first window), or undefined for a free host; `unpaid` when this node cannot pay it.
     */
    private async payHost(body: SessionRequestBody) {
        const capabilities = this.peer.state?.capabilities;
        const price = capabilities?.pricePerMillionTokens ?? 0;
        if (capabilities === undefined || price === 0)
            return undefined;
        const payments = this.options.payments;
        if (payments === undefined)
            throw new ShardSessionError('unpaid', `the host charges ${price} DOGE per million tokens, and this node pays no one`);
        const key = shardPaymentKey(body.session, 1);
        try {
            const priceWei = priceWeiPerMillion(price);
            const window = stageCostWei(paymentWindowTokens(body.sequences), priceWei, body.layers[1] - body.layers[0] + 1, body.layerCount);
            const channel = await payments.reserveWei(this.peer.peerId, capabilities, key, window);
            const terms: JobPayment = {channel, pricePerMillion: price};
            return {terms, capabilities, priceWei, window, held: key as string | undefined};
        } catch (error) {
            throw new ShardSessionError('unpaid', `cannot pay the host ${price} DOGE per million tokens: ${(error as Error).message}`.slice(0, 512));
        }
    }

    /**
     * Host: a coordinator's receipt joins its session's queue; receipts are checked in order, one at a time. More
     * waiting than a coordinator keeps unanswered (256) is a flood: the session ends.
     */
    private receiveReceipt({session: sessionId, receipt, voucher}: Extract<ShardControl, {type: 'receipt'}>) {
        const state = this.hosted.get(sessionId);
        if (state?.session === undefined) // a receipt for a session that ended meanwhile is the coordinator's loss
            return;
        if (state.queuedReceipts >= PENDING_RECEIPTS)
            return this.endHosted(sessionId, `more than ${PENDING_RECEIPTS} shard receipts wait to be checked`, true, state);
        state.queuedReceipts++;
        state.receipts = state.receipts.then(() => this.countersign(sessionId, state, receipt, voucher))
            // Whatever fails here (the log, the chain) ends this session only.
            .catch((error: Error) => this.endHosted(sessionId, `cannot check the shard receipt: ${error.message}`.slice(0, 512), true, state))
            .finally(() => {
                state.queuedReceipts--;
            });
    }

    /**
     * Host: checks a coordinator's receipt against the session's signed request and the passes its server was sent
     * (docs/peer-protocol.md, "Shard channel"), then countersigns it and sends the countersignature back, and in a
     * priced session charges it. A receipt that fails ends the session: a coordinator that claims work that did not
     * happen gets no more of it.
     */
    private async countersign(sessionId: number, state: HostedState, candidate: ShardReceipt, voucher: WireVoucher | undefined) {
        if (state.session === undefined) // it came before the session ended (if it has): the work was done
            return;
        const {request} = state;
        let receipt: ShardReceipt;
        try {
            receipt = verifyShardReceipt({...candidate, hostSignature: null}, {countersigned: false});
            const problem = shardReceiptProblem(receipt.body, {
                domain: this.options.domain, session: request.session, coordinator: this.peer.peerId, host: this.options.identity.id,
                model: request.model, layers: request.layers, layerCount: request.layerCount, openedAt: request.openedAt,
                sequence: state.nextSequence, maxTokens: state.session.graphTokens() - state.tokens
            });
            if (problem !== undefined)
                throw new Error(problem);
        } catch (error) {
            const reason = `refused the coordinator's shard receipt: ${(error as Error).message}`.slice(0, 512);
            this.options.onReceiptProblem?.(this.peer.peerId, reason);
            this.endHosted(sessionId, reason, true, state);
            return;
        }
        const countersigned = countersignShardReceipt(receipt, this.options.identity.secretKey);
        state.nextSequence++;
        state.tokens += receipt.body.tokens;
        state.computesAtReceipt = state.session.graphComputes();
        this.sendControl({type: 'countersigned', session: sessionId, sequence: receipt.body.sequence, hostSignature: countersigned.hostSignature!});
        this.options.onShardReceipt?.(this.peer.peerId, countersigned);
        if (state.payment !== undefined)
            await this.charge(sessionId, state, receipt.body, voucher);
    }

    /**
     * Host: a countersigned receipt of a priced session costs its share of the layers at the session's price; its
     * voucher must pay what the coordinator owes, and the next window must be held, or the session ends (and a
     * coordinator owing vouchers gets no other session until it pays).
     */
    private async charge(sessionId: number, state: HostedState, body: ShardReceiptBody, voucher: WireVoucher | undefined) {
        const payment = state.payment!;
        const payments = this.options.payments!;
        const key = shardPaymentKey(body.session, body.sequence);
        payment.held = undefined;
        payments.servedWei(this.peer.peerId, key, stageCostWei(body.tokens, payment.priceWei, body.lastLayer - body.firstLayer + 1, body.layerCount));
        let problem: string | undefined;
        try {
            problem = await payments.voucherFor(this.peer.peerId, key, voucher);
        } catch (error) {
            problem = `it could not be kept: ${(error as Error).message}`;
        }
        if (problem !== undefined)
            return this.paymentRefused(sessionId, state, `refused the coordinator's voucher for shard receipt ${body.sequence}: ${problem}`);
        if (state.ended && state.queuedReceipts <= 1) // no receipt will come after this one
            return;
        const refusal = await this.holdWindow(state, body.sequence + 1);
        if (refusal !== undefined)
            this.paymentRefused(sessionId, state, `no more work without payment: ${refusal}`);
    }

    private paymentRefused(sessionId: number, state: HostedState, reason: string) {
        const short = reason.slice(0, 512);
        this.options.onPaymentProblem?.(this.peer.peerId, short);
        this.endHosted(sessionId, short, true, state);
    }

    /** Coordinator: a host's countersignature of a receipt this node sent, even for a session ended since. */
    private countersigned({session, sequence, hostSignature}: Extract<ShardControl, {type: 'countersigned'}>) {
        const key = `${session}:${sequence}`;
        const sent = this.pendingReceipts.get(key);
        if (sent === undefined) // not one this node sent, or one dropped long ago
            return;
        this.pendingReceipts.delete(key);
        let receipt: ShardReceipt;
        try {
            receipt = withHostSignature(sent, hostSignature);
        } catch (error) {
            this.options.onReceiptProblem?.(this.peer.peerId, `the host's countersignature of receipt ${sequence}: ${(error as Error).message}`);
            return;
        }
        this.options.onShardConsumed?.(this.peer.peerId, receipt);
    }

    sendControl(message: ShardControl) {
        this.channel.send('control', message);
    }

    private shutDown(reason: string) {
        if (this.closed)
            return;
        this.closed = true;
        for (const id of [...this.outgoing.keys()])
            this.endOutgoing(id, reason, false, new ShardSessionError('disconnected', reason));
        for (const id of [...this.hosted.keys()])
            this.endHosted(id, reason, false);
        for (const fetch of this.hostedFetches.values())
            fetch.abort();
        this.hostedFetches.clear();
        for (const fetch of this.outgoingFetches.values())
            fetch.done(new ShardSessionError('disconnected', reason));
        this.outgoingFetches.clear();
    }
}

/**
 * Layer shards' byte tunnels (docs/peer-protocol.md, "Shard channel"): attaches a shard channel to every peer
 * connection. A coordinator opens sessions on hosts and streams in them; a host serves each session with what its
 * handler gives (an rpc server bound to loopback), reachable only through that session's streams, so only from
 * the peer that opened it.
 */
export class ShardProtocol implements PeerProtocol {
    private readonly channels = new Map<string, ShardChannel>();
    private readonly options: ResolvedOptions;
    /** Session ids of requests this node accepted to host, all peers together. */
    private readonly seenSessions = new LRUCache<string, true>({max: REMEMBERED_SESSION_IDS});

    constructor(options: ShardProtocolOptions) {
        this.options = {...shardProtocolDefaults, ...options};
    }

    attach(peer: PeerConnection) {
        const channel = new ShardChannel(peer, this.options, this.seenSessions);
        this.channels.set(peer.peerId, channel);
        peer.once('closed', () => {
            if (this.channels.get(peer.peerId) === channel)
                this.channels.delete(peer.peerId);
        });
    }

    /**
     * Asks a peer to download layers into its cache without a session (a spare, ready to replace a stage without a
     * transfer); resolves with its report.
     */
    prefetch(peerId: string, request: FetchRequest, onProgress?: (progress: FetchProgress) => void): Promise<FetchOutcome> {
        const channel = this.channels.get(peerId);
        if (channel === undefined)
            return Promise.reject(new ShardSessionError('disconnected', `peer ${shortPeerId(peerId)} is not connected`));
        return channel.sendFetch(0, request, onProgress);
    }

    /** Asks a peer to host a stage; resolves once its rpc server is ready. */
    openSession(peerId: string, request: SessionRequest): Promise<CoordinatorSession> {
        const channel = this.channels.get(peerId);
        if (channel === undefined)
            return Promise.reject(new ShardSessionError('disconnected', `peer ${shortPeerId(peerId)} is not connected`));
        return channel.openSession(request);
    }
}
