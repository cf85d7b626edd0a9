import {createHash, randomBytes} from 'node:crypto';
import {once} from 'node:events';
import {mkdtemp, readdir, readFile, rm, stat, utimes, writeFile} from 'node:fs/promises';
import {createServer as createHttpServer} from 'node:http';
import {connect as connectTcp, type AddressInfo} from 'node:net';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import test, {type ExecutionContext} from 'ava';
import type {TensorDigest} from '../core/tensor-digest.js';
import {serveFile} from '../harness/file-server.js';
import {
    fetchLayers, isPrivateAddress, LayerFetchError, type LayerFetchProgress, pruneTensorStore, storedTensor
} from '../engine/rpc/layer-fetch.js';
import {Fnv1a64, HASH_THRESHOLD_BYTES} from '../engine/rpc/tensor-cache-seed.js';

const MIB = 1024 * 1024;
/** A stand-in model file: random bytes with three "tensors" over ggml-rpc's hash threshold at unaligned offsets. */
const content = randomBytes(40 * MIB);
const tensors: TensorDigest[] = [
    [4_096, HASH_THRESHOLD_BYTES + 1_000],
    [12 * MIB + 3, HASH_THRESHOLD_BYTES + 2_000],
    [25 * MIB + 77, HASH_THRESHOLD_BYTES + 3_000]
].map(([offset, bytes], index) => ({
    name: `blk.${index}.ffn_up.weight`,
    offset: offset!,
    bytes: bytes!,
    sha256: createHash('sha256').update(content.subarray(offset!, offset! + bytes!)).digest('hex')
}));
const totalBytes = tensors.reduce((sum, tensor) => sum + tensor.bytes, 0);
const bytesOf = (tensor: TensorDigest) => content.subarray(tensor.offset, tensor.offset + tensor.bytes);
const fnvOf = (tensor: TensorDigest) => new Fnv1a64().update(bytesOf(tensor)).hex();
const rangeOf = (tensor: TensorDigest, from = 0) => `bytes=${tensor.offset + from}-${tensor.offset + tensor.bytes - 1}`;

async function storeDir(t: ExecutionContext) {
    const dir = await mkdtemp(join(tmpdir(), 'layer-fetch-'));
    t.teardown(() => rm(dir, {recursive: true, force: true}));
    return dir;
}

async function serve(t: ExecutionContext, name = 'model.gguf') {
    const server = await serveFile(name, content);
    t.teardown(() => server.close());
    return server;
}

async function until(condition: () => boolean | Promise<boolean>) {
    while (!await condition())
        await sleep(5);
}

const sizeOf = (path: string) => stat(path).then((found) => found.size, () => -1);

test('downloads exactly the tensors\' ranges and names each file <sha256>.<FNV-1a 64 of its bytes>, 0644', async (t) => {
    const server = await serve(t);
    const dir = await storeDir(t);
    const reports: LayerFetchProgress[] = [];
    // One tensor listed twice (tied weights) is fetched once.
    const outcome = await fetchLayers({
        source: server.url, tensors: [...tensors, {...tensors[0]!, name: 'output.weight'}], storeDir: dir,
        allowPrivateAddresses: true, onProgress: (progress) => reports.push(progress)
    });
    t.deepEqual(outcome.failed, []);
    t.is(outcome.present, 0);
    t.is(outcome.totalBytes, totalBytes);
    t.is(outcome.downloadedBytes, totalBytes);
    t.true(outcome.bytesPerSecond! > 0);
    t.deepEqual(server.requests.map((request) => request.range).sort(), tensors.map((tensor) => rangeOf(tensor)).sort());
    t.is(server.bytesSent(), totalBytes);
    for (const tensor of tensors) {
        const stored = outcome.stored.find((found) => found.sha256 === tensor.sha256)!;
        t.deepEqual(stored, {sha256: tensor.sha256, fnv: fnvOf(tensor), path: join(dir, `${tensor.sha256}.${fnvOf(tensor)}`), bytes: tensor.bytes});
        t.true((await readFile(stored.path)).equals(bytesOf(tensor)));
        t.is((await stat(stored.path)).mode & 0o777, 0o644);
        t.deepEqual(await storedTensor(dir, tensor.sha256), stored);
    }
    t.deepEqual((await readdir(dir)).sort(), tensors.map((tensor) => `${tensor.sha256}.${fnvOf(tensor)}`).sort());
    t.deepEqual(reports.at(-1), {doneBytes: totalBytes, totalBytes, tensorsDone: 3, tensorsFailed: 0});

    const again = await fetchLayers({source: server.url, tensors, storeDir: dir, allowPrivateAddresses: true});
    t.is(again.present, 3);
    t.is(again.stored.length, 3);
    t.is(again.downloadedBytes, 0);
    t.is(again.bytesPerSecond, null);
    t.is(server.requests.length, 3, 'tensors in the store are not fetched again');
});

