import type {z} from 'zod';
import {ProtocolViolation} from './errors.js';

/** A JSON frame's bound unless its channel's spec gives another: the control channel's (docs/peer-protocol.md, "Limits"). */
export const MAX_FRAME_BYTES = 256 * 1024;

/** A JSON frame: UTF-8 JSON of the message (docs/peer-protocol.md, "Control channel"). */
export function encodeFrame(value: object): Buffer {
    return Buffer.from(JSON.stringify(value), 'utf8');
}

/** A frame over its bound is a violation, before anything reads it. */
export function checkFrameSize(frame: Uint8Array, maxBytes: number, what: string) {
    if (frame.byteLength > maxBytes)
        throw new ProtocolViolation(`${what} of ${frame.byteLength} bytes exceeds ${maxBytes}`, 'FRAME_TOO_LARGE');
}

/** Checks a JSON frame's size, then parses and schema-checks it; anything else is a {@link ProtocolViolation}. */
export function decodeFrame<T>(frame: Uint8Array, schema: z.ZodType<T>, what: string, maxBytes = MAX_FRAME_BYTES): T {
    checkFrameSize(frame, maxBytes, what);
    let json: unknown;
    try {
        json = JSON.parse(Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength).toString('utf8'));
    } catch {
        throw new ProtocolViolation(`${what} is not JSON`, 'FRAME_NOT_JSON');
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        throw new ProtocolViolation(`${what} is malformed at ${issue.path.join('.') || 'top level'}: ${issue.message}`, 'FRAME_MALFORMED');
    }
    return parsed.data;
}
