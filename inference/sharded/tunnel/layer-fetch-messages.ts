import {z} from 'zod';

/**
 * The `fetch` message of the shard channel (docs/peer-protocol.md, "Shard channel"): the coordinator tells a host
 * where the model's file can be downloaded and which of its tensors the host's layers need, each with its offset, size
 * and SHA-256 as the coordinator computed them from its own copy. The host downloads those ranges, checks each, and
 * ggml-rpc then finds them in its cache instead of receiving them (docs/architecture.md, "Hosts that fetch their layers").
 */

/** Tensors one fetch may list: a stage of a 70B model has a few hundred big ones. */
export const MAX_FETCH_TENSORS = 4096;

const id = z.number().int().min(1).max(0xffff_ffff);

export const tensorDigestSchema = z.object({
    name: z.string().min(1).max(128),
    offset: z.number().int().min(0).max(2 ** 50),
    bytes: z.number().int().min(1).max(2 ** 40),
    sha256: z.string().regex(/^[0-9a-f]{64}$/)
}).strict();

export const layerFetchSchema = z.object({
    /** Chosen by the coordinator; `fetchProgress` and `fetched` name it. */
    fetch: id,
    /**
     * The session whose server should find the tensors (a `ready` one of this connection), or null for a spare: the
     * host only downloads, for a session that may come after a failure.
     */
    session: id.nullable(),
    /** The model file's SHA-256: a host that holds the file seeds from its own copy and downloads nothing. */
    model: z.string().regex(/^[0-9a-f]{64}$/),
    /** `hf:user/repo/path.gguf[#branch]` (resolved against the host's own Hugging Face endpoint) or an http(s) URL. */
    source: z.string().min(1).max(1024),
    /** Layers the tensors are for, first and last inclusive (named in logs). */
    layers: z.tuple([z.number().int().min(0), z.number().int().min(0)]),
    tensors: z.array(tensorDigestSchema).min(1).max(MAX_FETCH_TENSORS)
}).strict();

export type LayerFetch = z.infer<typeof layerFetchSchema>;
