import {createHash} from 'node:crypto';
import {copyFile, mkdtemp, open, readFile, rm, utimes, writeFile} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import test from 'ava';
import {readGgufFileInfo} from 'node-llama-cpp';
import type {TensorDigest} from '../core/tensor-digest.js';
import {writeDemoModel} from '../engine/demo/demo-model.js';
import {digestsOfLayers, TensorDigestError, tensorDigests} from '../engine/tensor-digests.js';

/** Feed-forward matrices of 2048 × 2816 F16 (11.5 MB) pass ggml-rpc's 10 MiB threshold; attention ones (8 MiB) do not. */
const WIDE = {layers: 2, width: 2048, headCount: 16, feedForwardLength: 2816};
const FFN_BYTES = 2048 * 2816 * 2;
/** A whole second, so that setting it back gives exactly the modification time the record holds. */
const MTIME_S = 1_700_000_000;

let dir: string;
let model: string;
let content: Buffer;
let sha256: string;

test.before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'strongdoge-digests-'));
    model = join(dir, 'wide.gguf');
    await writeDemoModel(model, WIDE);
    content = await readFile(model);
    sha256 = createHash('sha256').update(content).digest('hex');
});

test.after.always(() => rm(dir, {recursive: true, force: true}));

const sha256Of = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
const cacheDir = (name: string) => join(dir, 'cache', name);

/** A copy of the model that a test may change, and its own cache. */
async function ownCopy(name: string) {
    const path = join(dir, `${name}.gguf`);
    await copyFile(model, path);
    await utimes(path, MTIME_S, MTIME_S);
    return {path, cache: cacheDir(name)};
}

test('each large tensor gets the SHA-256 of exactly its bytes, where node-llama-cpp places it, in file order', async (t) => {
    const fractions: number[] = [];
    const digests = await tensorDigests(model, sha256, cacheDir('exact'), {onProgress: (fraction) => fractions.push(fraction)});

    t.deepEqual(digests.map((digest) => digest.name).sort(),
        ['0', '1'].flatMap((layer) => ['down', 'gate', 'up'].map((kind) => `blk.${layer}.ffn_${kind}.weight`)).sort());
    const info = await readGgufFileInfo(model, {readTensorInfo: true});
    for (const digest of digests) {
        const tensor = info.fullTensorInfo!.find((candidate) => candidate.name === digest.name)!;
        t.is(digest.offset, Number(tensor.fileOffset), digest.name);
        t.is(digest.bytes, FFN_BYTES);
        t.is(digest.sha256, sha256Of(content.subarray(digest.offset, digest.offset + digest.bytes)), digest.name);
    }
    t.deepEqual(digests.map((digest) => digest.offset), digests.map((digest) => digest.offset).sort((a, b) => a - b));
    t.is(new Set(digests.map((digest) => digest.sha256)).size, digests.length, 'random weights: no two tensors alike');
    t.true(fractions.length > 0);
    t.is(fractions.at(-1), 1);
    t.deepEqual(fractions, [...fractions].sort((a, b) => a - b), 'progress only grows');
});

test('the layer filter keeps the blocks in range', async (t) => {
    const digests = await tensorDigests(model, sha256, cacheDir('layers'));
    const names = (range: [number, number]) => digestsOfLayers(digests, range).map((digest) => digest.name);
    t.deepEqual(names([1, 1]).sort(), ['blk.1.ffn_down.weight', 'blk.1.ffn_gate.weight', 'blk.1.ffn_up.weight']);
    t.is(names([0, 1]).length, 6);
    t.deepEqual(names([2, 5]), []);
    const other: TensorDigest = {name: 'output.weight', offset: 0, bytes: 1, sha256: '0'.repeat(64)};
    const tenth: TensorDigest = {...other, name: 'blk.10.ffn_up.weight'};
    t.deepEqual(digestsOfLayers([other, tenth, ...digests], [10, 12]), [tenth], 'blk.10 is not blk.1; other tensors belong to no block');
});

