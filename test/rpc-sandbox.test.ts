import {execFile, spawn} from 'node:child_process';
import {once} from 'node:events';
import {chmod, chown, cp, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile} from 'node:fs/promises';
import {connect, createServer, type Socket} from 'node:net';
import {networkInterfaces, tmpdir} from 'node:os';
import {join} from 'node:path';
import {promisify} from 'node:util';
import test from 'ava';
import {prepareRpcServerDir} from '../engine/rpc/rpc-server-dir.js';
import {
    ensureSandboxLauncher, probeSandbox, SANDBOX_SERVER_PORT, SANDBOX_UID, sandboxArgs, sandboxedExit, sandboxFailure,
    sandboxGpuAccess, sandboxReadOnlyPaths
} from '../engine/rpc/rpc-sandbox.js';
import {type RpcConnectOptions, RpcServerHost} from '../engine/rpc/rpc-server-host.js';
import {waitFor} from '../harness/cli-process.js';
import {TEST_RPC_DIR, testRpcBinaries} from '../harness/rpc-binaries.js';

const execFileAsync = promisify(execFile);
const STANDIN_SOURCE = new URL('./fixtures/sandbox-standin.c', import.meta.url).pathname;

type Teardown = {teardown(fn: () => Promise<void> | void): void};

async function tempDir(t: Teardown, prefix = 'strongdoge-sandbox-') {
    const dir = await mkdtemp(join(tmpdir(), prefix));
    t.teardown(() => rm(dir, {recursive: true, force: true}));
    return dir;
}

/** bwrap and the launcher, as a node that probed the sandbox passes them to RpcServerHost. */
async function sandboxOptions(runtimeDir: string) {
    const probe = await probeSandbox({launcherDir: TEST_RPC_DIR});
    if (!probe.available)
        throw new Error(`the sandbox is not available here: ${probe.reason}`);
    return {bwrapPath: probe.bwrapPath, launcherPath: probe.launcherPath, runtimeDir};
}

/** The pids below `pid` (its children, then theirs), from /proc. */
async function descendants(pid: number) {
    const parents = new Map<number, number[]>();
    for (const name of await readdir('/proc')) {
        if (!/^\d+$/.test(name))
            continue;
        const fields = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => '');
        // pid (comm) state ppid ...: comm may hold spaces and parentheses, so read after the last ')'
        const parent = Number(fields.slice(fields.lastIndexOf(')') + 2).split(' ')[1]);
        parents.set(parent, [...(parents.get(parent) ?? []), Number(name)]);
    }
    const found: number[] = [];
    for (let queue = [pid]; queue.length > 0;) {
        const children = parents.get(queue.shift()!) ?? [];
        found.push(...children);
        queue.push(...children);
    }
    return found;
}

/** Whether `pid` runs (a zombie waiting for a reaper that may never come does not). */
async function running(pid: number) {
    const fields = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    return fields !== '' && fields[fields.lastIndexOf(')') + 2] !== 'Z';
}

/** Those of `pids` still running, once they had 3 s to go. */
async function survivors(pids: number[]) {
    const left = async () => (await Promise.all(pids.map(async (pid) => await running(pid) ? [pid] : []))).flat();
    await waitFor(async () => (await left()).length === 0, 3_000).catch(() => undefined);
    return left();
}

