/**
 * One llama.cpp `ggml-rpc-server` per layer-hosting session, supervised like the engine (docs/architecture.md,
 * "Sharding"). The server puts its tensor cache (`-c`) under `$LLAMA_CACHE` (`<cacheDir>/rpc/` here) and never
 * evicts anything, hence `pruneTensorCache`.
 */
import {type ChildProcess, spawn, type SpawnOptionsWithStdioTuple} from 'node:child_process';
import {existsSync} from 'node:fs';
import {EventEmitter, once} from 'node:events';
import {mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, unlink} from 'node:fs/promises';
import {connect, createServer} from 'node:net';
import {tmpdir} from 'node:os';
import {dirname, join} from 'node:path';
import {createInterface} from 'node:readline';
import {setTimeout as sleep} from 'node:timers/promises';
import {ProcessSupervisor} from '../process-supervisor.js';
import type {GpuBackend} from '../../core/inference-types.js';
import type {RpcBinaries} from './rpc-build.js';
import {
    SANDBOX_READY_LINE, SANDBOX_SERVER_PORT, sandboxArgs, sandboxedExit, sandboxEnv, sandboxGpuAccess, sandboxReadOnlyPaths
} from './rpc-sandbox.js';

export const RPC_HOST = '127.0.0.1';
/** The server's subdirectory of `$LLAMA_CACHE`, and its file names: the FNV-1a hash of the tensor data, in hex. */
export const TENSOR_CACHE_SUBDIR = 'rpc';
const TENSOR_CACHE_FILE = /^[0-9a-f]{16}$/;
/** What the server says, on stderr, when it cannot bind its port (ggml/src/ggml-rpc/ggml-rpc.cpp), then exits 0. */
const BIND_FAILURE_LINE = 'Failed to create server socket';
const READY_POLL_MS = 50;
/** util-linux's `setpriv`, which execs the server (same pid) with a parent-death signal; undefined where absent. */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((path) => existsSync(path));
const CONNECT_TIMEOUT_MS = 1_000;
/** The launcher's last line about the server's end (`rpc-server killed by signal 11 (SIGSEGV)`). */
const LAUNCHER_REPORT = /^rpc-server (killed by signal|exited with code) /;
const SOCKET_FILE = 'rpc.sock';

export interface RpcServerSandboxOptions {
    /** bubblewrap (`probeSandbox`'s `bwrapPath`). */
    bwrapPath: string,
    /** The launcher run inside (`ensureSandboxLauncher`, or `probeSandbox`'s `launcherPath`). */
    launcherPath: string,
    /**
     * The GPU backend the server's directory was prepared for (`prepareRpcServerDir`'s `gpu`): its device nodes
     * and driver files are shown inside; defaults to false (none: the server finds only the CPU).
     */
    gpu?: GpuBackend,
    /** Where each server gets the directory of its socket (mode 0700); defaults to the OS temp dir. */
    runtimeDir?: string
}

/** What `net.connect()` takes to reach a server: its Unix socket when sandboxed, else its loopback port. */
export type RpcConnectOptions = {path: string} | {host: string, port: number};

export interface RpcServerHostOptions {
    /** The server to run: `ensureRpcBinaries`' result, or `prepareRpcServerDir`'s to use node-llama-cpp's GPU backend. */
    binaries: Pick<RpcBinaries, 'serverPath'>,
    /** Threads for the CPU device (`-t`); defaults to 1. */
    threads?: number,
    /** Enables the tensor cache (`-c`) in `<cacheDir>/rpc/`; defaults to no cache. */
    cacheDir?: string,
    /** Devices to serve (`-d`, names such as `CUDA0`); defaults to the server's choice: every GPU, else the CPU. */
    devices?: string[],
    /**
     * Restarts the server (on the same port) after it exits. Defaults to false: the server holds a session's
     * weights and state, which a restart loses, so an exit ends the session and the owner decides what follows.
     */
    restart?: boolean,
    /** How long `start()` waits for the server to listen; defaults to 30 s (GPU backends initialise slowly). */
    readyTimeoutMs?: number,
    /** Ports tried when the free port picked is taken before the server binds it; defaults to 5. */
    portAttempts?: number,
    /** How long `stop()` waits after SIGTERM before SIGKILL; defaults to 3 s. */
    stopGraceMs?: number,
    /**
     * Runs the server in a bubblewrap sandbox (docs/architecture.md, "Sharding"): for every server that hosts
     * peers' layers. It is then reached through `connectOptions` (a Unix socket), not `port`. Defaults to none:
     * the server runs as the node's user on 127.0.0.1 (this node's own devices, and `--shard-sandbox off`).
     */
    sandbox?: RpcServerSandboxOptions
}