test('runs as many range requests at once as asked', async (t) => {
    const server = await serve(t);
    const dir = await storeDir(t);
    server.hold(true);
    const fetching = fetchLayers({source: server.url, tensors, storeDir: dir, concurrency: 2, allowPrivateAddresses: true});
    // Held, no request can end: a third could only start if the limit were not kept.
    await until(() => server.requests.length === 2);
    server.hold(false);
    const outcome = await fetching;
    t.is(outcome.stored.length, 3);
    t.is(server.requests.length, 3);
    t.is(server.maxInFlight(), 2);
});

test('a corrupted range fails only its tensor, with the mismatch, and leaves no file', async (t) => {
    const server = await serve(t);
    const dir = await storeDir(t);
    const bad = tensors[1]!;
    server.corrupt(bad.offset + 5 * MIB, bad.offset + 5 * MIB);
    const outcome = await fetchLayers({source: server.url, tensors, storeDir: dir, allowPrivateAddresses: true});
    t.is(outcome.stored.length, 2);
    t.is(outcome.failed.length, 1);
    t.is(outcome.failed[0]!.digest.sha256, bad.sha256);
    t.is(outcome.failed[0]!.code, 'sha-mismatch');
    t.regex(outcome.failed[0]!.reason, new RegExp(`SHA-256 [0-9a-f]{64}, not ${bad.sha256}`));
    t.is(server.requests.length, 3, 'a mismatch is not retried');
    t.false((await readdir(dir)).some((name) => name.includes(bad.sha256)));
    t.is(await storedTensor(dir, bad.sha256), undefined);
});

test('a source that ignores range requests, a missing file and a source that is down fail every tensor with why', async (t) => {
    const dir = await storeDir(t);
    const whole = await serve(t);
    whole.ignoreRanges();
    const ignoring = await fetchLayers({source: whole.url, tensors, storeDir: dir, allowPrivateAddresses: true});
    t.deepEqual(ignoring.failed.map((failure) => failure.code), ['ranges-ignored', 'ranges-ignored', 'ranges-ignored']);
    t.regex(ignoring.failed[0]!.reason, /ignores range requests/);
    t.true(whole.requests.length <= 3);

    const missing = await serve(t);
    const notFound = await fetchLayers({source: `${missing.origin}/other.gguf`, tensors, storeDir: dir, allowPrivateAddresses: true});
    t.deepEqual(notFound.failed.map((failure) => failure.code), ['not-found', 'not-found', 'not-found']);
    t.regex(notFound.failed[0]!.reason, /HTTP 404/);

    const gone = await serveFile('model.gguf', content);
    await gone.close();
    const down = await fetchLayers({source: gone.url, tensors, storeDir: dir, allowPrivateAddresses: true, attempts: 2, concurrency: 1});
    t.deepEqual(down.failed.map((failure) => failure.code), ['unreachable', 'unreachable', 'unreachable']);
    t.regex(down.failed[0]!.reason, /ECONNREFUSED/);
    t.is(down.stored.length, 0);
    t.deepEqual(await readdir(dir), [], 'no partial or owner file is left where nothing arrived');
});

test('a 503 is retried', async (t) => {
    const server = await serve(t);
    const dir = await storeDir(t);
    server.failNext(1, 503);
    const outcome = await fetchLayers({source: server.url, tensors: [tensors[0]!], storeDir: dir, allowPrivateAddresses: true});
    t.is(outcome.stored.length, 1);
    t.deepEqual(server.requests.map((request) => request.status), [503, 206]);
});