test('digests are read from the cache while the file keeps its size and time, and computed again when it does not', async (t) => {
    const {path, cache} = await ownCopy('cached');
    const first = await tensorDigests(path, sha256, cache);

    // Change a tensor's bytes behind the record's back: a second call that read the file would see it.
    const changed = first[0]!;
    const handle = await open(path, 'r+');
    await handle.write(Buffer.alloc(64, 0x5a), 0, 64, changed.offset + 1000);
    await handle.close();
    await utimes(path, MTIME_S, MTIME_S);
    let progressed = false;
    t.deepEqual(await tensorDigests(path, sha256, cache, {onProgress: () => progressed = true}), first);
    t.false(progressed, 'the file was not read');

    // Now the time says it changed: read again, and the changed tensor's digest follows its bytes.
    await utimes(path, MTIME_S + 60, MTIME_S + 60);
    const again = await tensorDigests(path, sha256, cache);
    const bytes = await readFile(path);
    t.is(again[0]!.sha256, sha256Of(bytes.subarray(changed.offset, changed.offset + changed.bytes)));
    t.not(again[0]!.sha256, changed.sha256);
    t.deepEqual(again.slice(1), first.slice(1));
});

test('a damaged record is computed again', async (t) => {
    const {path, cache} = await ownCopy('damaged');
    const right = await tensorDigests(path, sha256, cache);
    const record = join(cache, `${sha256}.json`);
    const valid = JSON.parse(await readFile(record, 'utf8')) as {size: number, mtimeMs: number, tensors: TensorDigest[]};
    t.is(valid.tensors.length, 6);
    const damaged = [
        '{"size": 1',
        JSON.stringify({...valid, tensors: 'none'}),
        JSON.stringify({...valid, tensors: [{...valid.tensors[0], sha256: 'xyz'}]}),
        JSON.stringify({...valid, tensors: [{...valid.tensors[0], offset: -1}]}),
        JSON.stringify({...valid, tensors: [{...valid.tensors[0], bytes: valid.size}]}),
        JSON.stringify({...valid, tensors: [{...valid.tensors[0], name: 7}]}),
        JSON.stringify({...valid, tensors: [null]}),
        JSON.stringify({...valid, size: valid.size + 1})
    ];
    for (const text of damaged) {
        await writeFile(record, text);
        let progressed = false;
        t.deepEqual(await tensorDigests(path, sha256, cache, {onProgress: () => progressed = true}), right, text.slice(0, 120));
        t.true(progressed, `read again after ${text.slice(0, 120)}`);
    }
    t.deepEqual(JSON.parse(await readFile(record, 'utf8')), valid, 'and the record is whole again');
});

test('calls for the same file at once share one reading', async (t) => {
    const {path, cache} = await ownCopy('shared');
    const heard = [0, 0];
    const first = tensorDigests(path, sha256, cache, {onProgress: () => heard[0]!++});
    const second = tensorDigests(path, sha256, cache, {onProgress: () => heard[1]!++});
    t.is(first, second, 'one computation');
    t.deepEqual(await first, await second);
    t.true(heard[0]! > 0 && heard[0] === heard[1], 'both callers hear its progress');

    // Once it is done, a new call reads the record: a new computation, but no reading.
    let progressed = false;
    const later = tensorDigests(path, sha256, cache, {onProgress: () => progressed = true});
    t.not(later, first);
    t.deepEqual(await later, await first);
    t.false(progressed);
});

test('a file hash that is not lowercase hex is refused before it names a file', async (t) => {
    for (const bad of ['../../etc/passwd', 'A'.repeat(64), 'a'.repeat(63), '']) {
        const error = await t.throwsAsync(tensorDigests(model, bad, cacheDir('bad')), {instanceOf: TensorDigestError});
        t.is(error?.code, 'INVALID_SHA256');
    }
});