export const rpcServerHostDefaults = {
    threads: 1,
    restart: false,
    readyTimeoutMs: 30_000,
    portAttempts: 5,
    stopGraceMs: 3_000
};

export interface RpcServerHostEvents {
    /** A line the server wrote (stdout is block-buffered by the server: its lines come late). */
    log: [line: string],
    /** The server listens on `port` (after `start()`, and after each restart); sandboxed, on its own loopback. */
    ready: [port: number],
    /**
     * The server exited after it was ready; `restarting` says whether another follows. Not emitted after `stop()`.
     * Sandboxed, the server's own code or signal, as the launcher reported it.
     */
    exit: [code: number | null, signal: NodeJS.Signals | null, restarting: boolean]
}

/** A loopback port free right now: the server cannot be asked for an ephemeral one (it rejects `-p 0`). */
async function freeLoopbackPort() {
    const server = createServer().listen(0, RPC_HOST);
    await once(server, 'listening');
    const {port} = server.address() as {port: number};
    await new Promise((resolve) => server.close(resolve));
    return port;
}

function hexToAddress(hex: string) {
    if (hex.length === 8) // IPv4, in host (little-endian) byte order
        return [6, 4, 2, 0].map((index) => parseInt(hex.slice(index, index + 2), 16)).join('.');
    // IPv6: four 32-bit words, each little-endian
    const bytes = hex.match(/.{8}/g)!.flatMap((word) => word.match(/../g)!.reverse());
    return bytes.join('').match(/.{4}/g)!.map((group) => group.replace(/^0{1,3}/, '')).join(':');
}

/**
 * The TCP addresses a process listens on, from /proc (Linux): its socket inodes matched against
 * /proc/net/tcp and tcp6. Empty when the process is gone.
 */
export async function listeningAddresses(pid: number): Promise<{address: string, port: number}[]> {
    const fdDir = `/proc/${pid}/fd`;
    const inodes = new Set<string>();
    for (const fd of await readdir(fdDir).catch(() => [])) {
        const target = await readlink(join(fdDir, fd)).catch(() => '');
        const match = /^socket:\[(\d+)\]$/.exec(target);
        if (match !== null)
            inodes.add(match[1]!);
    }
    const addresses: {address: string, port: number}[] = [];
    for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
        const text = await readFile(table, 'utf8').catch(() => '');
        for (const line of text.split('\n').slice(1)) {
            const fields = line.trim().split(/\s+/);
            // local_address is field 1, st (0A = LISTEN) field 3, inode field 9
            if (fields.length < 10 || fields[3] !== '0A' || !inodes.has(fields[9]!))
                continue;
            const [address, port] = fields[1]!.split(':');
            addresses.push({address: hexToAddress(address!), port: parseInt(port!, 16)});
        }
    }
    return addresses;
}

function acceptsConnection(port: number) {
    return new Promise<boolean>((resolve) => {
        const socket = connect({host: RPC_HOST, port});
        const done = (accepted: boolean) => {
            socket.destroy();
            resolve(accepted);
        };
        socket.setTimeout(CONNECT_TIMEOUT_MS, () => done(false));
        socket.once('connect', () => done(true));
        socket.once('error', () => done(false));
    });
}

