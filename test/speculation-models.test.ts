import {mkdtemp, open, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import test from 'ava';
import {getLlama, readGgufFileInfo, type Token} from 'node-llama-cpp';
import {describeDemoModel, writeDemoModel} from '../engine/demo/demo-model.js';
import {float16BitsToFloat32} from '../engine/gguf/float16.js';
import {writeSpeculationModels} from '../harness/speculation-models.js';

const SHAPE = {layers: 4, width: 64, headCount: 4, feedForwardLength: 96};

/** Each tensor's bytes as written, by name. */
async function tensorBytes(path: string) {
    const info = await readGgufFileInfo(path);
    const tensors = [...info.fullTensorInfo!].sort((a, b) => Number(a.fileOffset) - Number(b.fileOffset));
    const file = await open(path);
    try {
        const size = (await file.stat()).size;
        const bytes = new Map<string, Buffer>();
        for (const [index, tensor] of tensors.entries()) {
            const start = Number(tensor.fileOffset);
            const end = index + 1 < tensors.length ? Number(tensors[index + 1]!.fileOffset) : size;
            const buffer = Buffer.alloc(end - start);
            await file.read(buffer, 0, buffer.length, start);
            bytes.set(tensor.name, buffer);
        }
        return bytes;
    } finally {
        await file.close();
    }
}

test('quiet layers scale only their blocks\' output projections, by the gain; every other tensor is the plain model\'s', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'strongdoge-test-'));
    t.teardown(() => rm(dir, {recursive: true, force: true}));
    const gain = describeDemoModel({quietLayersFrom: 2}).config.quietLayerGain;
    await writeDemoModel(join(dir, 'plain.gguf'), SHAPE);
    await writeDemoModel(join(dir, 'quiet.gguf'), {...SHAPE, quietLayersFrom: 2});
    const plain = await tensorBytes(join(dir, 'plain.gguf'));
    const quiet = await tensorBytes(join(dir, 'quiet.gguf'));
    t.deepEqual([...quiet.keys()].sort(), [...plain.keys()].sort());
    const scaled = ['blk.2.attn_output.weight', 'blk.2.ffn_down.weight', 'blk.3.attn_output.weight', 'blk.3.ffn_down.weight'];
    for (const [name, bytes] of plain) {
        if (!scaled.includes(name)) {
            t.true(bytes.equals(quiet.get(name)!), `${name} is byte-identical`);
            continue;
        }
        // F16 weights: each quiet value is its loud one times the gain, within both roundings (subnormals absolutely).
        const loud = bytes;
        const soft = quiet.get(name)!;
        let worst = 0;
        for (let offset = 0; offset + 1 < loud.length; offset += 2) {
            const expected = float16BitsToFloat32(loud.readUInt16LE(offset)) * gain;
            const error = Math.abs(float16BitsToFloat32(soft.readUInt16LE(offset)) - expected) - (2 ** -10 * Math.abs(expected) + 2 ** -24);
            worst = Math.max(worst, error);
        }
        t.true(worst <= 0, `${name}: every value is ${gain} × the plain one's`);
        t.false(loud.equals(soft));
    }
});

test('quiet layer options out of range are rejected', (t) => {
    t.throws(() => describeDemoModel({quietLayersFrom: -1}), {instanceOf: RangeError, message: /quietLayersFrom/});
    t.throws(() => describeDemoModel({quietLayersFrom: 1.5}), {instanceOf: RangeError, message: /quietLayersFrom/});
    t.throws(() => describeDemoModel({quietLayersFrom: 2, quietLayerGain: 0}), {instanceOf: RangeError, message: /quietLayerGain/});
    t.throws(() => describeDemoModel({quietLayersFrom: 2, quietLayerGain: 2}), {instanceOf: RangeError, message: /quietLayerGain/});
});

test('the speculation models\' drafts agree with the target\'s greedy text mostly, always and almost never', async (t) => {
    const models = await writeSpeculationModels();
    t.teardown(models.cleanup);
    const llama = await getLlama({gpu: false, build: 'never'});
    const target = await llama.loadModel({modelPath: models.target});
    t.teardown(() => target.dispose());
    const prompt = target.tokenize('The swarm of doges gathered to share their GPUs and');
    const context = await target.createContext({contextSize: 512, threads: 1});
    const generated: Token[] = [];
    for await (const token of context.getSequence().evaluate(prompt, {temperature: 0})) {
        generated.push(token);
        if (generated.length === 128)
            break;
    }
    await context.dispose();

    /** The fraction of the target's tokens that `path` picks greedily after the same text. */
    async function agreement(path: string) {
        const model = path === models.target ? target : await llama.loadModel({modelPath: path});
        const draftContext = await model.createContext({contextSize: 512, threads: 1});
        const input = [...prompt, ...generated.slice(0, -1)];
        const next = await draftContext.getSequence().controlledEvaluate(input.map((token, index) =>
            index < prompt.length - 1 ? token : [token, {generateNext: {token: true, options: {temperature: 0}}}]));
        await draftContext.dispose();
        if (model !== target)
            await model.dispose();
        return generated.filter((token, index) => next[prompt.length - 1 + index]?.next?.token === token).length / generated.length;
    }
    const draft = await agreement(models.draft);
    t.true(draft >= 0.5 && draft <= 0.95, `the 2-layer draft agrees on ${draft}`);
    // The same weights batched rather than one token at a time: the last bits of a near-tie may differ.
    t.true(await agreement(models.selfDraft) >= 0.97);
    const other = await agreement(models.otherDraft);
    t.true(other <= 0.05, `the other seed's draft agrees on ${other}`);
});