test('an interrupted download resumes where its partial file ends, and verifies', async (t) => {
    const server = await serve(t);
    const dir = await storeDir(t);
    const tensor = tensors[2]!;
    const kept = 3 * MIB + 17;
    const part = join(dir, `.part-${tensor.sha256}`);
    server.stallAt(tensor.offset + kept);
    const controller = new AbortController();
    const first = fetchLayers({source: server.url, tensors: [tensor], storeDir: dir, allowPrivateAddresses: true, signal: controller.signal});
    await until(async () => await sizeOf(part) === kept);
    t.deepEqual(await pruneTensorStore(dir, 0), {removedFiles: 0, removedBytes: 0, keptBytes: kept}, 'a partial file being written is kept');
    controller.abort();
    await t.throwsAsync(first, {any: true, name: 'AbortError'});
    t.is(await sizeOf(part), kept, 'the partial file is kept');
    t.deepEqual(await pruneTensorStore(dir, 64 * MIB), {removedFiles: 0, removedBytes: 0, keptBytes: kept}, 'within the limit, it stays to be resumed');

    server.stallAt(undefined);
    const outcome = await fetchLayers({source: server.url, tensors: [tensor], storeDir: dir, allowPrivateAddresses: true});
    t.is(outcome.stored.length, 1);
    t.is(server.requests.at(-1)!.range, rangeOf(tensor, kept));
    t.is(server.requests.at(-1)!.bytes, tensor.bytes - kept);
    t.is(outcome.downloadedBytes, tensor.bytes - kept);
    t.true((await readFile(outcome.stored[0]!.path)).equals(bytesOf(tensor)));
    t.is(outcome.stored[0]!.fnv, fnvOf(tensor));
    t.deepEqual(await readdir(dir), [`${tensor.sha256}.${fnvOf(tensor)}`]);
});

test('a connection cut mid-tensor is retried from the bytes kept', async (t) => {
    const server = await serve(t);
    const dir = await storeDir(t);
    const tensor = tensors[0]!;
    const kept = 2 * MIB + 5;
    server.stallAt(tensor.offset + kept);
    const fetching = fetchLayers({source: server.url, tensors: [tensor], storeDir: dir, allowPrivateAddresses: true});
    await until(async () => await sizeOf(join(dir, `.part-${tensor.sha256}`)) === kept);
    server.stallAt(undefined);
    server.dropStalled();
    const outcome = await fetching;
    t.deepEqual(outcome.failed, []);
    t.deepEqual(server.requests.map((request) => request.range), [rangeOf(tensor), rangeOf(tensor, kept)]);
    t.is(outcome.downloadedBytes, tensor.bytes);
    t.true((await readFile(outcome.stored[0]!.path)).equals(bytesOf(tensor)));
});

test('a URL at a private address is refused unless allowed; redirects are followed with the range', async (t) => {
    const server = await serve(t);
    server.redirect('mirror/model.gguf');
    const dir = await storeDir(t);
    const literal = await fetchLayers({source: server.url, tensors, storeDir: dir});
    t.deepEqual(literal.failed.map((failure) => failure.code), ['private-address', 'private-address', 'private-address']);
    t.regex(literal.failed[0]!.reason, /127\.0\.0\.1 is a private address/);
    // A name is checked where it resolves, in the connection's lookup.
    const named = await fetchLayers({source: `http://localhost:${server.port}/model.gguf`, tensors, storeDir: dir});
    t.deepEqual(named.failed.map((failure) => failure.code), ['private-address', 'private-address', 'private-address']);
    t.regex(named.failed[0]!.reason, /localhost is at .*, a private address/);
    t.is(server.requests.length, 0);
    t.deepEqual(await readdir(dir), []);

    const allowed = await fetchLayers({source: `${server.origin}/mirror/model.gguf`, tensors: [tensors[0]!], storeDir: dir, allowPrivateAddresses: true});
    t.is(allowed.stored.length, 1);
    t.deepEqual(server.requests.map(({path, range, status}) => ({path, range, status})), [
        {path: '/mirror/model.gguf', range: rangeOf(tensors[0]!), status: 302},
        {path: '/model.gguf', range: rangeOf(tensors[0]!), status: 206}
    ]);
});