/** Resolves true when the launcher says its socket listens, false if its output ends first. */
function launcherReady(child: ChildProcess) {
    return new Promise<boolean>((resolve) => {
        if (child.stdout === null)
            return resolve(false);
        // not closed after the line: that would pause stdout, and the child's 'close' (its exit) waits for its end
        const lines = createInterface({input: child.stdout});
        lines.on('line', (line) => {
            if (line === SANDBOX_READY_LINE)
                resolve(true);
        });
        lines.on('close', () => resolve(false));
    });
}

/**
 * Runs one `ggml-rpc-server` on 127.0.0.1 and a free port, or in a sandbox behind a Unix socket. `start()`
 * resolves once that server (not another process that took the port) listens and accepts a connection. An exit
 * after that is reported by `exit`; without `restart` it is final.
 */
export class RpcServerHost extends EventEmitter<RpcServerHostEvents> {
    private readonly options: typeof rpcServerHostDefaults & RpcServerHostOptions;
    private supervisor: ProcessSupervisor | undefined;
    private stopped = false;
    /** Sandboxed: the directory of its socket, bubblewrap's arguments (the same for each restart), whether it is up. */
    private sandboxed: {socketDir: string, socketPath: string, args: string[], up: boolean} | undefined;
    /** The port the server listens on, once started; undefined when sandboxed (see `connectOptions`). */
    port: number | undefined;

    constructor(options: RpcServerHostOptions) {
        super();
        this.options = {...rpcServerHostDefaults, ...options};
    }

    /** `127.0.0.1:PORT`, once started. */
    get endpoint() {
        return this.port === undefined ? undefined : `${RPC_HOST}:${this.port}`;
    }

    /** How to reach the server with `net.connect()`, once started. */
    get connectOptions(): RpcConnectOptions | undefined {
        if (this.sandboxed !== undefined)
            return this.sandboxed.up ? {path: this.sandboxed.socketPath} : undefined;
        return this.port === undefined ? undefined : {host: RPC_HOST, port: this.port};
    }

    /** The process this host runs: the server, or bubblewrap when sandboxed (the server is its descendant). */
    get pid() {
        return this.supervisor?.pid;
    }

    /**
     * Starts the server; resolves with its port once it accepts connections (sandboxed: the port on the sandbox's
     * own loopback, which this node cannot reach: use `connectOptions`). Rejects if it exits or hangs first.
     */
    async start() {
        // The server creates its cache dir itself, but two servers starting at once race there and one gives up.
        if (this.options.cacheDir !== undefined)
            await mkdir(join(this.options.cacheDir, TENSOR_CACHE_SUBDIR), {recursive: true});
        if (this.options.sandbox !== undefined) {
            const sandboxed = await this.prepareSandbox(this.options.sandbox);
            try {
                if (this.stopped)
                    throw new Error('rpc-server stopped while starting');
                if (await this.launch(SANDBOX_SERVER_PORT) !== 'ready')
                    throw new Error('rpc-server could not bind its port in the sandbox');
            } catch (error) {
                await this.removeSocketDir();
                throw error;
            }
            sandboxed.up = true;
            return SANDBOX_SERVER_PORT;
        }
        for (let attempt = 1; ; attempt++) {
            const port = await freeLoopbackPort();
            const outcome = await this.launch(port);
            if (outcome === 'ready') {
                this.port = port;
                return port;
            }
            if (attempt >= this.options.portAttempts)
                throw new Error(`rpc-server could not bind a port after ${attempt} attempts`);
        }
    }

    /** Stops the server for good: SIGTERM, then SIGKILL after `stopGraceMs`; a sandbox dies whole with bubblewrap. */
    async stop() {
        this.stopped = true;
        await this.supervisor?.stop();
        await this.removeSocketDir();
    }

    private async removeSocketDir() {
        if (this.sandboxed !== undefined)
            await rm(this.sandboxed.socketDir, {recursive: true, force: true});
    }

