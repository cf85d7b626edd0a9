import type {z} from 'zod';

/**
 * A channel's protocol as data: what docs/peer-protocol.md's "Adding a protocol" asks of every channel of
 * strongdoge's own, in fields a spec cannot leave out. `BoundedChannel` opens a channel from one and holds the
 * peer to it; test/peer-protocol-docs.test.ts holds the docs' limits to the specs.
 */

/** A token bucket (`MessageRateLimiter`): a peer may burst, but not sustain more than `perSecond`. */
export interface RateLimit {
    /** Tokens a second, sustained. */
    perSecond: number,
    /** Tokens a peer may spend at once. */
    burst: number,
    /** What a frame costs: `frame`, one token (defaults to it), or `byte`, one per byte of the frame. */
    unit?: 'frame' | 'byte',
    /**
     * Only messages whose `type` is listed draw on it, checked once decoded; defaults to every frame of a message
     * that names the limit, checked before anything reads it.
     */
    types?: readonly string[]
}

interface FrameRules<R extends string> {
    /** Names the frame in violations ("job message"). */
    what: string,
    /** A larger frame is a violation, checked before anything reads it. */
    maxBytes: number,
    /** The limits of the spec's `rates` each frame draws on; `[]` says on purpose that none does (say why). */
    rates: readonly R[]
}

/** UTF-8 JSON checked against a zod schema (`frame-codec.ts`). */
export interface JsonFrameSpec<T, R extends string = string> extends FrameRules<R> {
    schema: z.ZodType<T>
}

/** Bytes of the protocol's own layout: `decode` checks them, throwing a `ProtocolViolation`. */
export interface BinaryFrameSpec<T, R extends string = string> extends FrameRules<R> {
    decode(frame: Uint8Array): T
}

export type FrameSpec<T = unknown, R extends string = string> = JsonFrameSpec<T, R> | BinaryFrameSpec<T, R>;

export interface ChannelSpec<
    R extends string = string,
    M extends Record<string, FrameSpec<unknown, R>> = Record<string, FrameSpec<unknown, R>>,
    H = unknown
> {
    /** The protomux protocol name, unique on a connection. */
    protocol: string,
    /** The protomux channel id, for a protocol with several channels per connection; defaults to none. */
    id?: Buffer,
    /** The rate limits, by name: every frame's `rates` names some of them. */
    rates: {readonly [K in R]: RateLimit},
    /** The open handshake, sent by both sides (the control channel's hello); defaults to none. */
    handshake?: JsonFrameSpec<H, R>,
    /** The protomux messages, numbered on the wire in the order they are listed here. */
    messages: M
}

/** A message's type as its handler receives it. */
export type Incoming<F> = F extends JsonFrameSpec<infer T> ? T : F extends BinaryFrameSpec<infer T> ? T : never;
/** What sending a message takes: the message for a JSON frame, the encoded bytes for a binary one. */
export type Outgoing<F> = F extends JsonFrameSpec<infer T> ? T : Uint8Array;

/**
 * A channel spec, checked: the compiler holds each frame's `rates` to the spec's, this what no type can say (a
 * bound of at least a byte, rates that let a frame through at all).
 */
export function defineChannel<const R extends string, const M extends Record<string, FrameSpec<unknown, NoInfer<R>>>, H = undefined>(
    spec: ChannelSpec<R, M, H>
): ChannelSpec<R, M, H> {
    const frames: [string, FrameSpec<unknown, R>][] = Object.entries(spec.messages);
    if (spec.handshake)
        frames.push(['handshake', spec.handshake]);
    if (frames.length === 0)
        throw new Error(`${spec.protocol}: a channel without messages`);
    for (const [name, frame] of frames) {
        if (!Number.isSafeInteger(frame.maxBytes) || frame.maxBytes < 1)
            throw new Error(`${spec.protocol} ${name}: maxBytes must be a whole number of bytes`);
        for (const rateName of frame.rates) {
            const rate = spec.rates[rateName];
            if (!(rate.perSecond > 0) || !(rate.burst >= 1))
                throw new Error(`${spec.protocol} ${name}: rate ${rateName} lets nothing through`);
            if (rate.unit === 'byte' && rate.burst < frame.maxBytes)
                throw new Error(`${spec.protocol} ${name}: rate ${rateName}'s burst is less than one largest frame`);
            if (rate.types !== undefined && !('schema' in frame))
                throw new Error(`${spec.protocol} ${name}: rate ${rateName} counts message types, which a binary frame has not`);
        }
    }
    return spec;
}
