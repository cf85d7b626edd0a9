import {mkdtemp, readdir, readFile, rm, stat} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import test from 'ava';
import {readGgufFileInfo} from 'node-llama-cpp';
import {writeDemoModel} from '../engine/demo/demo-model.js';
import {Prng} from '../engine/demo/prng.js';
import {Fnv1a64, HASH_THRESHOLD_BYTES, seedTensorCache} from '../engine/rpc/tensor-cache-seed.js';

/** FNV-1a 64 as its definition says, in BigInt: the reference the fast version must match. */
function referenceFnv(bytes: Uint8Array) {
    let hash = 0xcbf29ce484222325n;
    for (const byte of bytes)
        hash = ((hash ^ BigInt(byte)) * 0x100000001b3n) & 0xffffffffffffffffn;
    return hash.toString(16).padStart(16, '0');
}

test('FNV-1a 64 gives the published values and matches the definition on random data, in one piece or many', (t) => {
    const text = (value: string) => new Fnv1a64().update(Buffer.from(value)).hex();
    t.is(text(''), 'cbf29ce484222325');
    t.is(text('a'), 'af63dc4c8601ec8c');
    t.is(text('foobar'), '85944171f73967e8');
    const prng = new Prng(7);
    for (const length of [1, 3, 255, 4096, 100_000]) {
        const bytes = Uint8Array.from({length}, () => Math.floor(prng.next() * 256));
        const pieces = new Fnv1a64();
        for (let offset = 0; offset < length; offset += 777)
            pieces.update(bytes.subarray(offset, offset + 777));
        t.is(new Fnv1a64().update(bytes).hex(), referenceFnv(bytes), `length ${length}`);
        t.is(pieces.hex(), referenceFnv(bytes));
    }
});

test('seeding writes each tensor over the threshold under its hash, byte for byte, once', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'strongdoge-seed-'));
    t.teardown(() => rm(dir, {recursive: true, force: true}));
    // Feed-forward matrices of 2048 × 2816 F16 (11.5 MB) pass the threshold; attention ones (8 MiB) do not.
    const model = join(dir, 'wide.gguf');
    await writeDemoModel(model, {layers: 1, width: 2048, headCount: 16, feedForwardLength: 2816});
    const cache = join(dir, 'cache');
    const first = await seedTensorCache(model, cache);
    t.is(first.seeded, 3);
    t.is(first.present, 0);
    const files = (await readdir(cache)).sort();
    t.is(files.length, 3);
    t.true(files.every((file) => /^[0-9a-f]{16}$/.test(file)));
    const info = await readGgufFileInfo(model, {readTensorInfo: true});
    const file = await readFile(model);
    const matrices = info.fullTensorInfo!.filter((candidate) => /^blk\.0\.ffn_(gate|up|down)\.weight$/.test(candidate.name));
    t.is(matrices.length, 3);
    for (const tensor of matrices) {
        const bytes = tensor.dimensions.map(Number).reduce((product, dimension) => product * dimension, 2);
        t.true(bytes > HASH_THRESHOLD_BYTES);
        const data = file.subarray(Number(tensor.fileOffset), Number(tensor.fileOffset) + bytes);
        const name = new Fnv1a64().update(data).hex();
        t.true(files.includes(name), tensor.name);
        t.is((await stat(join(cache, name))).size, bytes);
        t.true((await readFile(join(cache, name))).equals(data));
    }
    const again = await seedTensorCache(model, cache);
    t.deepEqual({seeded: again.seeded, present: again.present}, {seeded: 0, present: 3});
});
