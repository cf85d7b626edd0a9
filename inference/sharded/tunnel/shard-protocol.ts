import {EventEmitter} from 'node:events';
import type {ShardReceipt} from '../../../ledger/records.js';
import {BoundedChannel} from '../../../swarm/channel/bounded-channel.js';
import {ProtocolViolation} from '../../../swarm/channel/errors.js';
import type {PeerConnection} from '../../../swarm/peer-connection.js';
import type {PeerProtocol} from '../../../swarm/peer-protocol.js';
import {encodeData, MAX_SHARD_DATA_BYTES, SHARD_CHANNEL, type ShardControl, type ShardData} from './shard-messages.js';
import {shortPeerId} from '../../../core/display.js';

/** What a coordinator asks of a host when it opens a session. */
export type SessionRequest = Omit<Extract<ShardControl, {type: 'open'}>, 'type' | 'session'>;

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
    end(reason: string): void
}

export interface ShardHostHandler {
    /** A peer asks this node to host layers: resolve with the session, or reject with the reason for refusing. */
    open(peerId: string, request: SessionRequest, session: {end(reason: string): void}): Promise<HostedSession>
}

export interface ShardProtocolOptions {
    /** Serves sessions for peers; defaults to none (every request is refused). */
    host?: ShardHostHandler,
    /** A coordinator sent a receipt for work a session hosted here did (what the session was opened for, to check it). */
    onReceipt?: (peerId: string, session: SessionRequest, receipt: ShardReceipt) => void,
    /** How long a host may take to make a session ready (start an rpc server); defaults to 30 s. */
    openTimeoutMs?: number,
    /** Sessions one peer may have open on this host at once; defaults to 2. */
    maxSessionsPerPeer?: number,
    /** Streams one session may have open at once; defaults to 8 (ggml-rpc keeps one per device). */
    maxStreamsPerSession?: number,
    /** Control frames per second from one peer; defaults to 200, bursts of 5 s' worth (1,000). */
    controlFramesPerSecond?: number
}

const {controlFrames} = SHARD_CHANNEL.rates;

export const shardProtocolDefaults = {
    openTimeoutMs: 30_000,
    maxSessionsPerPeer: 2,
    maxStreamsPerSession: 8,
    controlFramesPerSecond: controlFrames.perSecond
};

type ResolvedOptions = Required<Omit<ShardProtocolOptions, 'host' | 'onReceipt'>> & Pick<ShardProtocolOptions, 'host' | 'onReceipt'>;

export class ShardSessionError extends Error {
    constructor(readonly code: 'refused' | 'disconnected' | 'timeout' | 'ended', message: string) {
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

/** A session this node coordinates, on a host peer. */
export class CoordinatorSession extends EventEmitter<{ended: [reason: string]}> {
    ended = false;

    constructor(readonly peerId: string, readonly id: number, private readonly channel: ShardChannel) {
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

    /** Gives the host a signed receipt for the work its layers did. */
    sendReceipt(receipt: ShardReceipt) {
        if (!this.ended)
            this.channel.sendControl({type: 'receipt', session: this.id, receipt});
    }
}

interface HostedState {
    request: SessionRequest,
    session: HostedSession | undefined,
    streams: Set<ChannelStream>,
    ended: boolean
}

/** The shard channel of one peer connection: this node's sessions on the peer and the peer's sessions here. */
class ShardChannel {
    private readonly channel: BoundedChannel<typeof SHARD_CHANNEL>;
    private readonly toHost: DataSender = (frame) => this.channel.send('toHost', frame);
    private readonly toCoordinator: DataSender = (frame) => this.channel.send('toCoordinator', frame);
    private readonly outgoing = new Map<number, {session: CoordinatorSession, ready: (error?: Error) => void, streams: Map<number, ChannelStream>}>();
    private readonly outgoingStreams = new Map<number, ChannelStream>();
    private readonly hosted = new Map<number, HostedState>();
    private readonly hostedStreams = new Map<number, ChannelStream>();
    private nextSessionId = 1;
    private nextStreamId = 1;
    closed = false;

    constructor(readonly peer: PeerConnection, private readonly options: ResolvedOptions) {
        const perSecond = options.controlFramesPerSecond;
        this.channel = new BoundedChannel(peer, SHARD_CHANNEL, {
            messages: {
                control: (message) => this.receiveControl(message),
                toHost: (data) => this.receiveData(data, this.hostedStreams),
                toCoordinator: (data) => this.receiveData(data, this.outgoingStreams)
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
        const session = new CoordinatorSession(this.peer.peerId, this.nextSessionId++, this);
        const ready = new Promise<void>((resolve, reject) => {
            this.outgoing.set(session.id, {session, streams: new Map(), ready: (error) => error ? reject(error) : resolve()});
        });
        this.sendControl({type: 'open', session: session.id, ...request});
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
        for (const stream of entry.streams.values())
            stream.finish(reason, false);
        if (tell && !this.closed)
            this.sendControl({type: 'end', session: sessionId, reason});
        entry.ready(error ?? new ShardSessionError('ended', reason));
        entry.session.ended = true;
        entry.session.emit('ended', reason);
    }

    private endHosted(sessionId: number, reason: string, tell: boolean) {
        const state = this.hosted.get(sessionId);
        if (state === undefined || state.ended)
            return;
        state.ended = true;
        this.hosted.delete(sessionId);
        for (const stream of state.streams)
            stream.finish(reason, false);
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
            case 'receipt': {
                const state = this.hosted.get(message.session);
                if (state?.session !== undefined) // a receipt for a session that ended meanwhile is the coordinator's loss
                    this.options.onReceipt?.(this.peer.peerId, state.request, message.receipt);
                return;
            }
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
        }
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
        const {type: _type, session: sessionId, ...request} = message;
        const state: HostedState = {request, session: undefined, streams: new Set(), ended: false};
        this.hosted.set(message.session, state);
        host.open(this.peer.peerId, request, {end: (reason) => this.endHosted(sessionId, reason, true)}).then((session) => {
            state.session = session;
            if (state.ended)
                session.end('the session ended while it opened');
            else
                this.sendControl({type: 'ready', session: sessionId});
        }, (error: Error) => {
            if (state.ended)
                return;
            state.ended = true;
            this.hosted.delete(sessionId);
            refuse(error.message.slice(0, 512));
        });
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

    constructor(options: ShardProtocolOptions = {}) {
        this.options = {...shardProtocolDefaults, ...options};
    }

    attach(peer: PeerConnection) {
        const channel = new ShardChannel(peer, this.options);
        this.channels.set(peer.peerId, channel);
        peer.once('closed', () => {
            if (this.channels.get(peer.peerId) === channel)
                this.channels.delete(peer.peerId);
        });
    }

    /** Asks a peer to host a stage; resolves once its rpc server is ready. */
    openSession(peerId: string, request: SessionRequest): Promise<CoordinatorSession> {
        const channel = this.channels.get(peerId);
        if (channel === undefined)
            return Promise.reject(new ShardSessionError('disconnected', `peer ${shortPeerId(peerId)} is not connected`));
        return channel.openSession(request);
    }
}
