import {execFile, spawn} from 'node:child_process';
import {once} from 'node:events';
import {cp, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, utimes, writeFile} from 'node:fs/promises';
import {connect} from 'node:net';
import {hostname, tmpdir} from 'node:os';
import {join} from 'node:path';
import {promisify} from 'node:util';
import {setTimeout as sleep} from 'node:timers/promises';
import test from 'ava';
import {llamaCppSource} from '../engine/rpc/llama-cpp-source.js';
import {ensureRpcBinaries} from '../engine/rpc/rpc-build.js';
import {prebuiltGgmlDir, prepareRpcServerDir} from '../engine/rpc/rpc-server-dir.js';
import {detectRpcToolchain, RpcToolchainError} from '../engine/rpc/rpc-toolchain.js';
import {listeningAddresses, pruneTensorCache, RpcServerHost} from '../engine/rpc/rpc-server-host.js';
import {waitFor} from '../harness/cli-process.js';
import {TEST_RPC_DIR, testRpcBinaries} from '../harness/rpc-binaries.js';
import {processAlive} from '../engine/rpc/process-alive.js';

const execFileAsync = promisify(execFile);

async function tempDir(t: {teardown(fn: () => Promise<void>): void}) {
    const dir = await mkdtemp(join(tmpdir(), 'strongdoge-rpc-'));
    t.teardown(() => rm(dir, {recursive: true, force: true}));
    return dir;
}


/** The directory of `ensureRpcBinaries`' build for this release, as `dir/<name>`. */
async function releaseDirName() {
    return `llama.cpp-${(await llamaCppSource()).release}`;
}

/** A PATH holding only the named tools of this machine. */
async function pathWith(t: {teardown(fn: () => Promise<void>): void}, tools: string[]) {
    const dir = await tempDir(t);
    for (const tool of tools) {
        const {stdout} = await execFileAsync('sh', ['-c', `command -v ${tool}`]);
        await symlink(stdout.trim(), join(dir, tool));
    }
    return dir;
}

test.serial('callers in several processes at once share one build', async (t) => {
    // First in the file: on a cold cache (CI) these callers race, and exactly one of them may build.
    const script = `import {ensureRpcBinaries} from ${JSON.stringify(new URL('../engine/rpc/rpc-build.ts', import.meta.url).href)};
const result = await ensureRpcBinaries({dir: ${JSON.stringify(TEST_RPC_DIR)}, onProgress: (line) => console.log(line)});
console.log(JSON.stringify(result));`;
    const run = async () => {
        const child = spawn(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], {stdio: ['ignore', 'pipe', 'inherit']});
        let stdout = '';
        child.stdout.on('data', (chunk) => stdout += chunk);
        const [code] = await once(child, 'exit') as [number | null];
        t.is(code, 0);
        return stdout.trim().split('\n');
    };
    const outputs = await Promise.all([run(), run(), testRpcBinaries().then((result) => [JSON.stringify(result)])]);
    const builds = outputs.flat().filter((line) => line.includes('unpacking the source')).length;
    t.true(builds <= 1, outputs.flat().join('\n'));
    const results = outputs.map((lines) => JSON.parse(lines.at(-1)!) as {serverPath: string});
    t.is(new Set(results.map((result) => result.serverPath)).size, 1);
});

test.serial('the RPC server is built once into a shared dir and reused', async (t) => {
    const lines: string[] = [];
    const first = await testRpcBinaries((line) => lines.push(line));
    t.log(lines.join('\n') || 'already built');
    t.is(first.release, (await llamaCppSource()).release);
    t.is(first.dir, join(TEST_RPC_DIR, await releaseDirName()));
    const builtAt = (await stat(first.serverPath)).mtimeMs;
    const started = Date.now();
    const again = await ensureRpcBinaries({dir: TEST_RPC_DIR, onProgress: (line) => t.fail(`built again: ${line}`)});
    t.true(Date.now() - started < 1_000);
    t.deepEqual(again, first);
    t.is((await stat(first.serverPath)).mtimeMs, builtAt);
    const files = await readdir(first.dir);
    for (const name of ['ggml-rpc-server', 'libggml-rpc.so', 'libggml-base.so.0', 'libggml.so.0', 'libggml-cpu.so'])
        t.true(files.includes(name), name);
    t.false(files.some((name) => name.startsWith('.build')));
});

