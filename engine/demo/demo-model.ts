import {writeGgufFile} from '../gguf/gguf-writer.js';
import {GgmlType, LlamaFileType, TokenType, type GgufMetadata, type GgufTensorSpec} from '../gguf/gguf-types.js';
import {Prng} from './prng.js';
import {buildDemoVocab, DEMO_CHAT_TEMPLATE} from './demo-vocab.js';

export interface DemoModelOptions {
    /** Transformer blocks. */
    layers?: number,
    /** Hidden size (n_embd). */
    width?: number,
    headCount?: number,
    /** Key/value heads (default: headCount); fewer than headCount gives grouped-query attention. */
    headCountKv?: number,
    feedForwardLength?: number,
    contextLength?: number,
    seed?: number,
    name?: string,
    /** How the weight matrices are stored; norms stay F32. Q8_0 and Q4_0 need widths that are multiples of 32. Defaults to F16. */
    weightType?: 'F16' | 'Q8_0' | 'Q4_0',
    /**
     * False: the output weights of control tokens are zero, so their logit is 0 while the best word's is far
     * above: greedy generation never ends by itself. For tests and benchmarks that need long generations.
     */
    endsText?: boolean,
    /**
     * False: the output weights of the 256 byte tokens are zero too, so the model writes words (fluent nonsense)
     * rather than stray bytes that show as `�`. True for tests that need UTF-8 pieces from a real model. Defaults to false.
     */
    writesBytes?: boolean,
    /**
     * Blocks from this index on add `quietLayerGain` times what they would to the residual stream (their attn_output
     * and ffn_down scaled). Every other tensor is the same seed's, so the same seed's model of `quietLayersFrom` layers
     * mostly agrees with this one: a draft for speculative decoding's tests and benchmarks. Defaults to none quiet.
     */
    quietLayersFrom?: number,
    /**
     * The quiet blocks' factor. Defaults to 0.75: an 8-layer model of the default shape then picks its first 2 layers'
     * greedy token at 73–86% of its own greedy text's positions (measured: 1 gives about 63%, 0.5 about 85%, 1/32 98%).
     */
    quietLayerGain?: number
}

export const demoModelDefaults: Required<DemoModelOptions> = {
    layers: 8,
    width: 256,
    headCount: 8,
    headCountKv: 8,
    feedForwardLength: 512,
    contextLength: 4096,
    seed: 42,
    name: 'strongdoge-demo',
    weightType: 'F16',
    endsText: true,
    writesBytes: false,
    quietLayersFrom: Number.POSITIVE_INFINITY,
    quietLayerGain: 0.75
};

/** FNV-1a: a stable per-tensor seed, so each tensor's values do not depend on write order. */
/** Damps each block's contribution to the residual stream: an undamped random network is chaotic, so
 * the last-bit rounding differences of batched decoding would quickly change greedy output. */
const RESIDUAL_GAIN = 0.25;

function tensorSeed(seed: number, name: string) {
    let hash = 0x811c9dc5 ^ seed;
    for (let i = 0; i < name.length; i++)
        hash = Math.imul(hash ^ name.charCodeAt(i), 0x01000193);
    return hash >>> 0;
}

const FILE_TYPES = {F16: LlamaFileType.mostlyF16, Q8_0: LlamaFileType.mostlyQ8_0, Q4_0: LlamaFileType.mostlyQ4_0} as const;

function normalTensor(name: string, dims: number[], std: number, seed: number, type: GgmlType): GgufTensorSpec {
    return {
        name, dims, type,
        fill(values) {
            const prng = new Prng(tensorSeed(seed, name));
            for (let i = 0; i < values.length; i++)
                values[i] = prng.normal() * std;
        }
    };
}

/** Zeroes the rows (ggml dims[0]-contiguous) of the given tokens. */
function withZeroRows(tensor: GgufTensorSpec, rowLength: number, rows: number[]): GgufTensorSpec {
    return {
        ...tensor,
        fill(values) {
            tensor.fill(values);
            for (const row of rows)
                values.fill(0, row * rowLength, (row + 1) * rowLength);
        }
    };
}

function onesTensor(name: string, width: number): GgufTensorSpec {
    return {name, dims: [width], type: GgmlType.F32, fill: (values) => values.fill(1)};
}

export function validateDemoModelOptions(options: Required<DemoModelOptions>) {
    const positive = ['layers', 'width', 'headCount', 'headCountKv', 'feedForwardLength', 'contextLength'] as const;
    for (const key of positive)
        if (!Number.isInteger(options[key]) || options[key] < 1)
            throw new RangeError(`${key} must be a positive integer, got ${options[key]}`);
    if (options.width % options.headCount !== 0)
        throw new RangeError(`width (${options.width}) must be divisible by headCount (${options.headCount})`);
    if (options.headCount % options.headCountKv !== 0)
        throw new RangeError(`headCount (${options.headCount}) must be divisible by headCountKv (${options.headCountKv})`);
    if ((options.width / options.headCount) % 2 !== 0)
        throw new RangeError('width / headCount must be even for rotary embeddings');
    if (!(options.quietLayersFrom >= 0) || !(Number.isInteger(options.quietLayersFrom) || options.quietLayersFrom === Number.POSITIVE_INFINITY))
        throw new RangeError(`quietLayersFrom must be a layer index, got ${options.quietLayersFrom}`);
    if (!(options.quietLayerGain > 0 && options.quietLayerGain <= 1))
        throw new RangeError(`quietLayerGain must be in (0, 1], got ${options.quietLayerGain}`);
    if (options.weightType !== 'F16' && (options.width % 32 !== 0 || options.feedForwardLength % 32 !== 0))
        throw new RangeError(`${options.weightType} weights need width and feedForwardLength in multiples of 32 (its blocks)`);
}

