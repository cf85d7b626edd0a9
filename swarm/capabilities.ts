import {z} from 'zod';
import {walletBindingSchema} from '../core/wallet-binding-schema.js';

/** What a node tells its peers it can do. Peers' copies are validated: they are untrusted input. */

const count = z.number().int().nonnegative();
const bytes = z.number().nonnegative().max(2 ** 60);
const shortText = z.string().max(128);

export const modelOfferSchema = z.object({
    id: shortText,
    /** SHA-256 of the GGUF file, once hashed (large files take a while). */
    sha256: z.string().regex(/^[0-9a-f]{64}$/).nullable(),
    sizeBytes: bytes,
    quantization: shortText,
    layers: count.max(4096),
    /** Bytes of each transformer block's weights, from the GGUF tensor table. */
    layerBytes: z.array(bytes).max(4096),
    loaded: z.boolean(),
    /** Not loaded yet but on its way (the engine or the pipeline is loading it): a requester may wait for it. */
    loading: z.boolean().optional(),
    /**
     * Where the file can be downloaded from (`hf:user/repo/file.gguf[#branch]` or an http(s) URL), when the node
     * downloaded it from there: hosts fetch their layers from it (docs/architecture.md, "Hosts that fetch their layers").
     */
    source: z.string().min(1).max(1024).optional()
});

export const capabilitiesSchema = z.object({
    software: z.string().max(32),
    device: z.object({
        backend: z.union([z.literal(false), z.enum(['cuda', 'vulkan', 'metal'])]),
        gpuNames: z.array(shortText).max(16),
        vramTotalBytes: bytes,
        vramFreeBytes: bytes,
        ramFreeBytes: bytes,
        cpuThreads: count.max(4096)
    }),
    compute: z.object({
        /** Measured effective compute (prompt processing), TFLOP/s. */
        measuredTflops: z.number().nonnegative().nullable(),
        /** From the GPU lookup table by device name. */
        lookupTflops: z.number().nonnegative().nullable(),
        generationTokensPerSecond: z.number().nonnegative().nullable(),
        memoryBandwidthGBs: z.number().nonnegative().nullable()
    }),
    models: z.array(modelOfferSchema).max(256),
    /** What this node offers to host layer shards for peers; null or absent when it hosts none. */
    shardHost: z.object({
        freeBytes: bytes,
        /**
         * It downloads the layers a coordinator names from the model's source (docs/architecture.md, "Hosts that fetch
         * their layers"), at this rate when it has measured one (bytes/s); absent: it only receives them.
         */
        fetch: z.object({bytesPerSecond: z.number().positive().max(2 ** 40).nullable()}).optional()
    }).nullable().optional(),
    /** Layer ranges already held for sharding. */
    shards: z.array(z.object({model: shortText, firstLayer: count, lastLayer: count})).max(1024),
    load: z.object({active: count, queued: count}),
    /** Asking price in DOGE per million tokens (prompt and completion); null = free. */
    pricePerMillionTokens: z.number().nonnegative().max(1e12).nullable(),
    /** Where a priced node is paid: its wallet, bound to its node key, and the payment contract (docs/architecture.md, "Payments"). */
    payment: walletBindingSchema.nullable().optional(),
    /** Most tokens this node generates for one peer request (`--max-job-tokens`). */
    maxJobTokens: count.max(2 ** 20).optional(),
    /** The key this node's blind relay listens on, while it relays for peers (docs/architecture.md, "Relays"). */
    relay: z.object({key: z.string().regex(/^[0-9a-f]{64}$/)}).nullable().optional(),
    /** The key of this node's contribution log, which peers may replicate to audit it. */
    ledgerCore: z.string().regex(/^[0-9a-f]{64}$/).nullable().optional()
});

export type ModelOffer = z.infer<typeof modelOfferSchema>;
export type Capabilities = z.infer<typeof capabilitiesSchema>;
