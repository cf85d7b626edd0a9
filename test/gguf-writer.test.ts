import {createHash} from 'node:crypto';
import {readFile} from 'node:fs/promises';
import {join} from 'node:path';
import test from 'ava';
import {getLlama, LlamaCompletion, readGgufFileInfo} from 'node-llama-cpp';
import {describeDemoModel, writeDemoModel} from '../engine/demo/demo-model.js';
import {float16BitsToFloat32, float32ToFloat16Bits} from '../engine/gguf/float16.js';
import {dequantize, quantizeQ4_0, quantizeQ8_0} from '../engine/gguf/quantize.js';
import {Prng} from '../engine/demo/prng.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';

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

test('impossible quantized shapes are rejected too', (t) => {
    t.throws(() => describeDemoModel({width: 48, headCount: 4, weightType: 'Q8_0'}), {instanceOf: RangeError, message: /multiples of 32/});
    t.notThrows(() => describeDemoModel({width: 48, headCount: 4, weightType: 'F16'}));
});

test('Q8_0 and Q4_0 blocks are laid out as ggml reads them and stay within a quantization step of the values', (t) => {
    const ramp = Float32Array.from({length: 32}, (_, i) => i - 12.5);
    const q8 = quantizeQ8_0(ramp);
    t.is(q8.length, 34);
    t.is(float16BitsToFloat32(q8.readUInt16LE(0)), float16BitsToFloat32(float32ToFloat16Bits(18.5 / 127)));
    t.is(q8.readInt8(2), -86, 'round(-12.5 × 127 / 18.5) = -85.8');
    t.is(q8.readInt8(2 + 31), 127);
    const q4 = quantizeQ4_0(ramp);
    t.is(q4.length, 18);
    // The value of largest magnitude is 18.5: scale = 18.5 / -8.
    t.is(float16BitsToFloat32(q4.readUInt16LE(0)), float16BitsToFloat32(float32ToFloat16Bits(18.5 / -8)));
    t.is(q4[2]! & 0x0f, Math.min(15, Math.trunc(-12.5 / (18.5 / -8) + 8.5)), 'value 0 in the low nibble of byte 0');
    t.is(q4[2]! >> 4, Math.min(15, Math.trunc(3.5 / (18.5 / -8) + 8.5)), 'value 16 in the high nibble of byte 0');

    const prng = new Prng(3);
    const values = Float32Array.from({length: 32 * 500}, () => prng.normal() * (prng.next() < 0.1 ? 10 : 0.1));
    for (const [type, quantize, maxSteps] of [['Q8_0', quantizeQ8_0, 0.6], ['Q4_0', quantizeQ4_0, 1.01]] as const) {
        const restored = dequantize(type, quantize(values));
        for (let block = 0; block < 500; block++) {
            const slice = values.subarray(block * 32, block * 32 + 32);
            const amax = Math.max(...slice.map(Math.abs));
            const step = amax / (type === 'Q8_0' ? 127 : 8);
            for (let i = 0; i < 32; i++)
                if (Math.abs(restored[block * 32 + i]! - slice[i]!) > maxSteps * step)
                    return t.fail(`${type} block ${block} value ${i}: ${slice[i]} became ${restored[block * 32 + i]}`);
        }
    }
    t.throws(() => quantizeQ8_0(new Float32Array(31)), {instanceOf: RangeError});
});

test('quantized demo models load in llama.cpp and generate', async (t) => {
    const {dataDir, cleanup} = await createDataDirWithDemoModel({layers: 2, width: 64, headCount: 4, feedForwardLength: 64});
    t.teardown(cleanup);
    const llama = await getLlama({gpu: false, build: 'never'});
    for (const [weightType, ggmlType] of [['Q8_0', 8], ['Q4_0', 2]] as const) {
        const path = join(dataDir, `${weightType}.gguf`);
        await writeDemoModel(path, {layers: 2, width: 64, headCount: 4, feedForwardLength: 96, weightType});
        const info = await readGgufFileInfo(path);
        t.is(info.fullTensorInfo!.find((tensor) => tensor.name === 'blk.1.ffn_down.weight')!.ggmlType, ggmlType);
        t.is(info.fullTensorInfo!.find((tensor) => tensor.name === 'blk.1.ffn_norm.weight')!.ggmlType, 0, 'norms stay F32');
        const model = await llama.loadModel({modelPath: path});
        const context = await model.createContext({contextSize: 256, threads: 1});
        const text = await new LlamaCompletion({contextSequence: context.getSequence()})
            .generateCompletion('Such wow', {temperature: 0, maxTokens: 8});
        t.true(text.length > 0, weightType);
        await model.dispose();
    }
});
