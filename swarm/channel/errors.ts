/** What a peer did wrong, for logs and tests; the message says it in words. */
export type ViolationCode =
    /** A frame over its channel's size bound. */
    | 'FRAME_TOO_LARGE'
    /** A JSON frame that does not parse. */
    | 'FRAME_NOT_JSON'
    /** A frame its schema or decoder refuses. */
    | 'FRAME_MALFORMED'
    /** More frames, bytes or messages of a kind than a rate limit allows. */
    | 'FLOOD'
    /** A well-formed frame that breaks the protocol's rules (out of order, unknown id, twice). */
    | 'PROTOCOL_RULE';

/**
 * A peer broke a protocol: the connection it came on is closed and the peer banned (docs/peer-protocol.md,
 * "Control channel"). Thrown inside a channel's handlers, where the channel catches it.
 */
export class ProtocolViolation extends Error {
    constructor(message: string, readonly code: ViolationCode = 'PROTOCOL_RULE') {
        super(message);
        this.name = 'ProtocolViolation';
    }
}

/** Why a peer connection closed: only a `violation` bans the peer. */
export type CloseReason =
    | {kind: 'violation', message: string}
    | {kind: 'incompatible', message: string}
    | {kind: 'network', message: string}
    | {kind: 'local', message: string};