/**
 * Builds the tensors and metadata of a llama-architecture model with deterministic random weights.
 * It generates text (nonsense) through the real llama.cpp code paths, so tests and demos need no download.
 */
export function describeDemoModel(options: DemoModelOptions = {}) {
    // Without an explicit headCountKv, every head has its own key/value (no grouping).
    const config = {...demoModelDefaults, ...options, headCountKv: options.headCountKv ?? options.headCount ?? demoModelDefaults.headCountKv};
    validateDemoModelOptions(config);
    const {layers, width, headCount, headCountKv, feedForwardLength, seed} = config;
    const vocab = buildDemoVocab();
    const vocabSize = vocab.tokens.length;
    const headDim = width / headCount;
    const kvWidth = headDim * headCountKv;

    const metadata: GgufMetadata = {
        'general.architecture': {type: 'string', value: 'llama'},
        'general.name': {type: 'string', value: config.name},
        'general.file_type': {type: 'uint32', value: FILE_TYPES[config.weightType]},
        'llama.context_length': {type: 'uint32', value: config.contextLength},
        'llama.embedding_length': {type: 'uint32', value: width},
        'llama.block_count': {type: 'uint32', value: layers},
        'llama.feed_forward_length': {type: 'uint32', value: feedForwardLength},
        'llama.attention.head_count': {type: 'uint32', value: headCount},
        'llama.attention.head_count_kv': {type: 'uint32', value: headCountKv},
        'llama.attention.layer_norm_rms_epsilon': {type: 'float32', value: 1e-5},
        'llama.rope.dimension_count': {type: 'uint32', value: headDim},
        'llama.rope.freq_base': {type: 'float32', value: 10000},
        'llama.vocab_size': {type: 'uint32', value: vocabSize},
        'tokenizer.ggml.model': {type: 'string', value: 'llama'},
        'tokenizer.ggml.tokens': {type: 'string[]', value: vocab.tokens},
        'tokenizer.ggml.scores': {type: 'float32[]', value: vocab.scores},
        'tokenizer.ggml.token_type': {type: 'int32[]', value: vocab.tokenTypes},
        'tokenizer.ggml.bos_token_id': {type: 'uint32', value: vocab.bosId},
        'tokenizer.ggml.eos_token_id': {type: 'uint32', value: vocab.imEndId},
        'tokenizer.ggml.unknown_token_id': {type: 'uint32', value: vocab.unknownId},
        'tokenizer.ggml.add_bos_token': {type: 'bool', value: true},
        'tokenizer.ggml.add_eos_token': {type: 'bool', value: false},
        'tokenizer.chat_template': {type: 'string', value: DEMO_CHAT_TEMPLATE}
    };

    // std 1/sqrt(fan_in) keeps activations near unit scale; a wider output layer spreads logits
    // so greedy decoding wanders through the vocabulary instead of repeating one token.
    const type = GgmlType[config.weightType];
    const projection = 1 / Math.sqrt(width);
    const output = normalTensor('output.weight', [width, vocabSize], 4 * projection, seed, type);
    const controlTokens = vocab.tokenTypes.flatMap((type, id) => type === TokenType.control ? [id] : []);
    // Nor does it write a template's tool tags by itself: tests ask for calls (tool_choice, logit_bias).
    const toolTokens = vocab.tokenTypes.flatMap((type, id) => type === TokenType.userDefined ? [id] : []);
    const byteTokens = config.writesBytes ? [] : vocab.tokenTypes.flatMap((type, id) => type === TokenType.byte ? [id] : []);
    const tensors: GgufTensorSpec[] = [
        normalTensor('token_embd.weight', [width, vocabSize], 1, seed, type),
        onesTensor('output_norm.weight', width),
        withZeroRows(output, width, [...config.endsText ? [] : controlTokens, ...toolTokens, ...byteTokens])
    ];
    for (let layer = 0; layer < layers; layer++) {
        const block = `blk.${layer}`;
        const gain = RESIDUAL_GAIN * (layer >= config.quietLayersFrom ? config.quietLayerGain : 1);
        tensors.push(
            onesTensor(`${block}.attn_norm.weight`, width),
            normalTensor(`${block}.attn_q.weight`, [width, width], projection, seed, type),
            normalTensor(`${block}.attn_k.weight`, [width, kvWidth], projection, seed, type),
            normalTensor(`${block}.attn_v.weight`, [width, kvWidth], projection, seed, type),
            normalTensor(`${block}.attn_output.weight`, [width, width], gain * projection, seed, type),
            onesTensor(`${block}.ffn_norm.weight`, width),
            normalTensor(`${block}.ffn_gate.weight`, [width, feedForwardLength], projection, seed, type),
            normalTensor(`${block}.ffn_up.weight`, [width, feedForwardLength], projection, seed, type),
            normalTensor(`${block}.ffn_down.weight`, [feedForwardLength, width], gain / Math.sqrt(feedForwardLength), seed, type)
        );
    }
    return {config, metadata, tensors, vocab};
}

export async function writeDemoModel(path: string, options: DemoModelOptions = {}) {
    const {config, metadata, tensors} = describeDemoModel(options);
    await writeGgufFile(path, {metadata, tensors});
    return config;
}