test('a caller waits while another process holds the build lock, then takes its result', async (t) => {
    const built = await testRpcBinaries();
    const dir = await tempDir(t);
    const name = await releaseDirName();
    // proper-lockfile's lock, refreshed just now by its live holder
    const lockPath = join(dir, `${name}.build.lock`);
    await mkdir(lockPath);
    const lines: string[] = [];
    const waiting = ensureRpcBinaries({dir, onProgress: (line) => lines.push(line)});
    await waitFor(() => lines.length > 0, 5_000);
    t.deepEqual(lines, ['waiting for another process building the llama.cpp RPC server']);
    // the "other process" finishes: its build appears by rename, then its lock goes
    await cp(built.dir, join(dir, `.${name}.done`), {recursive: true, verbatimSymlinks: true});
    await (await import('node:fs/promises')).rename(join(dir, `.${name}.done`), join(dir, name));
    await rm(lockPath, {recursive: true});
    const result = await waiting;
    t.is(result.dir, join(dir, name));
    t.deepEqual(lines, ['waiting for another process building the llama.cpp RPC server']);
});

test('a lock left by a dead process is taken over; a missing cmake fails clearly', async (t) => {
    const dir = await tempDir(t);
    // a holder that died stopped refreshing it: older than proper-lockfile's `stale` (rpc-build-lock.ts)
    const lockPath = join(dir, `${await releaseDirName()}.build.lock`);
    await mkdir(lockPath);
    const lastRefresh = new Date(Date.now() - 61_000);
    await utimes(lockPath, lastRefresh, lastRefresh);
    const path = await pathWith(t, ['git', 'make', 'gcc', 'g++']);
    const error = await t.throwsAsync(ensureRpcBinaries({dir, env: {PATH: path}}), {instanceOf: RpcToolchainError});
    t.deepEqual(error?.missing, ['cmake']);
    t.regex(error?.message ?? '', /cmake not found/);
    t.deepEqual(await readdir(dir), []);
});

test('a lock whose holder on this host was killed outright is taken over at once, not after it goes stale', async (t) => {
    const dir = await tempDir(t);
    const lockPath = join(dir, `${await releaseDirName()}.build.lock`);
    await mkdir(lockPath); // refreshed just now, as a live holder's
    const dead = spawn(process.execPath, ['-e', '']);
    await once(dead, 'exit');
    await writeFile(`${lockPath}.owner`, `${hostname()} ${dead.pid}`);
    const path = await pathWith(t, ['git', 'make', 'gcc', 'g++']);
    const lines: string[] = [];
    const error = await t.throwsAsync(ensureRpcBinaries({dir, env: {PATH: path}, onProgress: (line) => lines.push(line)}), {instanceOf: RpcToolchainError});
    t.deepEqual(error?.missing, ['cmake']);
    t.deepEqual(lines.filter((line) => line.startsWith('waiting')), [], 'it did not wait');
    t.deepEqual(await readdir(dir), []);
});

test('toolchain detection reports what a PATH lacks', async (t) => {
    const full = await detectRpcToolchain();
    t.deepEqual(full.missing, []);
    t.regex(full.cmake?.version ?? '', /cmake version \d/);
    t.truthy(full.cxxCompiler?.version);
    const withoutCmake = await detectRpcToolchain({env: {PATH: await pathWith(t, ['git', 'make', 'gcc', 'g++'])}});
    t.is(withoutCmake.cmake, undefined);
    t.deepEqual(withoutCmake.missing, ['cmake']);
    const empty = await detectRpcToolchain({env: {PATH: await tempDir(t)}});
    t.deepEqual(empty.missing, ['cmake', 'a C++ compiler (c++, g++ or clang++)', 'a C compiler (cc, gcc or clang)', 'make or ninja', 'git']);
});

test('the server listens on 127.0.0.1 only, accepts a connection, and stop() ends it', async (t) => {
    const binaries = await testRpcBinaries();
    const cacheDir = await tempDir(t);
    const host = new RpcServerHost({binaries, threads: 1, cacheDir});
    t.teardown(() => host.stop());
    const exits: unknown[] = [];
    host.on('exit', (...args) => exits.push(args));
    const port = await host.start();
    t.is(host.port, port);
    t.is(host.endpoint, `127.0.0.1:${port}`);
    const pid = host.pid!;
    t.true(processAlive(pid));

    const socket = connect({host: '127.0.0.1', port});
    await once(socket, 'connect');
    socket.destroy();

    // what the kernel says, read two ways: every listening socket of the server is on loopback
    t.deepEqual(await listeningAddresses(pid), [{address: '127.0.0.1', port}]);
    const {stdout} = await execFileAsync('ss', ['-ltnpH']);
    const own = stdout.split('\n').filter((line) => line.includes(`pid=${pid},`));
    t.is(own.length, 1, stdout);
    t.regex(own[0]!, new RegExp(`\\s127\\.0\\.0\\.1:${port}\\s`));
    // -c: the server made its cache dir under LLAMA_CACHE
    t.true((await stat(join(cacheDir, 'rpc'))).isDirectory());

    await host.stop();
    t.false(processAlive(pid));
    t.deepEqual(exits, []);
});