test('private addresses: loopback, RFC 1918, CGNAT, link-local, multicast, reserved, unspecified, IPv6, IPv4-mapped, NAT64, 6to4 and Teredo', (t) => {
    for (const address of [
        '127.0.0.1', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '100.64.0.1', '169.254.169.254', '224.0.0.1',
        '0.0.0.0', '255.255.255.255', '::1', '[::1]', '::', 'fd00::1', 'fe80::1%eth0', 'ff02::1', '::ffff:127.0.0.1',
        '::ffff:7f00:1', '::ffff:10.0.0.1', '::ffff:a9fe:a9fe',
        // Benchmarking, IETF protocol assignments, TEST-NETs, reserved.
        '198.18.0.1', '198.19.255.255', '192.0.0.8', '192.0.2.1', '198.51.100.7', '203.0.113.9', '240.0.0.1', '::ffff:198.18.0.1',
        // NAT64 and 6to4 to a private IPv4 address; local-use NAT64, Teredo and documentation whatever they hold.
        '64:ff9b::7f00:1', '64:ff9b::10.0.0.1', '[64:ff9b::192.168.1.1]', '64:ff9b::169.254.169.254', '64:ff9b:1::8.8.8.8',
        '64:ff9b:1:abcd::1', '2002:7f00:1::1', '2002:a00:1::', '2002:c0a8:101:1::1', '2001:0:4136:e378:8000:63bf:3fff:fdd2',
        '2001::1', '2001:db8::1'
    ])
        t.true(isPrivateAddress(address), address);
    for (const address of [
        '8.8.8.8', '172.32.0.1', '100.128.0.1', '1.1.1.1', '2606:4700:4700::1111', '::ffff:8.8.8.8', 'example.com',
        '198.17.255.255', '198.20.0.1', '192.0.1.1', '203.0.114.1', '223.255.255.255', '64:ff9b::8.8.8.8', '64:ff9b::808:808',
        '2002:808:808::1', '2001:4860:4860::8888'
    ])
        t.false(isPrivateAddress(address), address);
});

test('inputs from a peer are checked before anything is fetched', async (t) => {
    const dir = await storeDir(t);
    const good = tensors[0]!;
    const invalid = [
        {...good, sha256: good.sha256.toUpperCase()},
        {...good, sha256: '../../etc/passwd'},
        {...good, offset: -1},
        {...good, offset: 1.5},
        {...good, bytes: 0},
        {...good, bytes: Number.MAX_SAFE_INTEGER},
        {...good, name: 42 as unknown as string}
    ];
    for (const tensor of invalid) {
        const error = await t.throwsAsync(fetchLayers({source: 'https://example.com/model.gguf', tensors: [tensor], storeDir: dir}), {instanceOf: LayerFetchError});
        t.is(error.code, 'invalid-input');
    }
    await t.throwsAsync(fetchLayers({source: 'https://example.com/m.gguf', tensors: [good, {...good, bytes: good.bytes + 1}], storeDir: dir}), {message: /given with/});
    await t.throwsAsync(fetchLayers({source: 'ftp://example.com/model.gguf', tensors: [good], storeDir: dir}), {instanceOf: LayerFetchError});
    await t.throwsAsync(fetchLayers({source: 'hf:user/repo:Q4_K_M', tensors: [good], storeDir: dir}), {instanceOf: LayerFetchError});
    await t.throwsAsync(fetchLayers({source: 'hf:user/repo/model.gguf#..', tensors: [good], storeDir: dir}), {instanceOf: LayerFetchError});
    await t.throwsAsync(fetchLayers({source: 'https://example.com/model.gguf', tensors: [good], storeDir: dir, concurrency: 0}), {instanceOf: LayerFetchError});
    await t.throwsAsync(storedTensor(dir, '../x'), {instanceOf: LayerFetchError});
    t.deepEqual(await readdir(dir), []);
});

test('a tensor another live process is downloading into the store is left to it', async (t) => {
    const server = await serve(t);
    const dir = await storeDir(t);
    const tensor = tensors[0]!;
    await writeFile(join(dir, `.part-${tensor.sha256}.owner`), String(process.ppid));
    const outcome = await fetchLayers({source: server.url, tensors, storeDir: dir, allowPrivateAddresses: true});
    t.is(outcome.stored.length, 2);
    t.deepEqual(outcome.failed.map((failure) => failure.code), ['busy']);
});

