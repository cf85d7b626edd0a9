import {EventEmitter} from 'node:events';
import {BoundedChannel} from '../../../swarm/channel/bounded-channel.js';
import {defineChannel} from '../../../swarm/channel/channel-spec.js';
import type {CloseReason} from '../../../swarm/channel/errors.js';
import type {PeerConnection} from '../../../swarm/peer-connection.js';
import type {PeerProtocol} from '../../../swarm/peer-protocol.js';
import {JOBS_CHANNEL, MAX_JOB_FRAME_BYTES, type JobMessage} from './job-messages.js';

const {rates} = JOBS_CHANNEL;

export interface JobsProtocolOptions {
    /** New jobs (and receipts) a peer may submit per second; defaults to 20. */
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

/** The rates are `JOBS_CHANNEL`'s. */
export const jobsProtocolDefaults = {
    submissionsPerSecond: rates.submissions.perSecond,
    submissionBurst: rates.submissions.burst,
    framesPerSecond: rates.frames.perSecond,
    frameBurst: rates.frames.burst,
    bytesPerSecond: rates.bytes.perSecond,
    byteBurst: rates.bytes.burst,
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
    private readonly channel: BoundedChannel<typeof JOBS_CHANNEL>;

    constructor(readonly peer: PeerConnection, private readonly options: Required<JobsProtocolOptions>, spec: typeof JOBS_CHANNEL,
        onMessage: (message: JobMessage) => void) {
        this.channel = new BoundedChannel(peer, spec, {messages: {job: onMessage}});
    }

    get opened() {
        return this.channel.opened;
    }

    send(message: JobMessage): SendOutcome {
        if (this.channel.closed)
            return 'disconnected';
        if (this.peer.backlogBytes > this.options.maxSendBacklogBytes)
            return 'backlogged';
        this.channel.send('job', message); // false only means "buffered": still sent
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
    /** JOBS_CHANNEL with this node's limits, checked once: a bad limit fails here, not on each connection. */
    private readonly spec: typeof JOBS_CHANNEL;

    constructor(options: JobsProtocolOptions = {}) {
        super();
        this.options = {...jobsProtocolDefaults, ...options};
        const {framesPerSecond, frameBurst, bytesPerSecond, byteBurst, submissionsPerSecond, submissionBurst} = this.options;
        this.spec = defineChannel({...JOBS_CHANNEL, rates: {
            frames: {...rates.frames, perSecond: framesPerSecond, burst: frameBurst},
            bytes: {...rates.bytes, perSecond: bytesPerSecond, burst: byteBurst},
            submissions: {...rates.submissions, perSecond: submissionsPerSecond, burst: submissionBurst}
        }});
    }

    attach(peer: PeerConnection) {
        const {peerId} = peer;
        const channel = new JobChannel(peer, this.options, this.spec, (message) => this.emit('message', peerId, message));
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

    /**
     * The peer's connection counts as in use while `active()` holds: it is neither closed as idle nor to make room
     * for another (docs/architecture.md, "Swarm").
     */
    holdWhile(peerId: string, reason: string, active: () => boolean) {
        this.channels.get(peerId)?.peer.state?.holdWhile(reason, active);
    }

    /** Sends once the peer's side of the channel is open. */
    async send(peerId: string, message: JobMessage): Promise<SendOutcome> {
        const channel = this.channels.get(peerId);
        if (channel === undefined || !await channel.opened)
            return 'disconnected';
        return channel.send(message);
    }
}
