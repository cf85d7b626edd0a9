import {createHash} from 'node:crypto';
import {readFile} from 'node:fs/promises';
import {join} from 'node:path';
import test from 'ava';
import {readGgufFileInfo} from 'node-llama-cpp';
import {describeDemoModel, writeDemoModel} from '../engine/demo/demo-model.js';
import {float16BitsToFloat32, float32ToFloat16Bits} from '../engine/gguf/float16.js';
import {createDataDirWithDemoModel} from './helpers/demo-model-fixture.js';

test('float16 conversion round-trips every finite half value exactly', (t) => {
    let mismatches = 0;
    for (let bits = 0; bits < 0x10000; bits++) {
        const exponent = (bits >>> 10) & 0x1f;
        if (exponent === 0x1f)
            continue; // Inf/NaN checked below
        if (float32ToFloat16Bits(float16BitsToFloat32(bits)) !== bits)
            mismatches++;
    }
    t.is(mismatches, 0);
});

test('float16 conversion rounds to nearest even and saturates', (t) => {
    t.is(float32ToFloat16Bits(1), 0x3c00);
    t.is(float32ToFloat16Bits(-2), 0xc000);
    t.is(float32ToFloat16Bits(65504), 0x7bff);
    t.is(float32ToFloat16Bits(1e6), 0x7c00);
    t.is(float32ToFloat16Bits(-Infinity), 0xfc00);
    t.is(float32ToFloat16Bits(NaN) & 0x7c00, 0x7c00);
    t.not(float32ToFloat16Bits(NaN) & 0x3ff, 0);
    t.is(float32ToFloat16Bits(1e-10), 0);
    // 1 + 2^-11 lies halfway between 1 and the next half: ties go to the even mantissa (1).
    t.is(float32ToFloat16Bits(1 + 2 ** -11), 0x3c00);
    t.is(float32ToFloat16Bits(1 + 3 * 2 ** -11), 0x3c02);
    // smallest subnormal
    t.is(float32ToFloat16Bits(2 ** -24), 0x0001);
});

test('the demo model is a llama GGUF that node-llama-cpp reads with the requested shape', async (t) => {
    const {modelPath, cleanup} = await createDataDirWithDemoModel({layers: 3, width: 64, headCount: 4, headCountKv: 2, feedForwardLength: 96});
    t.teardown(cleanup);
    const info = await readGgufFileInfo(modelPath);
    t.is(String(info.metadata.general.architecture), 'llama');
    const arch = info.architectureMetadata as {block_count: number, embedding_length: number, attention: {head_count: number, head_count_kv: number}};
    t.is(arch.block_count, 3);
    t.is(arch.embedding_length, 64);
    t.is(arch.attention.head_count, 4);
    t.is(arch.attention.head_count_kv, 2);
    const tokens = info.metadata.tokenizer.ggml.tokens as string[];
    t.true(tokens.includes('<0x00>') && tokens.includes('<0xFF>'), 'byte-fallback tokens');
    t.true(typeof info.metadata.tokenizer.chat_template === 'string');
    const names = info.fullTensorInfo!.map((tensor) => tensor.name);
    t.true(names.includes('blk.2.ffn_down.weight'));
    t.false(names.includes('blk.3.ffn_down.weight'));
    const kv = info.fullTensorInfo!.find((tensor) => tensor.name === 'blk.0.attn_k.weight')!;
    t.deepEqual(kv.dimensions.map(Number), [64, 32]);
});

test('the demo model is deterministic for a seed and differs across seeds', async (t) => {
    const {dataDir, cleanup} = await createDataDirWithDemoModel({layers: 2, width: 64, headCount: 4, feedForwardLength: 64});
    t.teardown(cleanup);
    const hashOf = async (file: string) => createHash('sha256').update(await readFile(file)).digest('hex');
    const options = {layers: 2, width: 64, headCount: 4, headCountKv: 4, feedForwardLength: 64};
    await writeDemoModel(join(dataDir, 'a.gguf'), options);
    await writeDemoModel(join(dataDir, 'b.gguf'), options);
    await writeDemoModel(join(dataDir, 'c.gguf'), {...options, seed: 7});
    t.is(await hashOf(join(dataDir, 'a.gguf')), await hashOf(join(dataDir, 'b.gguf')));
    t.not(await hashOf(join(dataDir, 'a.gguf')), await hashOf(join(dataDir, 'c.gguf')));
});

test('impossible demo shapes are rejected before anything is written', (t) => {
    t.throws(() => describeDemoModel({width: 100, headCount: 8}), {instanceOf: RangeError, message: /divisible by headCount/});
    t.throws(() => describeDemoModel({headCount: 8, headCountKv: 3}), {instanceOf: RangeError});
    t.throws(() => describeDemoModel({layers: 0}), {instanceOf: RangeError, message: /layers/});
});