test('a killed server is reported by an exit event and not restarted', async (t) => {
    const host = new RpcServerHost({binaries: await testRpcBinaries()});
    t.teardown(() => host.stop());
    await host.start();
    const pid = host.pid!;
    const exited = once(host, 'exit');
    process.kill(pid, 'SIGKILL');
    t.deepEqual(await exited, [null, 'SIGKILL', false]);
    await sleep(500);
    t.is(host.pid, undefined);
});

test('with restart, a killed server comes back on the same port', async (t) => {
    const host = new RpcServerHost({binaries: await testRpcBinaries(), restart: true});
    t.teardown(() => host.stop());
    const port = await host.start();
    const firstPid = host.pid!;
    const readyAgain = once(host, 'ready');
    process.kill(firstPid, 'SIGKILL');
    t.deepEqual(await readyAgain, [port]);
    t.not(host.pid, firstPid);
    t.deepEqual(await listeningAddresses(host.pid!), [{address: '127.0.0.1', port}]);
});

test('a server that cannot start rejects start() with its own words', async (t) => {
    const host = new RpcServerHost({binaries: await testRpcBinaries(), devices: ['NoSuchDevice0']});
    t.teardown(() => host.stop());
    const error = await t.throwsAsync(host.start());
    t.regex(error?.message ?? '', /exited .*before listening.*unknown device: NoSuchDevice0/);
});

test('the server runs from a dir of node-llama-cpp\'s own ggml libraries (how it gets the GPU backend)', async (t) => {
    const binaries = await testRpcBinaries();
    const prebuilt = await prebuiltGgmlDir(false);
    if (prebuilt === undefined)
        return t.pass('node-llama-cpp has no prebuilt CPU binaries for this platform');
    const files = await prepareRpcServerDir(binaries, {gpu: false});
    t.deepEqual(await prepareRpcServerDir(binaries, {gpu: false}), files);
    t.not(files.serverPath, binaries.serverPath);
    const lines: string[] = [];
    const host = new RpcServerHost({binaries: files});
    host.on('log', (line) => lines.push(line));
    t.teardown(() => host.stop());
    await host.start();
    // one ggml: node-llama-cpp's libggml-base, reached through the dir's sonames; a CPU variant of its own
    const maps = await readFile(`/proc/${host.pid}/maps`, 'utf8');
    const mapped = new Set(maps.split('\n').map((line) => line.split(/\s+/)[5]).filter((path) => path?.includes('libggml')));
    t.deepEqual([...mapped].filter((path) => path!.includes('libggml-base')), [join(prebuilt, 'libggml-base.so')]);
    t.true([...mapped].some((path) => path!.startsWith(join(prebuilt, 'libggml-cpu-'))), [...mapped].join('\n'));
    t.true(lines.some((line) => line.includes(`loaded CPU backend from ${files.dir}/libggml-cpu-`)), lines.join('\n'));
});

test('pruneTensorCache evicts the least recently used files beyond the limit', async (t) => {
    const cacheDir = await tempDir(t);
    const dir = join(cacheDir, 'rpc');
    await mkdir(dir);
    const now = Date.now() / 1000;
    const names = ['000000000000000a', '000000000000000b', '000000000000000c'];
    for (const [index, name] of names.entries()) {
        await writeFile(join(dir, name), Buffer.alloc(1000));
        await utimes(join(dir, name), now - 300 + index * 100, now - 300 + index * 100); // a oldest, c newest
    }
    await writeFile(join(dir, 'notes.txt'), 'not a cached tensor');
    t.deepEqual(await pruneTensorCache(cacheDir, 2500), {removedFiles: 1, removedBytes: 1000, keptBytes: 2000});
    t.deepEqual((await readdir(dir)).sort(), ['000000000000000b', '000000000000000c', 'notes.txt']);
    t.deepEqual(await pruneTensorCache(cacheDir, 0), {removedFiles: 2, removedBytes: 2000, keptBytes: 0});
    t.deepEqual(await pruneTensorCache(join(cacheDir, 'absent'), 0), {removedFiles: 0, removedBytes: 0, keptBytes: 0});
});

test('servers sharing a fresh tensor cache dir all start when started together', async (t) => {
    const binaries = await testRpcBinaries();
    const cacheDir = join(await tempDir(t), 'not-yet');
    const hosts = Array.from({length: 3}, () => new RpcServerHost({binaries, threads: 1, cacheDir}));
    t.teardown(() => Promise.all(hosts.map((host) => host.stop())));
    const ports = await Promise.all(hosts.map((host) => host.start()));
    t.is(new Set(ports).size, 3);
    t.true((await stat(join(cacheDir, 'rpc'))).isDirectory());
});
