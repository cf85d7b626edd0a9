import c from 'compact-encoding';
import type Protomux from 'protomux';
import type {ProtomuxChannel, ProtomuxMessage} from 'protomux';
import type {PeerState} from '../peer-state.js';
import {defineChannel, type ChannelSpec, type FrameSpec, type Incoming, type Outgoing, type RateLimit} from './channel-spec.js';
import {ProtocolViolation, type CloseReason} from './errors.js';
import {checkFrameSize, decodeFrame, encodeFrame} from './frame-codec.js';
import {MessageRateLimiter} from './message-rate-limiter.js';

/** The connection a channel runs on (a `PeerConnection`). */
export interface ChannelPeer {
    readonly mux: Protomux,
    /** Set once the peer's hello passed: each frame it sends counts as seen there, each sent as bytes out. */
    readonly state: PeerState | undefined,
    close(reason: CloseReason): void
}

type AnySpec = ChannelSpec<string, Record<string, FrameSpec>, unknown>;
type MessagesOf<S extends AnySpec> = S['messages'];
type HandshakeOf<S extends AnySpec> = S extends ChannelSpec<string, Record<string, FrameSpec>, infer H> ? H : never;
type RateNameOf<S extends AnySpec> = keyof S['rates'] & string;

export interface ChannelHandlers<S extends AnySpec> {
    /** Each message's handler, by its name in the spec, with the checked message and the frame it came in. */
    messages: {[K in keyof MessagesOf<S>]: (message: Incoming<MessagesOf<S>[K]>, frame: Uint8Array) => void},
    /** Both sides opened the channel; with the peer's checked handshake where the spec has one. */
    onopen?: (handshake: HandshakeOf<S>, frame: Uint8Array) => void,
    /** The channel closed: by the peer, or with the connection. */
    onclose?: () => void,
    /** The connection's write buffer emptied after a send returned false. */
    ondrain?: () => void
}

export interface BoundedChannelOptions<S extends AnySpec> {
    /** This side's handshake, where the spec has one. */
    handshake?: HandshakeOf<S>,
    /** Limits in place of the spec's (a node's settings); defaults to the spec's. */
    rates?: Partial<Record<RateNameOf<S>, RateLimit>>
}

/**
 * One protocol's channel on a peer connection, opened from its spec: every frame the peer sends is held to the
 * spec before a handler sees it, and a broken rule closes the connection (docs/peer-protocol.md, "Adding a protocol").
 */
export class BoundedChannel<S extends AnySpec> {
    /** True once both sides opened the channel (and the peer's handshake passed), false if it closed first. */
    readonly opened: Promise<boolean>;
    /** The size of this side's handshake frame (0 without one). */
    readonly handshakeBytes: number;
    private readonly channel: ProtomuxChannel;
    private readonly senders = new Map<string, ProtomuxMessage<Uint8Array>>();
    private readonly limiters = new Map<string, MessageRateLimiter>();
    private readonly rates: Record<string, RateLimit>;

