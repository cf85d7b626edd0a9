import {z} from 'zod';
import {capabilitiesSchema} from '../capabilities.js';
import {defineChannel} from '../channel/channel-spec.js';
import {MAX_FRAME_BYTES} from '../channel/frame-codec.js';

/** The control channel: the first protomux channel of every peer connection (docs/peer-protocol.md, "Control channel"). */

export const CONTROL_PROTOCOL = 'strongdoge/control';
/** Bumped on incompatible changes; peers with another major version are disconnected. */
export const PROTOCOL_VERSION = 2;

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

/** The hello is the open handshake; hello and messages share one token bucket. */
export const CONTROL_CHANNEL = defineChannel({
    protocol: CONTROL_PROTOCOL,
    rates: {frames: {perSecond: 20, burst: 100}},
    handshake: {what: 'hello', maxBytes: MAX_FRAME_BYTES, rates: ['frames'], schema: helloSchema},
    messages: {
        control: {what: 'control message', maxBytes: MAX_FRAME_BYTES, rates: ['frames'], schema: controlMessageSchema}
    }
});
