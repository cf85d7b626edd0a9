/**
 * Seeds an rpc server's tensor cache from a GGUF file this node holds, so that a coordinator loading the same model
 * sends those tensors' hashes instead of their bytes (docs/architecture.md, "Sharding"). ggml-rpc offers every
 * tensor over 10 MiB by its FNV-1a 64 hash before sending it (SET_TENSOR_HASH), and the server looks for a file of
 * that name in its cache (ggml/src/ggml-rpc/ggml-rpc.cpp in llama.cpp); llama.cpp's loader sends each weight tensor
 * whole, in one call, so the hash of a tensor's bytes in the file is the one asked for.
 */
import {createReadStream} from 'node:fs';
import {mkdir, rename, stat, writeFile} from 'node:fs/promises';
import {join} from 'node:path';
import {readGgufFileInfo} from 'node-llama-cpp';

/** Tensors over this size are offered by hash (ggml-rpc's HASH_THRESHOLD). */
export const HASH_THRESHOLD_BYTES = 10 * 1024 * 1024;

const FNV_OFFSET_HIGH = 0xcbf29ce4;
const FNV_OFFSET_LOW = 0x84222325;
/** The 64-bit FNV prime 0x100000001b3, as a high and a low part. */
const FNV_PRIME_HIGH = 0x100;
const FNV_PRIME_LOW = 0x1b3;
const TWO_32 = 2 ** 32;

/**
 * FNV-1a 64 in two 32-bit halves: products stay below 2^53, so doubles hold them exactly (BigInt per byte is
 * tens of times slower).
 */
export class Fnv1a64 {
    private high = FNV_OFFSET_HIGH;
    private low = FNV_OFFSET_LOW;

    update(bytes: Uint8Array) {
        let {high, low} = this;
        for (let index = 0; index < bytes.length; index++) {
            low = (low ^ bytes[index]!) >>> 0;
            const lowProduct = low * FNV_PRIME_LOW;
            const carry = Math.floor(lowProduct / TWO_32);
            high = (high * FNV_PRIME_LOW + low * FNV_PRIME_HIGH + carry) % TWO_32;
            low = lowProduct % TWO_32;
        }
        this.high = high;
        this.low = low;
        return this;
    }

    /** As the server names its cache files: 16 lowercase hex digits. */
    hex() {
        return this.high.toString(16).padStart(8, '0') + this.low.toString(16).padStart(8, '0');
    }
}

export interface SeedOutcome {
    /** Tensors now in the cache because of this call. */
    seeded: number,
    /** Tensors that were there already. */
    present: number,
    bytesHashed: number
}

/** The byte ranges of a GGUF file's tensors over the hash threshold. */
async function largeTensors(ggufPath: string) {
    const info = await readGgufFileInfo(ggufPath, {readTensorInfo: true});
    const fileSize = (await stat(ggufPath)).size;
    // Tensor data lies by offset: each tensor ends where the next begins (the last at the end of the file, less padding).
    const tensors = [...(info.fullTensorInfo ?? [])].sort((a, b) => Number(a.fileOffset) - Number(b.fileOffset));
    return tensors.flatMap((tensor, index) => {
        const start = Number(tensor.fileOffset);
        const end = index + 1 < tensors.length ? Number(tensors[index + 1]!.fileOffset) : fileSize;
        const bytes = tensorBytes(tensor.dimensions.map(Number), Number(tensor.ggmlType), end - start);
        return bytes > HASH_THRESHOLD_BYTES ? [{name: tensor.name, start, bytes}] : [];
    });
}

/**
 * Bytes per element of unquantized types. A quantized tensor is measured by its span in the file: tensors start
 * at 32-byte boundaries, and a large quantized tensor's size is a multiple of 32 already, so its span has no padding.
 */
const TYPE_BYTES: Record<number, number> = {0: 4, 1: 2, 30: 2};

/** The tensor's own bytes: its span in the file may include alignment padding, which the loader does not send. */
function tensorBytes(dimensions: number[], type: number, span: number) {
    const elementBytes = TYPE_BYTES[type];
    return elementBytes === undefined ? span : dimensions.reduce((product, dimension) => product * dimension, elementBytes);
}

/**
 * Writes each tensor of `ggufPath` larger than the hash threshold into `cacheDir` (the server's `$LLAMA_CACHE/rpc`)
 * under its hash, as the server itself would after receiving it; files already there are kept. Written to a
 * temporary name and renamed, so a server never reads half a file.
 */
export async function seedTensorCache(ggufPath: string, cacheDir: string): Promise<SeedOutcome> {
    await mkdir(cacheDir, {recursive: true});
    const outcome: SeedOutcome = {seeded: 0, present: 0, bytesHashed: 0};
    for (const tensor of await largeTensors(ggufPath)) {
        const hash = new Fnv1a64();
        const chunks: Buffer[] = [];
        for await (const chunk of createReadStream(ggufPath, {start: tensor.start, end: tensor.start + tensor.bytes - 1})) {
            hash.update(chunk as Buffer);
            chunks.push(chunk as Buffer);
        }
        outcome.bytesHashed += tensor.bytes;
        const file = join(cacheDir, hash.hex());
        if (await stat(file).then((found) => found.size === tensor.bytes, () => false)) {
            outcome.present++;
            continue;
        }
        const temporary = `${file}.seed-${process.pid}`;
        await writeFile(temporary, Buffer.concat(chunks));
        await rename(temporary, file);
        outcome.seeded++;
    }
    return outcome;
}