async function commandName(pid: number) {
    return (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim();
}

function readBytes(socket: Socket, count: number) {
    return new Promise<Buffer>((resolve, reject) => {
        let received = Buffer.alloc(0);
        socket.on('data', (chunk) => {
            received = Buffer.concat([received, chunk]);
            if (received.length >= count)
                resolve(received);
        });
        socket.on('error', reject);
        socket.on('close', () => reject(new Error(`closed after ${received.length} bytes`)));
    });
}

const HELLO = Buffer.concat([Buffer.from([14]), Buffer.from(new BigUint64Array([24n]).buffer), Buffer.alloc(24)]);

/** The reply to an RPC HELLO (command 14, 24 zero bytes): its size and protocol major version. */
async function helloReply(socket: Socket) {
    const reply = await readBytes(socket, 8 + 28);
    return {size: reply.readBigUInt64LE(0), major: reply[8]};
}

/** Says HELLO on a new connection, and closes it once answered. */
async function hello(options: RpcConnectOptions) {
    const socket = connect(options);
    try {
        await once(socket, 'connect');
        socket.write(HELLO);
        return await helloReply(socket);
    } finally {
        socket.destroy();
    }
}

/** A TCP server that counts the connections it gets. */
async function listener(t: Teardown, host: string) {
    let connections = 0;
    const server = createServer((socket) => {
        connections++;
        socket.destroy();
    }).listen(0, host);
    await once(server, 'listening');
    t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
    return {port: (server.address() as {port: number}).port, connections: () => connections};
}

function externalAddress() {
    return Object.values(networkInterfaces()).flat().find((entry) => entry?.family === 'IPv4' && !entry.internal)?.address;
}

/**
 * A copy of the prepared server dir with the stand-in as its server, a data dir (identity, keystore), a home with
 * .ssh, the targets file in the cache, and the listeners standing for the node's API and another loopback service.
 */
async function standinSetup(t: Teardown) {
    const files = await prepareRpcServerDir(await testRpcBinaries(), {gpu: false});
    const root = await tempDir(t);
    const serverDir = join(root, 'server');
    await cp(files.dir, serverDir, {recursive: true, verbatimSymlinks: true});
    const serverPath = join(serverDir, 'ggml-rpc-server');
    await rm(serverPath);
    await execFileAsync('cc', ['-O2', '-Wall', '-Wextra', '-o', serverPath, STANDIN_SOURCE]);
    const dataDir = join(root, 'data');
    const home = join(root, 'home');
    await mkdir(join(dataDir, 'keystore'), {recursive: true});
    await mkdir(join(home, '.ssh'), {recursive: true});
    await writeFile(join(dataDir, 'identity.json'), '{"secretKey": "not really"}\n');
    await writeFile(join(dataDir, 'keystore', 'wallet.json'), '{"crypto": "not really"}\n');
    await writeFile(join(home, '.ssh', 'id_ed25519'), 'not really a key\n');
    const cacheDir = join(root, 'cache');
    await mkdir(join(cacheDir, 'rpc'), {recursive: true});
    const tmp = await tempDir(t, 'strongdoge-standin-tmp-');
    const api = await listener(t, '0.0.0.0');
    const other = await listener(t, '127.0.0.1');
    const external = externalAddress();
    const targets = {
        identity: join(dataDir, 'identity.json'), keystore: join(dataDir, 'keystore', 'wallet.json'), ssh_dir: join(home, '.ssh'),
        data_dir: dataDir, tmp_dir: tmp, cache_dir: join(cacheDir, 'rpc'), shm_file: `strongdoge-standin-${process.pid}-${Date.now()}`, api_port: api.port, other_port: other.port, external_host: external ?? '', node_pid: process.pid
    };
    await writeFile(join(cacheDir, 'rpc', 'standin-targets'), Object.entries(targets).map(([name, value]) => `${name}=${value}\n`).join(''));
    t.teardown(() => rm(join('/dev/shm', targets.shm_file), {force: true}));
    return {serverPath, serverDir, dataDir, tmp, cacheDir, root, api, other, external, shmFile: targets.shm_file};
}

/** Starts the stand-in through RpcServerHost (sandboxed or not) and collects its attempts: name → outcome line. */
async function runStandin(t: Teardown, setup: Awaited<ReturnType<typeof standinSetup>>, sandboxed: boolean) {
    const sandbox = sandboxed ? await sandboxOptions(setup.root) : undefined;
    const host = new RpcServerHost({binaries: {serverPath: setup.serverPath}, cacheDir: setup.cacheDir, ...(sandbox !== undefined && {sandbox})});
    t.teardown(() => host.stop());
    const lines: string[] = [];
    host.on('log', (line) => lines.push(line));
    await host.start();
    await waitFor(() => lines.includes('attempts done'), 10_000);
    const attempts = new Map<string, string>();
    for (const line of lines) {
        const match = /^attempt (\w+) (.*)$/.exec(line);
        if (match !== null)
            attempts.set(match[1]!, match[2]!);
    }
    await host.stop();
    return {attempts, lines};
}

const ATTEMPTS = [
    'read_identity', 'read_keystore', 'list_ssh', 'read_ssh_key', 'read_etc_passwd', 'write_server_dir', 'write_tmp', 'write_tensor_cache',
    'write_data_dir', 'write_dev_shm', 'connect_node_api', 'connect_other_loopback', 'signal_node', 'exec_shell'
];

test.serial('probeSandbox: the sandbox works here (bwrap, user namespaces, the launcher)', async (t) => {
    const probe = await probeSandbox({launcherDir: TEST_RPC_DIR});
    t.true(probe.available, probe.available ? '' : probe.reason);
    // kept for the process
    t.is(await probeSandbox({launcherDir: TEST_RPC_DIR}), probe);
});

test('probeSandbox says to install bubblewrap when bwrap is not found', async (t) => {
    const emptyPath = await tempDir(t);
    for (const probe of [
        await probeSandbox({launcherDir: TEST_RPC_DIR, env: {PATH: emptyPath}}),
        await probeSandbox({launcherDir: TEST_RPC_DIR, bwrapPath: join(emptyPath, 'bwrap')})
    ]) {
        t.false(probe.available);
        t.like(probe, {code: 'BWRAP_MISSING'});
        t.regex(probe.available ? '' : probe.reason, /install bubblewrap \(apt install bubblewrap\)/);
    }
});

test('sandboxFailure names the user namespace restriction that applies', (t) => {
    const uidMap = 'bwrap: setting up uid map: Permission denied\n';
    t.like(sandboxFailure(uidMap, {apparmorRestrict: 1, maxUserNamespaces: 100}), {code: 'USERNS_REFUSED'});
    t.regex(sandboxFailure(uidMap, {apparmorRestrict: 1}).reason, /kernel\.apparmor_restrict_unprivileged_userns=1.*set that sysctl to 0/);
    const refused = 'bwrap: No permissions to creating new namespace, likely because the kernel does not allow non-privileged user namespaces.';
    t.regex(sandboxFailure(refused, {unprivilegedClone: 0}).reason, /kernel\.unprivileged_userns_clone=0/);
    t.regex(sandboxFailure('bwrap: Creating new namespace failed: No space left on device', {maxUserNamespaces: 0}).reason, /user\.max_user_namespaces=0/);
    t.regex(sandboxFailure(refused, {}).reason, /^the kernel refused bubblewrap a user namespace/);
    t.like(sandboxFailure('bwrap: Unknown option --disable-userns', {}), {code: 'BWRAP_TOO_OLD'});
    t.like(sandboxFailure('bwrap: Can\'t find source path /nope: No such file or directory', {}), {code: 'SANDBOX_FAILED'});
});

test('sandboxArgs: device binds for a GPU spec, none for the CPU; no /usr, /etc or /bin wholesale', (t) => {
    const spec = {
        launcherPath: '/data/rpc/sandbox-abc/rpc-launcher',
        server: {path: '/data/rpc/llama.cpp-v1/server-cpu-1/ggml-rpc-server', args: ['-H', '127.0.0.1', '-p', String(SANDBOX_SERVER_PORT), '-t', '2', '-c'], socketPath: '/run/s/rpc.sock'},
        readOnlyPaths: ['/data/rpc/llama.cpp-v1/server-cpu-1', '/lib/x86_64-linux-gnu/libc.so.6', '/data/rpc/llama.cpp-v1/server-cpu-1/libggml.so.0', '/etc/ld.so.cache'],
        writablePaths: ['/data/cache/rpc'],
        env: {LLAMA_CACHE: '/data/cache'}
    };
    const cpu = sandboxArgs(spec);
    t.false(cpu.includes('--dev-bind'));
    const gpu = sandboxArgs({...spec, gpu: {devices: ['/dev/nvidia0', '/dev/nvidiactl', '/dev/nvidia-uvm'], readOnlyPaths: ['/sys', '/usr/lib/x86_64-linux-gnu/libcuda.so.1']}});
    const pairs = (args: string[], option: string) => args.flatMap((arg, index) => arg === option ? [`${args[index + 1]} ${args[index + 2]}`] : []);
    t.deepEqual(pairs(gpu, '--dev-bind'), ['/dev/nvidia0 /dev/nvidia0', '/dev/nvidiactl /dev/nvidiactl', '/dev/nvidia-uvm /dev/nvidia-uvm']);
    t.true(pairs(gpu, '--ro-bind').includes('/sys /sys'));
    t.true(pairs(gpu, '--ro-bind').includes('/usr/lib/x86_64-linux-gnu/libcuda.so.1 /usr/lib/x86_64-linux-gnu/libcuda.so.1'));
    // the server dir covers what is inside it; writable: the cache and the socket's dir alone
    t.deepEqual(pairs(cpu, '--ro-bind'), [
        '/data/rpc/llama.cpp-v1/server-cpu-1 /data/rpc/llama.cpp-v1/server-cpu-1', '/data/rpc/sandbox-abc/rpc-launcher /data/rpc/sandbox-abc/rpc-launcher',
        '/etc/ld.so.cache /etc/ld.so.cache', '/lib/x86_64-linux-gnu/libc.so.6 /lib/x86_64-linux-gnu/libc.so.6'
    ]);
    t.deepEqual(pairs(cpu, '--bind'), ['/data/cache/rpc /data/cache/rpc', '/run/s /run/s']);
    for (const option of ['--unshare-all', '--unshare-user', '--disable-userns', '--die-with-parent', '--new-session', '--clearenv'])
        t.true(cpu.includes(option), option);
    t.deepEqual(pairs(cpu, '--remount-ro').map((pair) => pair.split(' ')[0]), ['/dev', '/']);
    t.is(cpu[cpu.indexOf('--uid') + 1], String(SANDBOX_UID));
    t.is(cpu[cpu.indexOf('--cap-drop') + 1], 'ALL');
    t.deepEqual(cpu.slice(cpu.indexOf('--')), ['--', spec.launcherPath, '/run/s/rpc.sock', String(SANDBOX_SERVER_PORT), spec.server.path, ...spec.server.args]);
    t.deepEqual(sandboxArgs({launcherPath: spec.launcherPath, readOnlyPaths: []}).slice(-3), ['--', spec.launcherPath, '--probe']);
});

test('sandboxGpuAccess: NVIDIA\'s device nodes for CUDA, and /dev/dri too for Vulkan; nothing for the CPU', async (t) => {
    const devDir = await tempDir(t);
    for (const name of ['nvidia0', 'nvidia1', 'nvidiactl', 'nvidia-uvm', 'nvidia-modeset', 'null', 'kvm', 'tty0', 'nvme0'])
        await writeFile(join(devDir, name), '');
    await mkdir(join(devDir, 'dri'));
    const nvidia = ['nvidia-modeset', 'nvidia-uvm', 'nvidia0', 'nvidia1', 'nvidiactl'].map((name) => join(devDir, name));
    const cuda = await sandboxGpuAccess('cuda', {devDir});
    t.deepEqual(cuda.devices, nvidia);
    t.true(cuda.readOnlyPaths.includes('/sys'));
    t.false(cuda.readOnlyPaths.some((path) => ['/usr', '/etc', '/bin', '/lib', '/dev'].includes(path)));
    t.deepEqual((await sandboxGpuAccess('vulkan', {devDir})).devices, [join(devDir, 'dri'), ...nvidia].sort());
    t.deepEqual(await sandboxGpuAccess(false, {devDir}), {devices: [], readOnlyPaths: []});
});

test('sandboxedExit reads the launcher\'s report, else 128+N as signal N', (t) => {
    t.deepEqual(sandboxedExit(139, null, 'rpc-server killed by signal 11 (SIGSEGV)'), [null, 'SIGSEGV']);
    t.deepEqual(sandboxedExit(1, null, 'rpc-server exited with code 1'), [1, null]);
    t.deepEqual(sandboxedExit(137, null, undefined), [null, 'SIGKILL']);
    t.deepEqual(sandboxedExit(null, 'SIGTERM', undefined), [null, 'SIGTERM']);
    t.deepEqual(sandboxedExit(1, null, undefined), [1, null]);
});

test('the read-only paths for the real server: its dir, its libraries\' real paths, the loader; no /usr, /etc or /bin', async (t) => {
    const files = await prepareRpcServerDir(await testRpcBinaries(), {gpu: false});
    const launcherPath = await ensureSandboxLauncher({dir: TEST_RPC_DIR});
    const paths = await sandboxReadOnlyPaths({launcherPath, serverPath: files.serverPath});
    t.log(paths.join('\n'));
    t.true(paths.includes(files.dir));
    t.true(paths.includes(launcherPath));
    t.true(paths.some((path) => path.includes('node_modules/@node-llama-cpp/') && path.endsWith('/libggml-base.so')), 'a symlink target');
    t.true(paths.some((path) => /\/ld-linux[\w.-]*\.so/.test(path)), 'the loader');
    for (const path of ['/', '/usr', '/etc', '/bin', '/lib', '/usr/lib', '/home', '/tmp'])
        t.false(paths.includes(path), path);
    t.false(paths.some((path) => path.startsWith('/bin/') || path.startsWith('/usr/bin/')));
});

test('the launcher is compiled into sandbox-<hash>/ once, by callers in several processes at once', async (t) => {
    const dir = await tempDir(t);
    const script = `import {ensureSandboxLauncher} from ${JSON.stringify(new URL('../engine/rpc/rpc-sandbox.ts', import.meta.url).href)};
console.log(await ensureSandboxLauncher({dir: ${JSON.stringify(dir)}}));`;
    const inChild = async () => {
        const {stdout} = await execFileAsync(process.execPath, ['--import=tsx', '--input-type=module', '-e', script]);
        return stdout.trim();
    };
    const paths = await Promise.all([inChild(), inChild(), ensureSandboxLauncher({dir}), ensureSandboxLauncher({dir})]);
    t.is(new Set(paths).size, 1);
    t.regex(paths[0]!, /\/sandbox-[0-9a-f]{12}\/rpc-launcher$/);
    t.deepEqual(await readdir(join(paths[0]!, '..')), ['rpc-launcher'], 'no temporary file left');
    t.true(((await stat(paths[0]!)).mode & 0o111) !== 0);
});

test('a stand-in started as the server, in the sandbox, is denied every attempt; without the sandbox, allowed', async (t) => {
    const setup = await standinSetup(t);
    const expected = [...ATTEMPTS, ...(setup.external === undefined ? [] : ['connect_external'])];

    const control = await runStandin(t, setup, false);
    for (const name of expected)
        t.is(control.attempts.get(name), 'allowed', `without the sandbox, ${name} should succeed (else this test proves nothing): ${control.attempts.get(name)}`);
    const controlConnections = setup.api.connections();
    t.true(controlConnections >= 1);
    await rm(join(setup.serverDir, 'pwned'));
    await rm(join(setup.dataDir, 'pwned'));
    await rm(join(setup.tmp, 'pwned'));
    await rm(join(setup.cacheDir, 'rpc', '0123456789abcdef'));
    await rm(join('/dev/shm', setup.shmFile));

    const sandboxed = await runStandin(t, setup, true);
    t.log(sandboxed.lines.filter((line) => line.startsWith('attempt ')).join('\n'));
    for (const name of expected)
        t.regex(sandboxed.attempts.get(name) ?? 'missing', /^denied: /, `in the sandbox, ${name} must fail`);
    t.is(setup.api.connections(), controlConnections, 'no connection reached the node\'s API');
    t.is(setup.other.connections(), 1, 'no connection reached the other loopback service (only the control run\'s)');
    for (const path of [join(setup.serverDir, 'pwned'), join(setup.dataDir, 'pwned'), join(setup.tmp, 'pwned'), join(setup.cacheDir, 'rpc', '0123456789abcdef'), join('/dev/shm', setup.shmFile)])
        t.false(await stat(path).then(() => true, () => false), `${path} was written`);
});

test('the real server starts in the sandbox, answers HELLO through its socket, and stop() leaves nothing', async (t) => {
    const files = await prepareRpcServerDir(await testRpcBinaries(), {gpu: false});
    const root = await tempDir(t);
    const cacheDir = join(root, 'cache');
    const host = new RpcServerHost({binaries: files, cacheDir, sandbox: await sandboxOptions(root)});
    t.teardown(() => host.stop());
    const exits: unknown[] = [];
    host.on('exit', (...args) => exits.push(args));
    await host.start();
    t.is(host.port, undefined);
    t.is(host.endpoint, undefined);
    const options = host.connectOptions as {path: string};
    t.regex(options.path, /\/strongdoge-rpc-\w+\/rpc\.sock$/);
    t.is((await stat(join(options.path, '..'))).mode & 0o777, 0o700);
    t.deepEqual(await hello(options), {size: 28n, major: 6});
    // twice: the relay takes one connection after another
    t.deepEqual(await hello(options), {size: 28n, major: 6});

    const pids = [host.pid!, ...await descendants(host.pid!)];
    t.deepEqual(await Promise.all(pids.map(commandName)), ['bwrap', 'bwrap', 'rpc-launcher', 'ggml-rpc-server']);
    const server = pids.at(-1)!;
    // the server runs in a user namespace, without capabilities or new privileges, without core dumps
    const status = await readFile(`/proc/${server}/status`, 'utf8');
    t.regex(status, /^CapEff:\s+0+$/m);
    t.regex(status, /^NoNewPrivs:\s+1$/m);
    t.regex(await readFile(`/proc/${server}/limits`, 'utf8'), /^Max core file size\s+0\s+0\s/m);
    // its descriptors: /dev/null, stderr twice (the launcher's stdout carries "ready" alone), its own sockets
    const fds = (await readdir(`/proc/${server}/fd`)).sort((a, b) => Number(a) - Number(b));
    const targets = await Promise.all(fds.map((fd) => readlink(`/proc/${server}/fd/${fd}`).catch(() => 'gone')));
    t.is(targets[0], '/dev/null');
    t.is(targets[1], targets[2]);
    t.true(targets.slice(3).every((target) => target.startsWith('socket:') || target === 'gone'), targets.join(' '));
    const {stdout: netns} = await execFileAsync('readlink', [`/proc/${server}/ns/net`, '/proc/self/ns/net']);
    const [serverNet, ownNet] = netns.trim().split('\n');
    t.not(serverNet, ownNet);
    // -c: the cache dir is where the server put its cache
    t.true((await stat(join(cacheDir, 'rpc'))).isDirectory());

    await host.stop();
    t.deepEqual(await survivors(pids), [], 'no process of the sandbox is left');
    t.false(await stat(join(options.path, '..')).then(() => true, () => false), 'the socket dir is removed');
    t.deepEqual(exits, []);
});

test('the relay passes a half-close on, holds connections while the server serves another, takes 8 at most', async (t) => {
    const files = await prepareRpcServerDir(await testRpcBinaries(), {gpu: false});
    const host = new RpcServerHost({binaries: files, sandbox: await sandboxOptions(await tempDir(t))});
    t.teardown(() => host.stop());
    await host.start();
    const options = host.connectOptions!;
    const sockets: Socket[] = [];
    t.teardown(() => {
        for (const socket of sockets)
            socket.destroy();
    });
    const open = async () => {
        const socket = connect(options);
        sockets.push(socket);
        await once(socket, 'connect');
        return socket;
    };
    // the request, then end of file: the answer still comes back, then the server's close
    const halfClosed = await open();
    const ended = once(halfClosed, 'end');
    halfClosed.end(HELLO);
    t.deepEqual(await helloReply(halfClosed), {size: 28n, major: 6});
    await ended;
    // the server serves one connection at a time: the second is answered once the first closes
    const first = await open();
    first.write(HELLO);
    t.deepEqual(await helloReply(first), {size: 28n, major: 6});
    const second = await open();
    second.write(HELLO);
    const secondReply = helloReply(second);
    const early = await Promise.race([secondReply.then(() => 'answered'), new Promise((resolve) => setTimeout(() => resolve('waiting'), 300))]);
    t.is(early, 'waiting');
    first.destroy();
    t.deepEqual(await secondReply, {size: 28n, major: 6});
    // with 8 relayed (second and 7 more), a 9th is closed at once
    for (let index = 0; index < 7; index++)
        await open();
    const ninth = await open();
    await once(ninth, 'close');
    t.pass();
});

test('a server killed by SIGSEGV in the sandbox is reported as such, and nothing of the sandbox survives', async (t) => {
    const files = await prepareRpcServerDir(await testRpcBinaries(), {gpu: false});
    const root = await tempDir(t);
    const host = new RpcServerHost({binaries: files, sandbox: await sandboxOptions(root)});
    t.teardown(() => host.stop());
    const lines: string[] = [];
    host.on('log', (line) => lines.push(line));
    await host.start();
    const pids = [host.pid!, ...await descendants(host.pid!)];
    const names = await Promise.all(pids.map(commandName));
    const server = pids[names.indexOf('ggml-rpc-server')]!;
    t.truthy(server, names.join(' '));
    const exited = once(host, 'exit');
    process.kill(server, 'SIGSEGV');
    t.deepEqual(await exited, [null, 'SIGSEGV', false]);
    t.true(lines.includes('rpc-server killed by signal 11 (SIGSEGV)'), lines.join('\n'));
    t.deepEqual(await survivors(pids), [], 'no process of the sandbox is left');
    t.is(host.connectOptions, undefined);
});

test('with restart, a sandboxed server killed comes back on the same socket', async (t) => {
    const files = await prepareRpcServerDir(await testRpcBinaries(), {gpu: false});
    const host = new RpcServerHost({binaries: files, restart: true, sandbox: await sandboxOptions(await tempDir(t))});
    t.teardown(() => host.stop());
    await host.start();
    const options = host.connectOptions!;
    const exited = once(host, 'exit');
    const readyAgain = once(host, 'ready');
    process.kill(host.pid!, 'SIGKILL');
    t.deepEqual(await exited, [null, 'SIGKILL', true]);
    await readyAgain;
    t.deepEqual(host.connectOptions, options);
    t.deepEqual(await hello(options), {size: 28n, major: 6});
});

test('as an unprivileged user, the sandbox starts and the server answers', async (t) => {
    if (process.getuid?.() !== 0)
        return t.pass('this test switches to uid 65534 with setpriv, which needs root; run as a user, the other tests are this check');
    // That user runs this checkout's sources and tsx, so it must be able to read them: a clone under a private
    // directory (`mktemp -d` makes them 0700) is out of its reach, and the test says so instead of failing.
    const checkout = new URL('..', import.meta.url).pathname;
    const reach = await execFileAsync('setpriv', [`--reuid=${SANDBOX_UID}`, `--regid=${SANDBOX_UID}`, '--clear-groups', process.execPath, '-e',
        `require('node:fs').accessSync(${JSON.stringify(join(checkout, 'node_modules', 'tsx', 'package.json'))})`]).then(() => true, () => false);
    if (!reach)
        return t.pass(`uid ${SANDBOX_UID} cannot read this checkout (${checkout}): clone it where other users can, to run this test`);
    const files = await prepareRpcServerDir(await testRpcBinaries(), {gpu: false});
    const launcherPath = await ensureSandboxLauncher({dir: TEST_RPC_DIR});
    const root = await tempDir(t);
    await chmod(root, 0o755);
    for (const dir of ['cache', 'home', 'run']) {
        await mkdir(join(root, dir));
        await chown(join(root, dir), SANDBOX_UID, SANDBOX_UID);
    }
    const script = `import {connect} from 'node:net';
import {once} from 'node:events';
import {probeSandbox} from ${JSON.stringify(new URL('../engine/rpc/rpc-sandbox.ts', import.meta.url).href)};
import {RpcServerHost} from ${JSON.stringify(new URL('../engine/rpc/rpc-server-host.ts', import.meta.url).href)};
const probe = await probeSandbox({launcherDir: ${JSON.stringify(TEST_RPC_DIR)}});
const host = new RpcServerHost({binaries: {serverPath: ${JSON.stringify(files.serverPath)}}, cacheDir: ${JSON.stringify(join(root, 'cache'))},
    sandbox: {bwrapPath: '/usr/bin/bwrap', launcherPath: ${JSON.stringify(launcherPath)}, runtimeDir: ${JSON.stringify(join(root, 'run'))}}});
await host.start();
const socket = connect(host.connectOptions);
await once(socket, 'connect');
const request = Buffer.alloc(33); request[0] = 14; request.writeBigUInt64LE(24n, 1);
socket.write(request);
const [reply] = await once(socket, 'data');
socket.destroy();
await host.stop();
console.log(JSON.stringify({uid: process.getuid(), probe: probe.available || probe.reason, major: reply[8]}));`;
    const child = spawn('setpriv', [`--reuid=${SANDBOX_UID}`, `--regid=${SANDBOX_UID}`, '--clear-groups', process.execPath, '--import=tsx', '--input-type=module', '-e', script],
        {env: {PATH: process.env.PATH, HOME: join(root, 'home')}, cwd: checkout, stdio: ['ignore', 'pipe', 'pipe']});
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => stdout += chunk);
    child.stderr.on('data', (chunk) => stderr += chunk);
    const [code] = await once(child, 'exit') as [number | null];
    t.is(code, 0, stderr);
    t.deepEqual(JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}'), {uid: SANDBOX_UID, probe: true, major: 6});
});
