import {open} from 'node:fs/promises';
import {float32ToFloat16Bits} from './float16.js';
import {quantizeQ4_0, quantizeQ8_0} from './quantize.js';
import {
    GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, GgmlType, ggmlTypeLayout, GgufValueType,
    type GgufMetadata, type GgufMetadataValue, type GgufTensorSpec
} from './gguf-types.js';

/** Growable little-endian byte buffer for the GGUF header. */
class ByteSink {
    private buffer = Buffer.alloc(1 << 16);
    length = 0;

    private reserve(bytes: number) {
        if (this.length + bytes <= this.buffer.length)
            return;
        const next = Buffer.alloc(Math.max(this.buffer.length * 2, this.length + bytes));
        this.buffer.copy(next, 0, 0, this.length);
        this.buffer = next;
    }

    u32(value: number) {
        this.reserve(4);
        this.length = this.buffer.writeUInt32LE(value, this.length);
    }

    i32(value: number) {
        this.reserve(4);
        this.length = this.buffer.writeInt32LE(value, this.length);
    }

    u64(value: bigint | number) {
        this.reserve(8);
        this.length = this.buffer.writeBigUInt64LE(BigInt(value), this.length);
    }

    f32(value: number) {
        this.reserve(4);
        this.length = this.buffer.writeFloatLE(value, this.length);
    }

    u8(value: number) {
        this.reserve(1);
        this.length = this.buffer.writeUInt8(value, this.length);
    }

    string(value: string) {
        const bytes = Buffer.from(value, 'utf8');
        this.u64(bytes.length);
        this.reserve(bytes.length);
        this.length += bytes.copy(this.buffer, this.length);
    }

    padTo(alignment: number) {
        const padding = alignedSize(this.length, alignment) - this.length;
        this.reserve(padding);
        this.buffer.fill(0, this.length, this.length + padding);
        this.length += padding;
    }

    bytes() {
        return this.buffer.subarray(0, this.length);
    }
}

export function alignedSize(size: number, alignment: number) {
    return Math.ceil(size / alignment) * alignment;
}

export function tensorByteSize(tensor: Pick<GgufTensorSpec, 'dims' | 'type'>) {
    const {blockSize, blockBytes} = ggmlTypeLayout[tensor.type];
    if (tensor.dims[0]! % blockSize !== 0)
        throw new RangeError(`rows of a type ${tensor.type} tensor hold whole blocks of ${blockSize}, got ${tensor.dims[0]}`);
    return tensor.dims.reduce((product, dim) => product * dim, 1) / blockSize * blockBytes;
}

function writeMetadataValue(sink: ByteSink, entry: GgufMetadataValue) {
    switch (entry.type) {
        case 'string': sink.u32(GgufValueType.string); sink.string(entry.value); return;
        case 'uint32': sink.u32(GgufValueType.uint32); sink.u32(entry.value); return;
        case 'int32': sink.u32(GgufValueType.int32); sink.i32(entry.value); return;
        case 'float32': sink.u32(GgufValueType.float32); sink.f32(entry.value); return;
        case 'bool': sink.u32(GgufValueType.bool); sink.u8(entry.value ? 1 : 0); return;
        case 'uint64': sink.u32(GgufValueType.uint64); sink.u64(entry.value); return;
        case 'string[]': writeArray(sink, GgufValueType.string, entry.value, (item) => sink.string(item)); return;
        case 'float32[]': writeArray(sink, GgufValueType.float32, entry.value, (item) => sink.f32(item)); return;
        case 'int32[]': writeArray(sink, GgufValueType.int32, entry.value, (item) => sink.i32(item)); return;
    }
}

function writeArray<T>(sink: ByteSink, elementType: number, items: readonly T[], writeItem: (item: T) => void) {
    sink.u32(GgufValueType.array);
    sink.u32(elementType);
    sink.u64(items.length);
    for (const item of items)
        writeItem(item);
}

function encodeTensorData(tensor: GgufTensorSpec): Buffer {
    const count = tensor.dims.reduce((product, dim) => product * dim, 1);
    const values = new Float32Array(count);
    tensor.fill(values);
    if (tensor.type === GgmlType.F32)
        return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
    if (tensor.type === GgmlType.Q8_0)
        return quantizeQ8_0(values);
    if (tensor.type === GgmlType.Q4_0)
        return quantizeQ4_0(values);

    const halves = new Uint16Array(count);
    for (let i = 0; i < count; i++)
        halves[i] = float32ToFloat16Bits(values[i]!);
    return Buffer.from(halves.buffer, halves.byteOffset, halves.byteLength);
}

export interface WriteGgufOptions {
    metadata: GgufMetadata,
    tensors: readonly GgufTensorSpec[],
    alignment?: number
}

/**
 * Writes a GGUF v3 file: header, metadata, tensor infos, then each tensor's data aligned.
 * Tensor data is produced and written one tensor at a time so large models stay out of memory.
 */
export async function writeGgufFile(path: string, {metadata, tensors, alignment = GGUF_DEFAULT_ALIGNMENT}: WriteGgufOptions) {
    const header = new ByteSink();
    for (const char of GGUF_MAGIC)
        header.u8(char.charCodeAt(0));
    header.u32(GGUF_VERSION);
    header.u64(tensors.length);

    const entries = Object.entries(metadata);
    const alignmentEntry = alignment !== GGUF_DEFAULT_ALIGNMENT
        ? [['general.alignment', {type: 'uint32', value: alignment}] as const]
        : [];
    header.u64(entries.length + alignmentEntry.length);
    for (const [key, value] of [...entries, ...alignmentEntry]) {
        header.string(key);
        writeMetadataValue(header, value);
    }

    let offset = 0;
    const offsets: number[] = [];
    for (const tensor of tensors) {
        header.string(tensor.name);
        header.u32(tensor.dims.length);
        for (const dim of tensor.dims)
            header.u64(dim);
        header.u32(tensor.type);
        header.u64(offset);
        offsets.push(offset);
        offset = alignedSize(offset + tensorByteSize(tensor), alignment);
    }
    header.padTo(alignment);

    const file = await open(path, 'w');
    try {
        await file.write(header.bytes());
        let position = header.length;
        for (const [index, tensor] of tensors.entries()) {
            const start = header.length + offsets[index]!;
            if (start > position)
                await file.write(Buffer.alloc(start - position));
            const data = encodeTensorData(tensor);
            await file.write(data);
            position = start + data.length;
        }
        const end = header.length + offset;
        if (end > position)
            await file.write(Buffer.alloc(end - position));
    } finally {
        await file.close();
    }
}