    constructor(private readonly peer: ChannelPeer, private readonly spec: S, handlers: ChannelHandlers<S>, options: BoundedChannelOptions<S> = {}) {
        // A spec is checked where it is defined; only limits given here are new (a protocol's own settings
        // are better checked once, in its constructor, than on every connection).
        this.rates = options.rates === undefined ? spec.rates : defineChannel({...spec, rates: {...spec.rates, ...options.rates}}).rates;
        for (const [name, rate] of Object.entries(this.rates))
            this.limiters.set(name, new MessageRateLimiter(rate.perSecond, rate.burst));
        let markOpened: (opened: boolean) => void = () => undefined;
        this.opened = new Promise((resolve) => markOpened = resolve);
        const {handshake} = spec;
        const checkHandshake = handshake && this.checker(handshake);
        const channel = peer.mux.createChannel({
            protocol: spec.protocol,
            ...(spec.id && {id: spec.id}),
            ...(handshake && {handshake: c.raw}),
            onopen: (frame) => this.guard(() => {
                if (checkHandshake) {
                    const bytes = frame as Uint8Array;
                    handlers.onopen?.(checkHandshake(bytes) as HandshakeOf<S>, bytes);
                } else {
                    handlers.onopen?.(undefined as HandshakeOf<S>, new Uint8Array(0));
                }
                markOpened(true);
            }),
            onclose: () => {
                markOpened(false);
                handlers.onclose?.();
            },
            ...(handlers.ondrain && {ondrain: handlers.ondrain})
        });
        if (channel === null)
            throw new Error(`duplicate ${spec.protocol} channel`);
        this.channel = channel;
        for (const [name, frameSpec] of Object.entries(spec.messages)) {
            const handle = handlers.messages[name] as (message: unknown, frame: Uint8Array) => void;
            const check = this.checker(frameSpec);
            this.senders.set(name, channel.addMessage({encoding: c.raw, onmessage: (frame) => this.guard(() => handle(check(frame), frame))}));
        }
        if (handshake === undefined) {
            this.handshakeBytes = 0;
            channel.open();
        } else {
            if (options.handshake === undefined)
                throw new Error(`${spec.protocol}: the spec has a handshake, and this side gave none`);
            const frame = encodeFrame(options.handshake as object);
            this.handshakeBytes = frame.length;
            channel.open(frame);
        }
    }

    get closed() {
        return this.channel.closed;
    }

    /** Sends a message (false: the channel closed, or the connection buffered it, still to be sent). */
    send<K extends keyof MessagesOf<S> & string>(name: K, message: Outgoing<MessagesOf<S>[K]>): boolean {
        if (this.channel.closed)
            return false;
        const frame = 'schema' in this.spec.messages[name]! ? encodeFrame(message as object) : message as Uint8Array;
        if (this.peer.state)
            this.peer.state.bytesOut += frame.length;
        return this.senders.get(name)!.send(frame);
    }

    /**
     * What holds a message's frames to its spec: the limits every frame draws on, the size, the decoding, then the
     * limits of the message's type, and the frame counts as seen.
     */
    private checker<T>(spec: FrameSpec<T>): (frame: Uint8Array) => T {
        const everyFrame = spec.rates.filter((name) => this.rates[name]!.types === undefined);
        const byType = spec.rates.filter((name) => this.rates[name]!.types !== undefined);
        const decode = 'schema' in spec
            ? (frame: Uint8Array) => decodeFrame(frame, spec.schema, spec.what, spec.maxBytes)
            : (frame: Uint8Array) => {
                checkFrameSize(frame, spec.maxBytes, spec.what);
                return spec.decode(frame);
            };
        return (frame) => {
            for (const name of everyFrame)
                this.take(name, spec, frame.byteLength);
            const message = decode(frame);
            for (const name of byType) {
                if (this.rates[name]!.types!.includes((message as {type: string}).type))
                    this.take(name, spec, frame.byteLength);
            }
            this.peer.state?.seen(frame.byteLength);
            return message;
        };
    }

    private take(name: string, spec: FrameSpec, bytes: number) {
        const rate = this.rates[name]!;
        if (!this.limiters.get(name)!.take(rate.unit === 'byte' ? bytes : 1))
            throw new ProtocolViolation(`flood: ${spec.what}s over the ${name} limit of ${this.spec.protocol} (${rate.perSecond}/s, burst ${rate.burst})`, 'FLOOD');
    }

    /** A broken rule closes the connection as a violation (docs/peer-protocol.md, "Control channel"); the process stays up. */
    private guard(handle: () => void) {
        try {
            handle();
        } catch (error) {
            this.peer.close(error instanceof ProtocolViolation
                ? {kind: 'violation', message: error.message}
                : {kind: 'local', message: (error as Error).message});
        }
    }
}
