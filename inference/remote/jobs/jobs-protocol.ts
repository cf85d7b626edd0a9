import {EventEmitter} from 'node:events';
import c from 'compact-encoding';
import type {ProtomuxChannel, ProtomuxMessage} from 'protomux';
import {MessageRateLimiter} from '../../../swarm/message-rate-limiter.js';
import type {CloseReason, PeerConnection} from '../../../swarm/peer-connection.js';
import type {PeerProtocol} from '../../../swarm/peer-protocol.js';
import {decodeFrame, encodeFrame, ProtocolViolation} from '../../../swarm/protocol/control-messages.js';
import {JOBS_PROTOCOL, jobMessageSchema, MAX_JOB_FRAME_BYTES, type JobMessage} from './job-messages.js';

const SUBMISSIONS = new Set<JobMessage['type']>(['generate', 'embed', 'receipt']);

export interface JobsProtocolOptions {
    /** New jobs a peer may submit per second; defaults to 20. */
    submissionsPerSecond?: number,
    /** …and in a burst; defaults to 100. */
    submissionBurst?: number,
    /** Frames of any kind a peer may send per second, streamed tokens included; defaults to 20,000 (a fast GPU streaming several jobs sends a frame per token of each). */
    framesPerSecond?: number,
    /** …and in a burst; defaults to 40,000. */
    frameBurst?: number,
    /** Bytes a peer may send per second on this channel; defaults to 8 MiB. */
    bytesPerSecond?: number,
    /** …and in a burst; defaults to 16 MiB (a few of the largest frames). */
    byteBurst?: number,
    /**
     * Bytes that may wait to be sent to one peer before sends to it fail: a slow or stalled peer must not make
     * this node buffer without bound. Defaults to 4 MiB (one largest frame).
     */
    maxSendBacklogBytes?: number
}

export const jobsProtocolDefaults = {
    submissionsPerSecond: 20,
    submissionBurst: 100,
    framesPerSecond: 20_000,
    frameBurst: 40_000,
    bytesPerSecond: 8 * 1024 * 1024,
    byteBurst: 16 * 1024 * 1024,
    maxSendBacklogBytes: MAX_JOB_FRAME_BYTES
};

/** Why a frame was not sent. */
export type SendOutcome = 'sent' | 'disconnected' | 'backlogged';

export interface JobsProtocolEvents {
    message: [peerId: string, message: JobMessage],
    /** A peer's jobs channel closed (its connection went away). */
    peerLeft: [peerId: string, reason: CloseReason]
}

/** The jobs channel of one peer connection. */
class JobChannel {
    private readonly channel: ProtomuxChannel;
    private readonly message: ProtomuxMessage<Uint8Array>;
    private readonly submissions: MessageRateLimiter;
    private readonly frames: MessageRateLimiter;
    private readonly bytes: MessageRateLimiter;
    readonly opened: Promise<boolean>;

    constructor(readonly peer: PeerConnection, private readonly options: Required<JobsProtocolOptions>, onMessage: (message: JobMessage) => void) {
        this.submissions = new MessageRateLimiter(options.submissionsPerSecond, options.submissionBurst);
        this.frames = new MessageRateLimiter(options.framesPerSecond, options.frameBurst);
        this.bytes = new MessageRateLimiter(options.bytesPerSecond, options.byteBurst);
        let markOpened: (opened: boolean) => void = () => undefined;
        this.opened = new Promise((resolve) => markOpened = resolve);
        const channel = peer.mux.createChannel({
            protocol: JOBS_PROTOCOL,
            onopen: () => markOpened(true),
            onclose: () => markOpened(false)
        });
        if (channel === null)
            throw new Error('duplicate jobs channel');
        this.channel = channel;
        this.message = channel.addMessage({
            encoding: c.raw,
            onmessage: (frame) => {
                try {
                    if (!this.frames.take() || !this.bytes.take(frame.byteLength))
                        throw new ProtocolViolation('flood: too many job frames or bytes');
                    const message = decodeFrame(frame, jobMessageSchema, 'job message', MAX_JOB_FRAME_BYTES);
                    if (SUBMISSIONS.has(message.type) && !this.submissions.take())
                        throw new ProtocolViolation('flood: too many jobs');
                    peer.state?.seen(frame.length);
                    onMessage(message);
                } catch (error) {
                    peer.close(error instanceof ProtocolViolation
                        ? {kind: 'violation', message: error.message}
                        : {kind: 'local', message: (error as Error).message});
                }
            }
        });
        channel.open();
    }

    send(message: JobMessage): SendOutcome {
        if (this.channel.closed)
            return 'disconnected';
        if (this.peer.backlogBytes > this.options.maxSendBacklogBytes)
            return 'backlogged';
        const frame = encodeFrame(message);
        if (this.peer.state)
            this.peer.state.bytesOut += frame.length;
        this.message.send(frame); // false only means "buffered": still sent
        return 'sent';
    }
}

/**
 * Whole requests served by peers (docs/peer-protocol.md, "Jobs channel"): attaches a jobs channel to every peer
 * connection; the requester and the provider send and receive through it.
 */
export class JobsProtocol extends EventEmitter<JobsProtocolEvents> implements PeerProtocol {
    private readonly channels = new Map<string, JobChannel>();
    private readonly options: Required<JobsProtocolOptions>;

    constructor(options: JobsProtocolOptions = {}) {
        super();
        this.options = {...jobsProtocolDefaults, ...options};
    }

    attach(peer: PeerConnection) {
        const {peerId} = peer;
        const channel = new JobChannel(peer, this.options, (message) => this.emit('message', peerId, message));
        this.channels.set(peerId, channel);
        peer.once('closed', (reason) => {
            if (this.channels.get(peerId) === channel)
                this.channels.delete(peerId);
            this.emit('peerLeft', peerId, reason);
        });
    }

    /**
     * A peer broke the jobs protocol in a way only the requester or the provider can see (a frame for a job it does
     * not have, a reply beyond the request's limits): it is disconnected and banned like any other violation.
     */
    violation(peerId: string, reason: string) {
        this.channels.get(peerId)?.peer.close({kind: 'violation', message: reason});
    }

    /** Sends once the peer's side of the channel is open. */
    async send(peerId: string, message: JobMessage): Promise<SendOutcome> {
        const channel = this.channels.get(peerId);
        if (channel === undefined || !await channel.opened)
            return 'disconnected';
        return channel.send(message);
    }
}
