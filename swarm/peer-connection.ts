import {EventEmitter} from 'node:events';
import c from 'compact-encoding';
import type {NoiseSecretStream} from 'hyperswarm';
import Protomux, {type ProtomuxMessage} from 'protomux';
import type {Capabilities} from './capabilities.js';
import {MessageRateLimiter} from './message-rate-limiter.js';
import {verifySecretProof, type NetworkSpec} from './network-topic.js';
import {PeerState} from './peer-state.js';
import {
    CONTROL_PROTOCOL, controlMessageSchema, decodeFrame, encodeFrame, helloSchema, PROTOCOL_VERSION, ProtocolViolation,
    type ControlMessage, type Hello
} from './protocol/control-messages.js';

/** Sustained control messages per second a peer may send, and its burst. */
const MESSAGES_PER_SECOND = 20;
const MESSAGE_BURST = 100;
/** Pings awaiting their pong; an unknown pong is out of order. */
const MAX_OUTSTANDING_PINGS = 16;
/** Hyperswarm's own reasons for closing a connection (it sets no code): not the peer's fault. */
const SWARM_ERROR_MESSAGES = new Set(['Duplicate connection', 'Swarm has been destroyed', 'Peer is firewalled']);
/** Errors of the network, not of the peer: no ban for these. */
const NETWORK_ERROR_CODES = new Set(['ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ECONNREFUSED', 'ERR_STREAM_PREMATURE_CLOSE',
    'CHANNEL_CLOSED', 'CHANNEL_DESTROYED', 'STREAM_DESTROYED', 'HOLEPUNCH_ABORTED', 'PEER_NOT_FOUND']);

export type CloseReason =
    | {kind: 'violation', message: string}
    | {kind: 'incompatible', message: string}
    | {kind: 'network', message: string}
    | {kind: 'local', message: string};

export interface PeerConnectionEvents {
    ready: [],
    capabilities: [],
    closed: [reason: CloseReason]
}

export interface PeerConnectionOptions {
    network: NetworkSpec,
    /** Our hello, built when the channel opens (capabilities change over time). */
    hello: () => Hello,
    /** Proof for a private network, bound to this session. */
    expectProof: boolean,
    /**
     * A peer that connects but never says hello is dropped, and Hyperswarm retries: some connections between
     * processes on one host open on one side only (docs/architecture.md, "Swarm").
     */
    helloTimeoutMs: number
}

/**
 * The control channel over one Noise-encrypted Hyperswarm connection: hello (version, network proof,
 * capabilities), capability updates and ping/pong. Every frame from the peer is size-bounded, rate-limited
 * and schema-checked; a peer that breaks the rules is closed with a `violation` for the caller to ban.
 */
export class PeerConnection extends EventEmitter<PeerConnectionEvents> {
    readonly peerId: string;
    /** The connection's channel multiplexer, where protocols attach their channels. */
    readonly mux: Protomux;
    state: PeerState | undefined;
    private readonly message: ProtomuxMessage<Uint8Array>;
    private readonly limiter = new MessageRateLimiter(MESSAGES_PER_SECOND, MESSAGE_BURST);
    private readonly pings = new Map<number, number>();
    private nextNonce = 1;
    private closeReason: CloseReason | undefined;
    private readonly helloTimer: NodeJS.Timeout;
    private helloBytes = 0;

    constructor(readonly stream: NoiseSecretStream, private readonly options: PeerConnectionOptions) {
        super();
        this.peerId = stream.remotePublicKey.toString('hex');
        stream.on('error', (error: Error & {code?: string}) => {
            const network = (error.code !== undefined && NETWORK_ERROR_CODES.has(error.code)) || SWARM_ERROR_MESSAGES.has(error.message);
            this.close(network ? {kind: 'network', message: error.message} : {kind: 'violation', message: `stream error: ${error.message}`});
        });
        stream.on('close', () => this.close({kind: 'network', message: 'connection closed'}));

        this.mux = Protomux.from(stream);
        const channel = this.mux.createChannel({
            protocol: CONTROL_PROTOCOL,
            handshake: c.raw,
            onopen: (handshake) => this.guard(() => this.receiveHello(handshake as Uint8Array)),
            onclose: () => this.close({kind: 'network', message: 'control channel closed'})
        });
        if (channel === null)
            throw new Error('duplicate control channel');
        this.message = channel.addMessage({encoding: c.raw, onmessage: (frame) => this.guard(() => this.receive(frame))});
        const hello = encodeFrame(options.hello());
        this.helloBytes = hello.length;
        channel.open(hello);
        this.helloTimer = setTimeout(() => this.close({kind: 'network', message: 'no hello in time'}), options.helloTimeoutMs);
    }

