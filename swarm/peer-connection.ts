import {EventEmitter} from 'node:events';
import type {NoiseSecretStream} from 'hyperswarm';
import {LRUCache} from 'lru-cache';
import Protomux from 'protomux';
import type {Capabilities} from './capabilities.js';
import {BoundedChannel} from './channel/bounded-channel.js';
import {ProtocolViolation, type CloseReason} from './channel/errors.js';
import type {ConnectionOrigin} from './connection-limits.js';
import {verifySecretProof, type NetworkSpec} from './network-topic.js';
import {PeerState} from './peer-state.js';
import {CONTROL_CHANNEL, PROTOCOL_VERSION, type ControlMessage, type Hello} from './protocol/control-messages.js';

/** Pings awaiting their pong, the oldest forgotten first; an unknown pong is out of order. */
export const MAX_OUTSTANDING_PINGS = 16;
/** Hyperswarm's own reasons for closing a connection (it sets no code): not the peer's fault. */
const SWARM_ERROR_MESSAGES = new Set(['Duplicate connection', 'Swarm has been destroyed', 'Peer is firewalled']);
/** Errors of the network, not of the peer: no ban for these. */
const NETWORK_ERROR_CODES = new Set(['ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ECONNREFUSED', 'ERR_STREAM_PREMATURE_CLOSE',
    'CHANNEL_CLOSED', 'CHANNEL_DESTROYED', 'STREAM_DESTROYED', 'HOLEPUNCH_ABORTED', 'PEER_NOT_FOUND']);

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
    helloTimeoutMs: number,
    /** How the connection came to be; defaults to the network's topic. */
    origin?: ConnectionOrigin
}

/**
 * The control channel over one Noise-encrypted Hyperswarm connection (docs/peer-protocol.md, "Control channel"):
 * hello, capability updates and ping/pong, on a `BoundedChannel`; a peer that breaks the rules is closed with a
 * `violation` for the caller to ban.
 */
export class PeerConnection extends EventEmitter<PeerConnectionEvents> {
    readonly peerId: string;
    /** The connection's channel multiplexer, where protocols attach their channels. */
    readonly mux: Protomux;
    readonly openedAt = Date.now();
    readonly origin: ConnectionOrigin;
    state: PeerState | undefined;
    private readonly channel: BoundedChannel<typeof CONTROL_CHANNEL>;
    /** Nonce → when it was sent; `peek` only, so the oldest ping is the one forgotten. */
    private readonly pings = new LRUCache<number, number>({max: MAX_OUTSTANDING_PINGS});
    private nextNonce = 1;
    private closeReason: CloseReason | undefined;
    private readonly helloTimer: NodeJS.Timeout;

    constructor(readonly stream: NoiseSecretStream, private readonly options: PeerConnectionOptions) {
        super();
        this.peerId = stream.remotePublicKey.toString('hex');
        this.origin = options.origin ?? {kind: 'network'};
        stream.on('error', (error: Error & {code?: string}) => {
            const network = (error.code !== undefined && NETWORK_ERROR_CODES.has(error.code)) || SWARM_ERROR_MESSAGES.has(error.message);
            this.close(network ? {kind: 'network', message: error.message} : {kind: 'violation', message: `stream error: ${error.message}`});
        });
        stream.on('close', () => this.close({kind: 'network', message: 'connection closed'}));

        this.mux = Protomux.from(stream);
        this.channel = new BoundedChannel(this, CONTROL_CHANNEL, {
            onopen: (hello, frame) => this.receiveHello(hello, frame),
            onclose: () => this.close({kind: 'network', message: 'control channel closed'}),
            messages: {control: (message) => this.receive(message)}
        }, {handshake: options.hello()});
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
        this.channel.send('control', message);
    }

    private receiveHello(hello: Hello, frame: Uint8Array) {
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
        this.state.bytesOut += this.channel.handshakeBytes;
        this.emit('ready');
        this.ping(); // an RTT right away, not at the next ping round
    }

    private receive(message: ControlMessage) {
        if (this.state === undefined)
            throw new ProtocolViolation('message before hello');
        switch (message.type) {
            case 'ping':
                this.send({type: 'pong', nonce: message.nonce});
                return;
            case 'pong': {
                const sentAt = this.pings.peek(message.nonce);
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
