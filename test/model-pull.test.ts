import {spawn} from 'node:child_process';
import {createHash} from 'node:crypto';
import {once} from 'node:events';
import {mkdtemp, readFile, readdir, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import test from 'ava';
import {CLI_PATH, runCli, waitFor} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {serveFile} from '../harness/file-server.js';

async function fixtures(t: {teardown(fn: () => Promise<void>): void}) {
    const source = await createDataDirWithDemoModel({layers: 2, width: 64, headCount: 4, feedForwardLength: 64});
    const content = await readFile(source.modelPath);
    const dataDir = await mkdtemp(join(tmpdir(), 'strongdoge-pull-'));
    t.teardown(async () => {
        await source.cleanup();
        await rm(dataDir, {recursive: true, force: true});
    });
    return {content, sha256: createHash('sha256').update(content).digest('hex'), dataDir};
}

test('pull downloads a model by URL into the data dir and verifies its checksum', async (t) => {
    const {content, sha256, dataDir} = await fixtures(t);
    const server = await serveFile('tiny.gguf', content);
    t.teardown(server.close);
    const result = await runCli(['models', 'pull', server.url, '--sha256', sha256, '--data-dir', dataDir]);
    t.is(result.code, 0, result.stderr);
    t.regex(result.stdout, new RegExp(`pulled tiny: .* 2 layers, MOSTLY_F16, sha256 ${sha256} verified`));
    t.true((await readFile(join(dataDir, 'models', 'tiny.gguf'))).equals(content));

    const listed = await runCli(['models', 'list', '--data-dir', dataDir]);
    t.regex(listed.stdout, /^tiny\s/m);
});

test('a checksum mismatch fails and leaves no file behind', async (t) => {
    const {content, dataDir} = await fixtures(t);
    const server = await serveFile('tiny.gguf', content);
    t.teardown(server.close);
    const result = await runCli(['models', 'pull', server.url, '--sha256', '0'.repeat(64), '--data-dir', dataDir]);
    t.is(result.code, 1);
    t.regex(result.stderr, /checksum mismatch/);
    t.false((await readdir(join(dataDir, 'models'))).includes('tiny.gguf'));
});

test('the checksum a server publishes (Hugging Face x-linked-etag) is verified without --sha256', async (t) => {
    const {content, sha256, dataDir} = await fixtures(t);
    const honest = await serveFile('tiny.gguf', content, {'x-linked-etag': `"${sha256}"`});
    t.teardown(honest.close);
    const ok = await runCli(['models', 'pull', honest.url, '--data-dir', dataDir]);
    t.is(ok.code, 0, ok.stderr);
    t.regex(ok.stdout, /verified/);

    const otherDir = await mkdtemp(join(tmpdir(), 'strongdoge-pull-'));
    t.teardown(() => rm(otherDir, {recursive: true, force: true}));
    const lying = await serveFile('tiny.gguf', content, {'x-linked-etag': `"${'ab'.repeat(32)}"`});
    t.teardown(lying.close);
    const refused = await runCli(['models', 'pull', lying.url, '--data-dir', otherDir]);
    t.is(refused.code, 1);
    t.regex(refused.stderr, /checksum mismatch/);
});

test('hf: references download from Hugging Face (HF_ENDPOINT stands in for it here) with its checksum verified', async (t) => {
    const {content, sha256, dataDir} = await fixtures(t);
    const hub = await serveFile('doge-lab/tiny-GGUF/resolve/main/tiny-q8.gguf', content, {'x-linked-etag': `"${sha256}"`});
    t.teardown(hub.close);
    const result = await runCli(['models', 'pull', 'hf:doge-lab/tiny-GGUF/tiny-q8.gguf', '--data-dir', dataDir], {HF_ENDPOINT: hub.origin});
    t.is(result.code, 0, result.stderr);
    t.regex(result.stdout, new RegExp(`pulled .*tiny-q8.*sha256 ${sha256} verified`));
    t.true(hub.requests.some((request) => request.method === 'HEAD'), 'the published checksum was asked for');

    const otherDir = await mkdtemp(join(tmpdir(), 'strongdoge-pull-'));
    t.teardown(() => rm(otherDir, {recursive: true, force: true}));
    const lying = await serveFile('doge-lab/tiny-GGUF/resolve/main/tiny-q8.gguf', content, {'x-linked-etag': `"${'cd'.repeat(32)}"`});
    t.teardown(lying.close);
    const refused = await runCli(['models', 'pull', 'hf:doge-lab/tiny-GGUF/tiny-q8.gguf', '--data-dir', otherDir], {HF_ENDPOINT: lying.origin});
    t.is(refused.code, 1);
    t.regex(refused.stderr, /checksum mismatch/);
});

test('a malformed --sha256 is a usage error', async (t) => {
    const {dataDir} = await fixtures(t);
    const result = await runCli(['models', 'pull', 'http://127.0.0.1:1/x.gguf', '--sha256', 'xyz', '--data-dir', dataDir]);
    t.is(result.code, 2);
});

test('an interrupted download is resumed by the next pull', async (t) => {
    const content = Buffer.alloc(16_000_000);
    for (let i = 0; i < content.length; i += 4)
        content.writeUInt32LE(i, i);
    const dataDir = await mkdtemp(join(tmpdir(), 'strongdoge-pull-'));
    const server = await serveFile('big.gguf', content);
    t.teardown(async () => {
        await server.close();
        await rm(dataDir, {recursive: true, force: true});
    });

    // The downloader saves progress per 5 MiB chunk: let the first chunk arrive, then the link dies.
    const firstChunk = 5 * 1024 * 1024;
    server.stallAt(firstChunk + 1000);
    const interrupted = spawn(process.execPath, [CLI_PATH, 'models', 'pull', server.url, '--data-dir', dataDir], {stdio: 'ignore'});
    await waitFor(() => server.bytesSent() >= firstChunk + 1000, 20_000);
    await sleep(1000); // let the progress reach the disk
    interrupted.kill('SIGKILL');
    await once(interrupted, 'exit');

    server.stallAt(undefined);
    const firstRun = server.requests.length;
    // The file is not a real model, so describing it fails after the download: the bytes are what counts here.
    await runCli(['models', 'pull', server.url, '--data-dir', dataDir]);
    const resumed = server.requests.slice(firstRun).filter((request) => request.method === 'GET' && request.range !== undefined);
    t.true(resumed.length > 0);
    t.true(resumed.every((request) => !request.range!.startsWith('bytes=0-')),
        `the second pull asked again from the start: ${JSON.stringify(resumed)}`);
    t.true((await readFile(join(dataDir, 'models', 'big.gguf'))).equals(content));
});

test('a server that is down is a clear error', async (t) => {
    const {dataDir} = await fixtures(t);
    const result = await runCli(['models', 'pull', 'http://127.0.0.1:9/none.gguf', '--data-dir', dataDir]);
    t.not(result.code, 0);
    t.regex(result.stderr, /^strongdoge: error: /m);
});
