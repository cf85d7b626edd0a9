import {z} from 'zod';
import {defineChannel} from '../channel/channel-spec.js';
import {ProtocolViolation} from '../channel/errors.js';

/**
 * One frame of the network model table's gossip (`model-gossip.ts`, issue 26); no channel carries it yet. Ages,
 * never timestamps: a receiver dates what it hears by its own clock.
 */
export const MODEL_GOSSIP_PROTOCOL = 'strongdoge/gossip';

/** Models per frame: a table larger than this goes out over several rounds. */
export const MAX_GOSSIP_ENTRIES = 32;
/** Provider ids per model in a frame. */
export const MAX_GOSSIP_PROVIDERS = 4;
/** No table keeps a provider longer than this; a larger age is nonsense, not old news. */
export const MAX_GOSSIP_AGE_MS = 24 * 60 * 60_000;
/**
 * A frame's bound. A largest entry is about 2.1 KB (a name and a quantization of 128 characters, each escaped to 6
 * bytes at worst, a hash, four providers), so 32 of them fit with room to spare.
 */
export const MAX_GOSSIP_FRAME_BYTES = 128 * 1024;

const hex64 = z.string().regex(/^[0-9a-f]{64}$/, 'not 64 lowercase hex digits');
const shortText = z.string().max(128);

export const gossipProviderSchema = z.object({
    /** Node id (hex public key). */
    id: hex64,
    /** How long ago the sender last had word of this provider, by the sender's clock. */
    ageMs: z.number().int('an age in whole milliseconds').min(0, 'an age in the future').max(MAX_GOSSIP_AGE_MS, `an age over ${MAX_GOSSIP_AGE_MS} ms`)
}).strict();

/** A model as capabilities describe it (`swarm/capabilities.ts`), keyed by its file's SHA-256. */
export const gossipEntrySchema = z.object({
    sha256: hex64,
    name: shortText,
    sizeBytes: z.number().nonnegative().max(2 ** 60),
    layers: z.number().int().nonnegative().max(4096),
    quantization: shortText,
    providers: z.array(gossipProviderSchema).min(1, 'a model without providers').max(MAX_GOSSIP_PROVIDERS)
}).strict();

/** A frame names each model once, and each of a model's providers once: a repeat would count twice. */
export const gossipFrameSchema = z.object({
    entries: z.array(gossipEntrySchema).max(MAX_GOSSIP_ENTRIES)
}).strict().superRefine((frame, context) => {
    const models = new Set<string>();
    for (const [index, entry] of frame.entries.entries()) {
        if (models.has(entry.sha256))
            context.addIssue({code: 'custom', path: ['entries', index, 'sha256'], message: `model ${entry.sha256} listed twice`});
        models.add(entry.sha256);
        const providers = new Set<string>();
        for (const [position, provider] of entry.providers.entries()) {
            if (providers.has(provider.id))
                context.addIssue({code: 'custom', path: ['entries', index, 'providers', position, 'id'], message: `provider ${provider.id} listed twice`});
            providers.add(provider.id);
        }
    }
});

export type GossipProvider = z.infer<typeof gossipProviderSchema>;
export type GossipEntry = z.infer<typeof gossipEntrySchema>;
export type GossipFrame = z.infer<typeof gossipFrameSchema>;

/** A frame as a peer sent it, checked: anything the schema refuses is a {@link ProtocolViolation} naming where. */
export function checkGossipFrame(value: unknown): GossipFrame {
    const parsed = gossipFrameSchema.safeParse(value);
    if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        throw new ProtocolViolation(`model gossip frame is malformed at ${issue.path.join('.') || 'top level'}: ${issue.message}`, 'FRAME_MALFORMED');
    }
    return parsed.data;
}

/**
 * The channel a node will gossip on (docs/peer-protocol.md, "Adding a protocol"). A node pushes a frame to a few
 * peers every few seconds, and one to each new peer: a peer that sends more than one a second on average floods.
 */
export const MODEL_GOSSIP_CHANNEL = defineChannel({
    protocol: MODEL_GOSSIP_PROTOCOL,
    rates: {frames: {perSecond: 1, burst: 8}},
    messages: {
        models: {what: 'model gossip frame', maxBytes: MAX_GOSSIP_FRAME_BYTES, rates: ['frames'], schema: gossipFrameSchema}
    }
});