test('pruning removes the least recently used tensors and partial files of dead processes', async (t) => {
    const dir = await storeDir(t);
    const sha = (index: number) => String(index).repeat(64);
    const fnv = 'ab'.repeat(8);
    for (const index of [1, 2, 3]) {
        const path = join(dir, `${sha(index)}.${fnv}`);
        await writeFile(path, Buffer.alloc(1_000));
        // Tensor 2 was used last, tensor 1 first.
        const usedAt = new Date(Date.UTC(2024, 0, [1, 3, 2][index - 1]));
        await utimes(path, usedAt, usedAt);
    }
    await writeFile(join(dir, `.part-${sha(4)}`), Buffer.alloc(300));
    await writeFile(join(dir, `.part-${sha(4)}.owner`), '2147483646');
    await writeFile(join(dir, `.part-${sha(5)}`), Buffer.alloc(200));
    await writeFile(join(dir, `.part-${sha(5)}.owner`), String(process.ppid));
    // This process's pid, but another process's record (a container's earlier incarnation had the same pid).
    await writeFile(join(dir, `.part-${sha(6)}`), Buffer.alloc(100));
    await writeFile(join(dir, `.part-${sha(6)}.owner`), String(process.pid));
    await writeFile(join(dir, `.part-${sha(7)}`), Buffer.alloc(50));
    await writeFile(join(dir, `.part-${sha(7)}.owner`), `${process.pid} 0123456789abcdef`);
    await writeFile(join(dir, 'unrelated.txt'), 'kept');

    t.deepEqual(await pruneTensorStore(dir, 1_500), {removedFiles: 5, removedBytes: 2_450, keptBytes: 1_200});
    t.deepEqual((await readdir(dir)).sort(), [`.part-${sha(5)}`, `.part-${sha(5)}.owner`, `${sha(2)}.${fnv}`, 'unrelated.txt'].sort());
    t.truthy(await storedTensor(dir, sha(2)));
    t.is(await storedTensor(dir, sha(1)), undefined);
    t.deepEqual(await pruneTensorStore(dir, 10_000), {removedFiles: 0, removedBytes: 0, keptBytes: 1_200});
});

test('a failed or aborted call\'s partial file is kept to be resumed but pruned like a tensor, least recently used first', async (t) => {
    const server = await serve(t);
    const dir = await storeDir(t);
    const tensor = tensors[1]!;
    const part = join(dir, `.part-${tensor.sha256}`);
    // A source that sends all but the last byte, as a peer could make one do for fresh SHA-256s.
    server.stallAt(tensor.offset + tensor.bytes - 1);
    const outcome = await fetchLayers({source: server.url, tensors: [tensor], storeDir: dir, allowPrivateAddresses: true, attempts: 1, stallTimeoutMs: 300});
    t.deepEqual(outcome.failed.map((failure) => failure.code), ['transfer-failed']);
    t.is(await sizeOf(part), tensor.bytes - 1);
    const aborted = tensors[2]!;
    server.stallAt(aborted.offset + MIB);
    const controller = new AbortController();
    const fetching = fetchLayers({source: server.url, tensors: [aborted], storeDir: dir, allowPrivateAddresses: true, signal: controller.signal});
    await until(async () => await sizeOf(join(dir, `.part-${aborted.sha256}`)) === MIB);
    controller.abort();
    await t.throwsAsync(fetching, {any: true, name: 'AbortError'});
    const old = join(dir, `${'1'.repeat(64)}.${'ab'.repeat(8)}`);
    await writeFile(old, Buffer.alloc(1_000));
    await utimes(old, new Date(Date.UTC(2024, 0, 1)), new Date(Date.UTC(2024, 0, 1)));

    const partials = tensor.bytes - 1 + MIB;
    t.deepEqual(await pruneTensorStore(dir, partials), {removedFiles: 1, removedBytes: 1_000, keptBytes: partials}, 'the older tensor goes first');
    t.deepEqual(await pruneTensorStore(dir, 0), {removedFiles: 2, removedBytes: partials, keptBytes: 0});
    t.deepEqual(await readdir(dir), [], 'each partial file goes with its owner record');
});

