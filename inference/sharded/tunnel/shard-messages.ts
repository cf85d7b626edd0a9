import {z} from 'zod';
import {shardReceiptSchema} from '../../../ledger/records.js';
import {defineChannel} from '../../../swarm/channel/channel-spec.js';
import {ProtocolViolation} from '../../../swarm/channel/errors.js';
import {wireVoucherSchema} from '../../remote/jobs/job-payments.js';
import {signedSessionRequestSchema} from './session-request.js';
import {layerFetchSchema} from './layer-fetch-messages.js';

/** The shard tunnel's channel on a peer's mux (docs/peer-protocol.md, "Shard channel"). */
export const SHARD_PROTOCOL = 'strongdoge/shard/3';

/** A fetch frame: up to MAX_FETCH_TENSORS entries of about 150 bytes each. */
export const MAX_LAYER_FETCH_BYTES = 1024 * 1024;
/** Control frames are small JSON objects. */
export const MAX_SHARD_CONTROL_BYTES = 4 * 1024;
/** Stream data frames carry at most this many bytes each: big writes are cut so other channels keep flowing. */
export const MAX_SHARD_DATA_BYTES = 256 * 1024;
/** A data frame: a 4-byte stream id, then the bytes. */
export const DATA_HEADER_BYTES = 4;

const id = z.number().int().min(1).max(0xffff_ffff);

/**
 * Control frames (docs/peer-protocol.md, "Shard channel"). Frame types say who sends them, so that two nodes can
 * each coordinate and host on the same channel without their ids meeting.
 */
export const shardControlSchema = z.discriminatedUnion('type', [
    /** The coordinator's signed session request (session-request.ts): the host checks it before it starts anything. */
    z.object({type: z.literal('open'), session: id, request: signedSessionRequestSchema}).strict(),
    z.object({type: z.literal('end'), session: id, reason: z.string().max(512)}).strict(),
    z.object({type: z.literal('connect'), session: id, stream: id}).strict(),
    z.object({type: z.literal('close'), stream: id, reason: z.string().max(512)}).strict(),
    /**
     * The coordinator's signed statement of the work the session's layers did for a request (ledger/shard-receipt.ts),
     * for the host to countersign; in a priced session, with the next cumulative voucher paying the receipt's share.
     */
    z.object({type: z.literal('receipt'), session: id, receipt: shardReceiptSchema, voucher: wireVoucherSchema.optional()}).strict(),
    // from the host
    z.object({type: z.literal('ready'), session: id}).strict(),
    z.object({type: z.literal('refused'), session: id, reason: z.string().max(512)}).strict(),
    z.object({type: z.literal('ended'), session: id, reason: z.string().max(512)}).strict(),
    z.object({type: z.literal('closed'), stream: id, reason: z.string().max(512)}).strict(),
    /** The host checked receipt `sequence` of the session and countersigned it: both sides log it. */
    z.object({type: z.literal('countersigned'), session: id, sequence: z.number().int().min(1).max(2 ** 50), hostSignature: z.string().regex(/^[0-9a-f]{128}$/)}).strict(),
    /** How far the host's download of a `fetch` (layer-fetch-messages.ts) has come. */
    z.object({type: z.literal('fetchProgress'), fetch: id, doneBytes: z.number().int().min(0).max(2 ** 50), totalBytes: z.number().int().min(0).max(2 ** 50)}).strict(),
    /**
     * The fetch is over: `stored` tensors are in this host's cache for the session (downloaded, or there before),
     * `failed` are not (the coordinator sends those as before); `reason` says why when any failed or none was tried.
     */
    z.object({type: z.literal('fetched'), fetch: id, stored: z.number().int().min(0).max(65_536), failed: z.number().int().min(0).max(65_536),
        downloadedBytes: z.number().int().min(0).max(2 ** 50), bytesPerSecond: z.number().min(0).max(2 ** 50).nullable(), reason: z.string().max(512).optional()}).strict()
]);

export type ShardControl = z.infer<typeof shardControlSchema>;

export function encodeData(stream: number, bytes: Uint8Array) {
    const frame = Buffer.allocUnsafe(DATA_HEADER_BYTES + bytes.byteLength);
    frame.writeUInt32BE(stream, 0);
    frame.set(bytes, DATA_HEADER_BYTES);
    return frame;
}

export function decodeData(frame: Uint8Array) {
    if (frame.byteLength <= DATA_HEADER_BYTES || frame.byteLength > DATA_HEADER_BYTES + MAX_SHARD_DATA_BYTES)
        throw new ProtocolViolation(`shard data frame of ${frame.byteLength} bytes`, 'FRAME_MALFORMED');
    const buffer = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
    return {stream: buffer.readUInt32BE(0), bytes: buffer.subarray(DATA_HEADER_BYTES)};
}

export type ShardData = ReturnType<typeof decodeData>;

const dataFrame = {what: 'shard data frame', maxBytes: DATA_HEADER_BYTES + MAX_SHARD_DATA_BYTES, decode: decodeData};

/**
 * The channel's three messages, in wire order (docs/peer-protocol.md, "Shard channel"). Data passes no rate limit:
 * it is bounded by the sessions and streams a host accepts, and by the connection's backpressure.
 */
export const SHARD_CHANNEL = defineChannel({
    protocol: SHARD_PROTOCOL,
    // A fetch frame may be 1 MiB and take milliseconds to check: few of them, whatever the control frames' rate.
    rates: {controlFrames: {perSecond: 200, burst: 1_000}, fetchFrames: {perSecond: 4, burst: 16}},
    messages: {
        control: {what: 'shard control frame', maxBytes: MAX_SHARD_CONTROL_BYTES, rates: ['controlFrames'], schema: shardControlSchema},
        /** Data for streams the receiver hosts. */
        toHost: {...dataFrame, rates: []},
        /** Data for streams the receiver opened as coordinator. */
        toCoordinator: {...dataFrame, rates: []},
        /** A coordinator's list of tensors for the host to download from the model's source: too long for a control frame. */
        fetch: {what: 'layer fetch frame', maxBytes: MAX_LAYER_FETCH_BYTES, rates: ['fetchFrames'], schema: layerFetchSchema}
    }
});
