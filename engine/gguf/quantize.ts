import {float16BitsToFloat32, float32ToFloat16Bits} from './float16.js';

/** Values per block of ggml's Q4_0 and Q8_0: each block stores one float16 scale and 32 small integers. */
export const QUANT_BLOCK = 32;

/** Q8_0: scale = max|x| / 127, each value rounded to an int8 (as ggml's reference quantize_row_q8_0). */
export function quantizeQ8_0(values: Float32Array): Buffer {
    return quantizeBlocks(values, 34, (block, out, at) => {
        let amax = 0;
        for (const value of block)
            amax = Math.max(amax, Math.abs(value));
        const scale = amax / 127;
        const inverse = scale === 0 ? 0 : 1 / scale;
        out.writeUInt16LE(float32ToFloat16Bits(scale), at);
        for (let i = 0; i < QUANT_BLOCK; i++)
            out.writeInt8(roundHalfAway(block[i]! * inverse), at + 2 + i);
    });
}

/**
 * Q4_0: scale = (the value of largest magnitude) / -8, each value stored as a nibble q with x ≈ (q - 8) * scale;
 * value i and value i + 16 of a block share byte i (as ggml's reference quantize_row_q4_0).
 */
export function quantizeQ4_0(values: Float32Array): Buffer {
    return quantizeBlocks(values, 18, (block, out, at) => {
        let extreme = 0;
        for (const value of block)
            if (Math.abs(value) > Math.abs(extreme))
                extreme = value;
        const scale = extreme / -8;
        const inverse = scale === 0 ? 0 : 1 / scale;
        out.writeUInt16LE(float32ToFloat16Bits(scale), at);
        const nibble = (x: number) => Math.min(15, Math.trunc(x * inverse + 8.5));
        for (let i = 0; i < QUANT_BLOCK / 2; i++)
            out[at + 2 + i] = nibble(block[i]!) | (nibble(block[i + 16]!) << 4);
    });
}

/** Encodes each block of 32 values into `blockBytes` bytes at `at`. */
function quantizeBlocks(values: Float32Array, blockBytes: number, encode: (block: Float32Array, out: Buffer, at: number) => void) {
    if (values.length % QUANT_BLOCK !== 0)
        throw new RangeError(`a quantized tensor holds whole blocks of ${QUANT_BLOCK} values, got ${values.length}`);
    const blocks = values.length / QUANT_BLOCK;
    const out = Buffer.alloc(blocks * blockBytes);
    for (let block = 0; block < blocks; block++)
        encode(values.subarray(block * QUANT_BLOCK, (block + 1) * QUANT_BLOCK), out, block * blockBytes);
    return out;
}

/** The values a Q8_0 or Q4_0 buffer stands for (what llama.cpp computes with). */
export function dequantize(type: 'Q8_0' | 'Q4_0', data: Buffer): Float32Array {
    const blockBytes = type === 'Q8_0' ? 34 : 18;
    const values = new Float32Array(data.length / blockBytes * QUANT_BLOCK);
    for (let block = 0; block * blockBytes < data.length; block++) {
        const at = block * blockBytes;
        const scale = float16BitsToFloat32(data.readUInt16LE(at));
        const base = block * QUANT_BLOCK;
        if (type === 'Q8_0') {
            for (let i = 0; i < QUANT_BLOCK; i++)
                values[base + i] = data.readInt8(at + 2 + i) * scale;
            continue;
        }
        for (let i = 0; i < QUANT_BLOCK / 2; i++) {
            values[base + i] = ((data[at + 2 + i]! & 0x0f) - 8) * scale;
            values[base + i + 16] = ((data[at + 2 + i]! >> 4) - 8) * scale;
        }
    }
    return values;
}

/** C's roundf: halves away from zero (Math.round takes -2.5 to -2). */
function roundHalfAway(x: number) {
    return Math.sign(x) * Math.round(Math.abs(x));
}
