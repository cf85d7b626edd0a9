import {createHash} from 'node:crypto';
import {createReadStream} from 'node:fs';
import {readdir, stat} from 'node:fs/promises';
import {basename, join, resolve} from 'node:path';
import {GgufFileType, readGgufFileInfo} from 'node-llama-cpp';

/** Local GGUF files: naming, listing and checking them. */

export const MODEL_EXTENSION = '.gguf';

/** A model's id is its file name without `.gguf`: what clients put in `model`. */
export function modelIdFromPath(path: string) {
    const name = basename(path);
    return name.toLowerCase().endsWith(MODEL_EXTENSION) ? name.slice(0, -MODEL_EXTENSION.length) : name;
}

export function isRemoteModelRef(ref: string) {
    return /^(hf:|huggingface:|https?:\/\/)/i.test(ref);
}

export interface ModelFileSummary {
    id: string,
    path: string,
    sizeBytes: number,
    architecture: string,
    layers: number,
    quantization: string,
    contextLength: number
}

export async function describeModelFile(path: string): Promise<ModelFileSummary> {
    const info = await readGgufFileInfo(path, {readTensorInfo: false});
    const architecture = info.metadata.general.architecture;
    const archMetadata = info.architectureMetadata as {block_count?: number, context_length?: number};
    const fileType = info.metadata.general.file_type;
    return {
        id: modelIdFromPath(path),
        path,
        sizeBytes: (await stat(path)).size,
        architecture: String(architecture),
        layers: archMetadata.block_count ?? 0,
        quantization: fileType === undefined ? 'unknown' : GgufFileType[fileType] ?? `type ${fileType}`,
        contextLength: archMetadata.context_length ?? 0
    };
}

/** Every GGUF file directly in `dir` (absent dir = none); unreadable files are reported, not fatal. */
export async function listModelFiles(dir: string) {
    let names: string[];
    try {
        names = await readdir(dir);
    } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT')
            return {models: [], failures: []};
        throw error;
    }
    const models: ModelFileSummary[] = [];
    const failures: {path: string, message: string}[] = [];
    for (const name of names.filter((file) => file.toLowerCase().endsWith(MODEL_EXTENSION)).sort()) {
        const path = join(dir, name);
        try {
            models.push(await describeModelFile(path));
        } catch (error) {
            failures.push({path, message: (error as Error).message});
        }
    }
    return {models, failures};
}

/**
 * A `--model` value that is neither remote nor an existing path may name a model in the models dir:
 * `--model demo` finds `<data dir>/models/demo.gguf`.
 */
export async function findLocalModel(ref: string, modelsDirectory: string): Promise<string | undefined> {
    const candidates = [resolve(ref), join(modelsDirectory, ref), join(modelsDirectory, ref + MODEL_EXTENSION)];
    for (const candidate of candidates) {
        const stats = await stat(candidate).catch(() => undefined);
        if (stats?.isFile())
            return candidate;
    }
    return undefined;
}

export async function sha256OfFile(path: string) {
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(path))
        hash.update(chunk as Buffer);
    return hash.digest('hex');
}

/** What the shard planner needs to know of a model, from its GGUF header and tensor table. */
export interface ModelLayout {
    /** Bytes of each transformer block's weights. */
    layerBytes: number[],
    /** Token embeddings: they stay with the coordinator. */
    inputBytes: number,
    /** The output layer (norm and projection): it goes with the last stage. */
    outputBytes: number,
    /** KV cache bytes one token of context costs in one layer (F16 keys and values). */
    kvBytesPerTokenPerLayer: number,
    /** The widths a layer's compute buffer scales with (`stageComputeBytes`). */
    embeddingLength: number,
    feedForwardLength: number,
    headCount: number
}

/**
 * Reads the tensor table: tensor data is laid out by offset, so each tensor's size is the distance to the next.
 * What a layer shard costs in memory and transfer.
 */
export async function modelLayoutOf(path: string): Promise<ModelLayout> {
    const info = await readGgufFileInfo(path, {readTensorInfo: true});
    const fileSize = (await stat(path)).size;
    const tensors = [...(info.fullTensorInfo ?? [])].sort((a, b) => Number(a.fileOffset) - Number(b.fileOffset));
    const layers: number[] = [];
    let inputBytes = 0;
    let outputBytes = 0;
    tensors.forEach((tensor, index) => {
        const size = (index + 1 < tensors.length ? Number(tensors[index + 1]!.fileOffset) : fileSize) - Number(tensor.fileOffset);
        const block = /^blk\.(\d+)\./.exec(tensor.name);
        if (block !== null) {
            const layer = Number(block[1]);
            layers[layer] = (layers[layer] ?? 0) + size;
        } else if (tensor.name.startsWith('token_embd.'))
            inputBytes += size;
        else if (tensor.name.startsWith('output'))
            outputBytes += size;
    });
    const architecture = info.architectureMetadata as {embedding_length?: number, feed_forward_length?: number | number[],
        attention?: {head_count?: number | number[], head_count_kv?: number | number[], key_length?: number, value_length?: number}};
    // Some architectures give these per layer: the widest layer sizes the buffers.
    const widest = (value: number | number[] | undefined) => Array.isArray(value) ? Math.max(0, ...value) : value;
    const heads = widest(architecture.attention?.head_count) || 1;
    const headDimension = (architecture.embedding_length ?? 0) / heads;
    const kvHeads = widest(architecture.attention?.head_count_kv) || heads;
    const F16_BYTES = 2;
    return {
        layerBytes: Array.from(layers, (value) => value ?? 0),
        inputBytes,
        // Tied embeddings: the output projection is the embedding matrix, copied to the last stage.
        outputBytes: tensors.some((tensor) => tensor.name === 'output.weight') ? outputBytes : outputBytes + inputBytes,
        kvBytesPerTokenPerLayer: kvHeads * ((architecture.attention?.key_length ?? headDimension) + (architecture.attention?.value_length ?? headDimension)) * F16_BYTES,
        embeddingLength: architecture.embedding_length ?? 0,
        feedForwardLength: widest(architecture.feed_forward_length) ?? 0,
        headCount: heads
    };
}