    /** Bytes queued for this peer that the network has not taken yet: grows while the peer reads slowly or not at all. */
    get backlogBytes() {
        return this.stream._writableState.buffered;
    }

    get ready() {
        return this.state !== undefined && this.closeReason === undefined;
    }

    ping() {
        if (!this.ready)
            return;
        const nonce = this.nextNonce++;
        this.pings.set(nonce, performance.now());
        if (this.pings.size > MAX_OUTSTANDING_PINGS)
            this.pings.delete(this.pings.keys().next().value!);
        this.send({type: 'ping', nonce});
    }

    sendCapabilities(capabilities: Capabilities) {
        if (this.ready)
            this.send({type: 'capabilities', capabilities});
    }

    close(reason: CloseReason) {
        if (this.closeReason !== undefined)
            return;
        this.closeReason = reason;
        clearTimeout(this.helloTimer);
        this.stream.destroy();
        this.emit('closed', reason);
    }

    private send(message: ControlMessage) {
        const frame = encodeFrame(message);
        if (this.state)
            this.state.bytesOut += frame.length;
        this.message.send(frame);
    }

    /** Anything the peer sends that breaks the protocol closes the connection, and only it. */
    private guard(handle: () => void) {
        try {
            handle();
        } catch (error) {
            const violation = error instanceof ProtocolViolation;
            this.close({kind: violation ? 'violation' : 'local', message: (error as Error).message});
        }
    }

    private receiveHello(frame: Uint8Array) {
        if (!this.limiter.take())
            throw new ProtocolViolation('flood');
        const hello = decodeFrame(frame, helloSchema, 'hello');
        if (hello.protocol !== PROTOCOL_VERSION) {
            this.close({kind: 'incompatible', message: `peer speaks protocol ${hello.protocol} (software ${hello.software}), we speak ${PROTOCOL_VERSION}`});
            return;
        }
        if (hello.network !== this.options.network.name)
            throw new ProtocolViolation(`peer is on network "${hello.network}"`);
        if (this.options.expectProof) {
            const proven = hello.proof !== null && verifySecretProof(this.options.network.secret!, this.stream.handshakeHash,
                this.stream.remotePublicKey, Buffer.from(hello.proof, 'hex'));
            if (!proven)
                throw new ProtocolViolation('peer does not know the network secret');
        }
        clearTimeout(this.helloTimer);
        this.state = new PeerState(this.peerId, hello.software, hello.capabilities);
        this.state.seen(frame.length);
        this.state.bytesOut += this.helloBytes;
        this.emit('ready');
        this.ping(); // an RTT right away, not at the next ping round
    }

    private receive(frame: Uint8Array) {
        if (!this.limiter.take())
            throw new ProtocolViolation('flood: too many messages');
        if (this.state === undefined)
            throw new ProtocolViolation('message before hello');
        const message = decodeFrame(frame, controlMessageSchema, 'control message');
        this.state.seen(frame.length);
        switch (message.type) {
            case 'ping':
                this.send({type: 'pong', nonce: message.nonce});
                return;
            case 'pong': {
                const sentAt = this.pings.get(message.nonce);
                if (sentAt === undefined)
                    throw new ProtocolViolation(`pong for unknown ping ${message.nonce}`);
                this.pings.delete(message.nonce);
                this.state.rtt.addSample(performance.now() - sentAt);
                return;
            }
            case 'capabilities':
                this.state.capabilities = message.capabilities;
                this.emit('capabilities');
                return;
        }
    }
}
