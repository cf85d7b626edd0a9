import {z} from 'zod';
import {capabilitiesSchema} from '../capabilities.js';

/** The control channel: the first protomux channel of every peer connection. */

export const CONTROL_PROTOCOL = 'strongdoge/control';
/** Bumped on incompatible changes; peers with another major version are disconnected. */
export const PROTOCOL_VERSION = 2;
/** No control frame is larger: bigger is hostile. */
export const MAX_FRAME_BYTES = 256 * 1024;

export const helloSchema = z.object({
    protocol: z.number().int().positive(),
    software: z.string().max(32),
    network: z.string().max(128),
    /** Hex HMAC proving the network secret (private networks), else null. */
    proof: z.string().regex(/^[0-9a-f]{64}$/).nullable(),
    capabilities: capabilitiesSchema
});

export const controlMessageSchema = z.discriminatedUnion('type', [
    z.object({type: z.literal('capabilities'), capabilities: capabilitiesSchema}),
    z.object({type: z.literal('ping'), nonce: z.number().int().nonnegative()}),
    z.object({type: z.literal('pong'), nonce: z.number().int().nonnegative()})
]);

export type Hello = z.infer<typeof helloSchema>;
export type ControlMessage = z.infer<typeof controlMessageSchema>;

/** A peer broke the protocol: it is disconnected and banned. */
export class ProtocolViolation extends Error {
    constructor(message: string) {
        super(message);
        this.name = 'ProtocolViolation';
    }
}

export function encodeFrame(value: object): Buffer {
    return Buffer.from(JSON.stringify(value), 'utf8');
}

export function decodeFrame<T>(frame: Uint8Array, schema: z.ZodType<T>, what: string, maxBytes = MAX_FRAME_BYTES): T {
    if (frame.length > maxBytes)
        throw new ProtocolViolation(`${what} of ${frame.length} bytes exceeds ${maxBytes}`);
    let json: unknown;
    try {
        json = JSON.parse(Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength).toString('utf8'));
    } catch {
        throw new ProtocolViolation(`${what} is not JSON`);
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        throw new ProtocolViolation(`${what} is malformed at ${issue.path.join('.') || 'top level'}: ${issue.message}`);
    }
    return parsed.data;
}
