import c from 'compact-encoding';
import Protomux, {type ProtomuxChannel, type ProtomuxMessage} from 'protomux';
import {MessageRateLimiter} from '../../../swarm/message-rate-limiter.js';
import type {PeerConnection} from '../../../swarm/peer-connection.js';
import {decodeFrame, encodeFrame, ProtocolViolation} from '../../../swarm/protocol/control-messages.js';
import {JOBS_PROTOCOL, jobMessageSchema, MAX_JOB_FRAME_BYTES, type JobMessage} from './job-messages.js';

/** New jobs a peer may submit per second (and in a burst); streamed tokens are not limited. */
const JOB_SUBMISSIONS_PER_SECOND = 20;
const JOB_SUBMISSION_BURST = 100;
const SUBMISSIONS = new Set<JobMessage['type']>(['generate', 'embed', 'receipt']);

/** The jobs channel of one peer connection, opened next to its control channel once the peer said hello. */
export class JobChannel {
    private readonly channel: ProtomuxChannel;
    private readonly message: ProtomuxMessage<Buffer>;
    private readonly limiter = new MessageRateLimiter(JOB_SUBMISSIONS_PER_SECOND, JOB_SUBMISSION_BURST);
    private readonly opened: Promise<boolean>;

    constructor(private readonly connection: PeerConnection, onMessage: (message: JobMessage) => void) {
        let markOpened: (opened: boolean) => void = () => undefined;
        this.opened = new Promise((resolve) => markOpened = resolve);
        const channel = Protomux.from(connection.stream).createChannel({
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
                    const message = decodeFrame(frame, jobMessageSchema, 'job message', MAX_JOB_FRAME_BYTES);
                    if (SUBMISSIONS.has(message.type) && !this.limiter.take())
                        throw new ProtocolViolation('flood: too many jobs');
                    connection.state?.seen(frame.length);
                    onMessage(message);
                } catch (error) {
                    connection.close(error instanceof ProtocolViolation
                        ? {kind: 'violation', message: error.message}
                        : {kind: 'local', message: (error as Error).message});
                }
            }
        });
        channel.open();
    }

    /** Resolves true once the peer opened its side too. */
    whenOpen() {
        return this.opened;
    }

    send(message: JobMessage) {
        if (this.channel.closed)
            return false;
        const frame = encodeFrame(message);
        if (this.connection.state)
            this.connection.state.bytesOut += frame.length;
        this.message.send(frame); // false only means "buffered": still sent
        return true;
    }
}