    /** The sandbox's socket directory (0700, as `mkdtemp` makes it) and bubblewrap's arguments. */
    private async prepareSandbox({launcherPath, gpu = false, runtimeDir = tmpdir()}: RpcServerSandboxOptions) {
        const {serverPath} = this.options.binaries;
        const [readOnlyPaths, gpuAccess] = await Promise.all([sandboxReadOnlyPaths({launcherPath, serverPath}), sandboxGpuAccess(gpu)]);
        const socketDir = await mkdtemp(join(runtimeDir, 'strongdoge-rpc-'));
        const socketPath = join(socketDir, SOCKET_FILE);
        const {cacheDir} = this.options;
        try {
            const args = sandboxArgs({
                launcherPath,
                server: {path: serverPath, args: this.args(SANDBOX_SERVER_PORT), socketPath},
                // Read-only: a peer's server would write every big tensor it receives there, named by its FNV-1a hash,
                // which anyone can collide: a crafted upload would then be loaded into other peers' sessions. Only
                // this node writes the cache, from its own copy of a model (tensor-cache-seed.ts).
                readOnlyPaths: cacheDir === undefined ? readOnlyPaths : [...readOnlyPaths, join(cacheDir, TENSOR_CACHE_SUBDIR)],
                gpu: gpuAccess,
                env: sandboxEnv(cacheDir)
            });
            this.sandboxed = {socketDir, socketPath, args, up: false};
            return this.sandboxed;
        } catch (error) {
            await rm(socketDir, {recursive: true, force: true});
            throw error;
        }
    }

    private args(port: number) {
        const args = ['-H', RPC_HOST, '-p', String(port), '-t', String(this.options.threads)];
        if (this.options.devices !== undefined)
            args.push('-d', this.options.devices.join(','));
        if (this.options.cacheDir !== undefined)
            args.push('-c');
        return args;
    }

    private spawnServer(port: number) {
        const {serverPath} = this.options.binaries;
        // bubblewrap needs no environment, and passes none of it on (`--clearenv`)
        if (this.sandboxed !== undefined && this.options.sandbox !== undefined)
            return spawn(this.options.sandbox.bwrapPath, this.sandboxed.args, {env: {}, stdio: ['ignore', 'pipe', 'pipe']});
        const env = {...process.env};
        // ggml would load this extra backend library from anywhere
        delete env.GGML_BACKEND_PATH;
        if (this.options.cacheDir !== undefined)
            env.LLAMA_CACHE = this.options.cacheDir;
        // ggml also looks for backends in the working directory: only the server's own directory will do
        const options: SpawnOptionsWithStdioTuple<'ignore', 'pipe', 'pipe'> = {cwd: dirname(serverPath), env, stdio: ['ignore', 'pipe', 'pipe']};
        // A node killed outright (SIGKILL, OOM) cannot stop its servers: setpriv makes the kernel kill each one
        // with its parent, so no server outlives the node that guards it (util-linux, on every Linux we run on).
        return SETPRIV === undefined
            ? spawn(serverPath, this.args(port), options)
            : spawn(SETPRIV, ['--pdeathsig', 'KILL', '--', serverPath, ...this.args(port)], options);
    }

