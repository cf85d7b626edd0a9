import {once} from 'node:events';
import {mkdtemp, rm, symlink} from 'node:fs/promises';
import {createServer} from 'node:net';
import {availableParallelism, tmpdir} from 'node:os';
import {join} from 'node:path';
import test from 'ava';
import {getLlama} from 'node-llama-cpp';
import type {DoctorReport} from '../cli/commands/doctor-command.js';
import {runCli} from '../harness/cli-process.js';
import {freePort} from '../harness/free-port.js';
import {startTestnet} from '../harness/swarm-fixture.js';

async function tempDir(t: {teardown(fn: () => Promise<void>): void}) {
    const dir = await mkdtemp(join(tmpdir(), 'strongdoge-doctor-'));
    t.teardown(() => rm(dir, {recursive: true, force: true}));
    return dir;
}

test('doctor --json reports the engine, CPU, sharding, the NAT, the API port and the data dir', async (t) => {
    const dataDir = join(await tempDir(t), 'home');
    const {testnet, bootstrap} = await startTestnet();
    t.teardown(() => testnet.destroy());
    const busy = createServer().listen(0, '127.0.0.1');
    await once(busy, 'listening');
    t.teardown(() => busy.close());
    const busyPort = (busy.address() as {port: number}).port;

    const result = await runCli(['doctor', '--json', '--data-dir', dataDir, '--port', String(busyPort), '--bootstrap', bootstrap]);
    t.is(result.code, 0, result.stderr);
    const report = JSON.parse(result.stdout) as DoctorReport;
    t.false('error' in report.engine, JSON.stringify(report.engine));
    if (!('error' in report.engine) && report.engine.gpu === false)
        t.deepEqual(report.engine.devices, []);
    // what the engine will load: node-llama-cpp's prebuilt binaries, or `strongdoge engine build`'s
    const llama = await getLlama({gpu: 'auto', build: 'never'});
    t.like(report.engine, {build: llama.buildType === 'localBuild' ? 'local' : 'prebuilt', llamaCppRelease: llama.llamaCppRelease.release});
    await llama.dispose();
    t.is(report.cpu.threads, availableParallelism());
    t.true(report.memory.totalBytes > 0);
    t.deepEqual(report.api, {host: '127.0.0.1', port: busyPort, free: false});
    t.deepEqual(report.dataDir, {path: dataDir, exists: false, writable: true});
    // on a loopback testnet every node is reachable, and a reachable node relays by default
    t.true(report.network?.bootstrapped);
    t.like(report.network, {nat: {type: 'open', reachable: true, host: '127.0.0.1'}, relay: 'auto'});
    // a fresh data dir has no RPC server yet: it can be built when the tools are there
    t.false(report.sharding.rpcServer.built);
    t.is(report.sharding.rpcServer.dir, join(dataDir, 'rpc'));
    t.is(report.sharding.available, report.sharding.toolchain.missing.length === 0);
    // bubblewrap is installed here (CI installs it), and works
    t.like(report.sharding.sandbox, {available: true});

    const port = await freePort();
    const text = await runCli(['doctor', '--data-dir', dataDir, '--port', String(port), '--bootstrap', bootstrap]);
    t.is(text.code, 0, text.stderr);
    t.regex(text.stdout, new RegExp(`^API port +127\\.0\\.0\\.1:${port} free$`, 'm'));
    t.regex(text.stdout, /^sharding +(available|unavailable): /m);
    t.regex(text.stdout, /^sandbox +works: peers' rpc servers run in bubblewrap \(\S+\)/m);
    t.regex(text.stdout, /^llama\.cpp +\S+, (built for this machine|node-llama-cpp's prebuilt binaries)/m);
    t.regex(text.stdout, /^data dir .* will be created$/m);
    t.regex(text.stdout, /^network +NAT open at 127\.0\.0\.1:\d+, reachable by peers; relays for peers that cannot punch holes/m);
    const offline = await runCli(['doctor', '--data-dir', dataDir, '--port', String(port), '--offline']);
    t.regex(offline.stdout, /^network +offline \(--offline\)$/m);
});

test('doctor says why sharding is unavailable when cmake is missing', async (t) => {
    const bin = await tempDir(t);
    // node itself, and nothing else: no cmake, compiler or git
    await symlink(process.execPath, join(bin, 'node'));
    const result = await runCli(['doctor', '--json', '--offline', '--data-dir', join(await tempDir(t), 'home'), '--port', String(await freePort())], {PATH: bin});
    t.is(result.code, 0, result.stderr);
    const {sharding} = JSON.parse(result.stdout) as DoctorReport;
    t.false(sharding.available);
    t.true(sharding.toolchain.missing.includes('cmake'));
    t.regex(sharding.detail, /^cmake, .* not found: the RPC server cannot be built$/);
    // no bwrap on that PATH either: no layers hosted for peers, and why
    t.deepEqual(sharding.sandbox, {available: false, reason: 'bubblewrap (bwrap) is not installed: install bubblewrap (apt install bubblewrap)'});
    const text = await runCli(['doctor', '--offline', '--data-dir', join(await tempDir(t), 'home'), '--port', String(await freePort())], {PATH: bin});
    t.regex(text.stdout, /^sandbox +unavailable: bubblewrap \(bwrap\) is not installed: install bubblewrap \(apt install bubblewrap\); this node hosts no layers for peers/m);
});

test('engine build without cmake or a compiler says what is missing and leaves the engine as it was', async (t) => {
    const bin = await tempDir(t);
    await symlink(process.execPath, join(bin, 'node'));
    const home = join(await tempDir(t), 'home');
    const before = await runCli(['doctor', '--json', '--offline', '--data-dir', home, '--port', String(await freePort())], {PATH: bin});
    const result = await runCli(['engine', 'build', '--gpu', 'off', '--data-dir', home], {PATH: bin});
    t.is(result.code, 1);
    t.regex(result.stderr, /^strongdoge: error: cannot build llama\.cpp: cmake, .*a C\+\+ compiler.* not found$/m);
    const after = await runCli(['doctor', '--json', '--offline', '--data-dir', home, '--port', String(await freePort())], {PATH: bin});
    const buildOf = (stdout: string) => {
        const {engine} = JSON.parse(stdout) as DoctorReport;
        return 'error' in engine ? engine : {build: engine.build, llamaCppRelease: engine.llamaCppRelease};
    };
    t.deepEqual(buildOf(after.stdout), buildOf(before.stdout));
    const usage = await runCli(['engine', 'build', '--gpu', 'sometimes', '--data-dir', home]);
    t.is(usage.code, 2);
    t.regex(usage.stderr, /--gpu/);
});