test('a tensor size that is not the stored tensor\'s fails that tensor and leaves the verified file', async (t) => {
    const server = await serve(t);
    const dir = await storeDir(t);
    const [tensor, other] = [tensors[0]!, tensors[1]!];
    await fetchLayers({source: server.url, tensors: [tensor], storeDir: dir, allowPrivateAddresses: true});
    const path = join(dir, `${tensor.sha256}.${fnvOf(tensor)}`);
    for (const bytes of [tensor.bytes + 1, tensor.bytes - 1]) {
        const outcome = await fetchLayers({source: server.url, tensors: [{...tensor, bytes}, other], storeDir: dir, allowPrivateAddresses: true});
        t.deepEqual(outcome.failed.map((failure) => failure.code), ['invalid-input']);
        t.regex(outcome.failed[0]!.reason, new RegExp(`is a tensor of ${tensor.bytes} bytes, not ${bytes}`));
        t.deepEqual(outcome.stored.map((stored) => stored.sha256), [other.sha256]);
        t.true((await readFile(path)).equals(bytesOf(tensor)));
    }
    // Asked while another call downloads it: the same, once that one stored it.
    await rm(path);
    server.hold(true);
    const first = fetchLayers({source: server.url, tensors: [tensor], storeDir: dir, allowPrivateAddresses: true});
    await until(() => server.requests.length === 3);
    // Let go once this call looked at the store, so that it waits for the first call's download.
    const second = fetchLayers({source: server.url, tensors: [{...tensor, bytes: tensor.bytes + 1}], storeDir: dir, allowPrivateAddresses: true,
        onProgress: () => server.hold(false)});
    t.deepEqual((await first).failed, []);
    t.deepEqual((await second).failed.map((failure) => failure.code), ['invalid-input']);
    t.true((await readFile(path)).equals(bytesOf(tensor)));
    t.is(server.requests.length, 3, 'no size a peer claims is downloaded');
});

test('a partial file of other bytes (a hostile source\'s) is downloaded again from zero, once', async (t) => {
    const server = await serve(t);
    const dir = await storeDir(t);
    const tensor = tensors[2]!;
    const part = join(dir, `.part-${tensor.sha256}`);
    await writeFile(part, randomBytes(MIB));
    const outcome = await fetchLayers({source: server.url, tensors: [tensor], storeDir: dir, allowPrivateAddresses: true});
    t.deepEqual(outcome.failed, []);
    t.deepEqual(server.requests.map((request) => request.range), [rangeOf(tensor, MIB), rangeOf(tensor)]);
    t.true((await readFile(outcome.stored[0]!.path)).equals(bytesOf(tensor)));

    // A source whose bytes are wrong too fails after that one retry.
    const bad = tensors[0]!;
    await writeFile(join(dir, `.part-${bad.sha256}`), randomBytes(MIB));
    server.corrupt(bad.offset + 2 * MIB, bad.offset + 2 * MIB);
    const failed = await fetchLayers({source: server.url, tensors: [bad], storeDir: dir, allowPrivateAddresses: true});
    t.deepEqual(failed.failed.map((failure) => failure.code), ['sha-mismatch']);
    t.deepEqual(server.requests.slice(2).map((request) => request.range), [rangeOf(bad, MIB), rangeOf(bad)]);
    t.false((await readdir(dir)).some((name) => name.includes(bad.sha256)));
});

