/**
 * One weight tensor of a GGUF file as a host fetches it from the model's source (docs/architecture.md, "Hosts that
 * fetch their layers"): where its bytes lie in the file and the SHA-256 of exactly those bytes, computed by the
 * coordinator from its own copy. Shared by the coordinator (which computes and sends them), the shard protocol
 * (which carries them) and the host (which downloads and checks them).
 */
export interface TensorDigest {
    /** GGUF tensor name (`blk.12.ffn_up.weight`). */
    name: string,
    /** Offset of its first byte from the start of the file. */
    offset: number,
    /** `ggml_nbytes`: what llama.cpp's loader sends whole, and what ggml-rpc hashes. */
    bytes: number,
    /** Lowercase hex SHA-256 of those bytes. */
    sha256: string
}

/** Where a model file can be downloaded from: an `hf:user/repo/path.gguf[#branch]` reference or an http(s) URL. */
export type ModelSourceRef = string;
