/** GGUF on-disk enums (ggml/include/gguf.h, ggml.h). Only the values strongdoge writes. */

export const GGUF_MAGIC = 'GGUF';
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

export const GgufValueType = {
    uint32: 4,
    int32: 5,
    float32: 6,
    bool: 7,
    string: 8,
    array: 9,
    uint64: 10
} as const;

/** ggml tensor element types the writer can encode. */
export const GgmlType = {
    F32: 0,
    F16: 1,
    Q4_0: 2,
    Q8_0: 8
} as const;
export type GgmlType = typeof GgmlType[keyof typeof GgmlType];

/** Elements per block and bytes per block (ggml's `type_traits`): a quantized type stores 32 values with one scale. */
export const ggmlTypeLayout: Record<GgmlType, {blockSize: number, blockBytes: number}> = {
    [GgmlType.F32]: {blockSize: 1, blockBytes: 4},
    [GgmlType.F16]: {blockSize: 1, blockBytes: 2},
    [GgmlType.Q4_0]: {blockSize: 32, blockBytes: 18},
    [GgmlType.Q8_0]: {blockSize: 32, blockBytes: 34}
};

/** llama.cpp's `llama_ftype`: what `general.file_type` reports. */
export const LlamaFileType = {
    allF32: 0,
    mostlyF16: 1,
    mostlyQ4_0: 2,
    mostlyQ8_0: 7
} as const;

/** llama.cpp's `llama_token_type`. */
export const TokenType = {
    normal: 1,
    unknown: 2,
    control: 3,
    /** Added tokens that are text (a template's tool-call tags): matched whole, shown as their text. */
    userDefined: 4,
    byte: 6
} as const;

export type GgufMetadataValue =
    | {type: 'string', value: string}
    | {type: 'uint32', value: number}
    | {type: 'int32', value: number}
    | {type: 'float32', value: number}
    | {type: 'bool', value: boolean}
    | {type: 'uint64', value: bigint}
    | {type: 'string[]', value: readonly string[]}
    | {type: 'float32[]', value: readonly number[]}
    | {type: 'int32[]', value: readonly number[]};

export type GgufMetadata = Record<string, GgufMetadataValue>;

export interface GgufTensorSpec {
    name: string,
    /** ggml order: dims[0] is the innermost (contiguous) dimension. */
    dims: readonly number[],
    type: GgmlType,
    /** Fills the tensor's values in ggml order; called once, while writing. */
    fill(values: Float32Array): void
}