    /** Runs the server on `port` until it listens ('ready'), or it exits because the port was taken. */
    private launch(port: number) {
        return new Promise<'ready' | 'port_taken'>((resolve, reject) => {
            const supervisor = new ProcessSupervisor({name: 'rpc-server', spawn: () => this.spawnServer(port), stopGraceMs: this.options.stopGraceMs});
            this.supervisor = supervisor;
            let ready = false;
            let portTaken = false;
            let report: string | undefined;
            const tail: string[] = [];
            const timer = setTimeout(() => {
                void supervisor.stop();
                reject(new Error(`rpc-server did not listen within ${this.options.readyTimeoutMs} ms: ${tail.join(' | ')}`));
            }, this.options.readyTimeoutMs);
            supervisor.on('log', (line) => {
                portTaken ||= line.includes(BIND_FAILURE_LINE);
                if (LAUNCHER_REPORT.test(line))
                    report = line;
                tail.push(line);
                if (tail.length > 10)
                    tail.shift();
                this.emit('log', line);
            });
            supervisor.on('spawn', (child) => void this.waitReady(child, port, () => supervisor.pid === child.pid && !this.stopped).then((listening) => {
                if (!listening)
                    return;
                supervisor.markStarted();
                this.emit('ready', port);
                if (!ready) {
                    ready = true;
                    clearTimeout(timer);
                    resolve('ready');
                }
            }));
            supervisor.on('exit', (exitCode, exitSignal) => {
                const [code, signal] = this.sandboxed === undefined ? [exitCode, exitSignal] : sandboxedExit(exitCode, exitSignal, report);
                report = undefined;
                if (!ready) {
                    clearTimeout(timer);
                    void supervisor.stop();
                    if (portTaken && !this.stopped)
                        resolve('port_taken');
                    else
                        reject(new Error(this.stopped ? 'rpc-server stopped while starting' : `rpc-server exited (${signal ?? `code ${code}`}) before listening: ${tail.join(' | ')}`));
                    return;
                }
                if (this.stopped)
                    return;
                if (!this.options.restart) {
                    if (this.sandboxed !== undefined)
                        this.sandboxed.up = false;
                    void supervisor.stop();
                    void this.removeSocketDir();
                }
                this.emit('exit', code, signal, this.options.restart);
            });
            supervisor.start();
        });
    }

    /** Resolves true once the server listens (sandboxed: once the launcher's socket does); false once `current()` is not. */
    private async waitReady(child: ChildProcess, port: number, current: () => boolean) {
        if (this.sandboxed === undefined)
            return this.waitListening(child.pid, port, current);
        return await launcherReady(child) && current();
    }

    /** Polls until the child itself listens on 127.0.0.1:port and accepts a connection; false once `current()` is not. */
    private async waitListening(pid: number | undefined, port: number, current: () => boolean) {
        if (pid === undefined)
            return false;
        while (current()) {
            const owns = process.platform !== 'linux' ||
                (await listeningAddresses(pid)).some((socket) => socket.address === RPC_HOST && socket.port === port);
            if (owns && await acceptsConnection(port))
                return current();
            await sleep(READY_POLL_MS);
        }
        return false;
    }
}

/** The files of the tensor cache in `<cacheDir>/rpc/`: their paths, sizes and last use. */
async function tensorCacheFiles(cacheDir: string) {
    const dir = join(cacheDir, TENSOR_CACHE_SUBDIR);
    const names = (await readdir(dir).catch(() => [])).filter((name) => TENSOR_CACHE_FILE.test(name));
    return (await Promise.all(names.map(async (name) => {
        const info = await stat(join(dir, name)).catch(() => undefined);
        return info === undefined ? undefined : {name, path: join(dir, name), bytes: info.size, usedMs: Math.max(info.atimeMs, info.mtimeMs)};
    }))).filter((file) => file !== undefined);
}

/** The size of each tensor in the cache, by its hash (the file's name): what a SET_TENSOR_HASH would load. */
export async function tensorCacheSizes(cacheDir: string) {
    return new Map((await tensorCacheFiles(cacheDir)).map((file) => [BigInt(`0x${file.name}`), BigInt(file.bytes)]));
}

/**
 * Keeps the tensor cache in `<cacheDir>/rpc/` within `maxBytes`: evicts the least recently used files first (by
 * access or modification time, whichever is later). Call it before a server starts on that cache: the server
 * reads a file it found a moment earlier without checking again. Returns what it removed and what is left.
 */
export async function pruneTensorCache(cacheDir: string, maxBytes: number) {
    const files = await tensorCacheFiles(cacheDir);
    files.sort((a, b) => a.usedMs - b.usedMs);
    let totalBytes = files.reduce((sum, file) => sum + file.bytes, 0);
    let removedFiles = 0;
    let removedBytes = 0;
    for (const file of files) {
        if (totalBytes <= maxBytes)
            break;
        await unlink(file.path).catch(() => undefined);
        totalBytes -= file.bytes;
        removedFiles++;
        removedBytes += file.bytes;
    }
    return {removedFiles, removedBytes, keptBytes: totalBytes};
}