test('a source that drips its bytes fails as a stall by the tensor\'s deadline; a call waiting for that tensor then uses its own source', async (t) => {
    const drip = createHttpServer((req, res) => {
        const [, from = '0', to = '0'] = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '') ?? [];
        res.writeHead(206, {'content-length': String(Number(to) - Number(from) + 1), 'content-range': `bytes ${from}-${to}/${content.length}`});
        // A byte now and then, each well within the stall timeout.
        let at = Number(from);
        const timer = setInterval(() => res.write(content.subarray(at, ++at)), 20);
        res.on('close', () => clearInterval(timer));
    });
    drip.listen(0, '127.0.0.1');
    await once(drip, 'listening');
    t.teardown(() => {
        drip.closeAllConnections();
        drip.close();
    });
    const honest = await serve(t);
    const dir = await storeDir(t);
    const tensor = tensors[0]!;
    const part = join(dir, `.part-${tensor.sha256}`);
    const dripping = fetchLayers({
        source: `http://127.0.0.1:${(drip.address() as AddressInfo).port}/model.gguf`, tensors: [tensor], storeDir: dir,
        allowPrivateAddresses: true, stallTimeoutMs: 1_000, minBytesPerSecond: 64 * MIB
    });
    await until(async () => await sizeOf(part) > 0);
    const waiting = fetchLayers({source: honest.url, tensors: [tensor], storeDir: dir, allowPrivateAddresses: true});
    const dripped = await dripping;
    t.deepEqual(dripped.failed.map((failure) => failure.code), ['transfer-failed']);
    t.regex(dripped.failed[0]!.reason, /given up as a stall/);
    const outcome = await waiting;
    t.deepEqual(outcome.failed, []);
    const resumedAt = Number(/^bytes=(\d+)-/.exec(honest.requests[0]!.range ?? '')?.[1]);
    t.true(resumedAt > tensor.offset && resumedAt < tensor.offset + tensor.bytes, 'the dripped bytes are resumed');
    t.true((await readFile(outcome.stored[0]!.path)).equals(bytesOf(tensor)));
});

test.serial('an hf: reference resolves against HF_ENDPOINT, which is exempt from the private address check', async (t) => {
    const hub = await serve(t, 'doge-lab/big-GGUF/resolve/main/model.gguf');
    const dir = await storeDir(t);
    const saved = {HF_ENDPOINT: process.env.HF_ENDPOINT, MODEL_ENDPOINT: process.env.MODEL_ENDPOINT};
    process.env.HF_ENDPOINT = hub.origin;
    delete process.env.MODEL_ENDPOINT;
    t.teardown(() => restoreEnv(saved));
    const outcome = await fetchLayers({source: 'hf:doge-lab/big-GGUF/model.gguf', tensors, storeDir: dir});
    t.deepEqual(outcome.failed, []);
    t.is(outcome.stored.length, 3);
    t.true(hub.requests.every((request) => request.path === '/doge-lab/big-GGUF/resolve/main/model.gguf'));
});

test.serial('HTTP_PROXY is honoured, and NO_PROXY exempts a host', async (t) => {
    const hub = await serve(t, 'doge-lab/big-GGUF/resolve/main/model.gguf');
    const dir = await storeDir(t);
    const tunnels: string[] = [];
    const proxy = createHttpServer().on('connect', (req, client, head) => {
        tunnels.push(req.url ?? '');
        const [host, port] = (req.url ?? '').split(':');
        const upstream = connectTcp(Number(port), host, () => {
            client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
            upstream.write(head);
            upstream.pipe(client).pipe(upstream);
        });
        upstream.on('error', () => client.destroy());
        client.on('error', () => upstream.destroy());
    });
    proxy.listen(0, '127.0.0.1');
    await once(proxy, 'listening');
    t.teardown(() => {
        proxy.closeAllConnections();
        proxy.close();
    });
    const names = ['HF_ENDPOINT', 'MODEL_ENDPOINT', 'HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'NO_PROXY', 'no_proxy'];
    const saved = Object.fromEntries(names.map((name) => [name, process.env[name]]));
    t.teardown(() => restoreEnv(saved));
    for (const name of names)
        delete process.env[name];
    process.env.HF_ENDPOINT = hub.origin;
    process.env.http_proxy = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;

    const proxied = await fetchLayers({source: 'hf:doge-lab/big-GGUF/model.gguf', tensors: [tensors[0]!], storeDir: dir});
    t.is(proxied.stored.length, 1);
    t.deepEqual(tunnels, [`127.0.0.1:${hub.port}`]);

    process.env.no_proxy = '127.0.0.1';
    const direct = await fetchLayers({source: 'hf:doge-lab/big-GGUF/model.gguf', tensors: [tensors[1]!], storeDir: dir});
    t.is(direct.stored.length, 1);
    t.is(tunnels.length, 1);
});

function restoreEnv(saved: Record<string, string | undefined>) {
    for (const [name, value] of Object.entries(saved)) {
        if (value === undefined)
            delete process.env[name];
        else
            process.env[name] = value;
    }
}
