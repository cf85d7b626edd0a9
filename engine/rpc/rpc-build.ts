/**
 * The llama.cpp RPC server and backend, built once from the llama.cpp source that node-llama-cpp ships
 * (`node_modules/node-llama-cpp/llama/gitRelease.bundle`): its prebuilt binaries lack RPC (docs/architecture.md,
 * "Sharding").
 *
 * Layout under `dir`:
 * - `llama.cpp-<release>/`: what the build produced (`ggml-rpc-server`, `libggml-rpc.so`, and the server's own
 *   `libggml.so.0`, `libggml-base.so.0` and a single `libggml-cpu.so`), linked with `$ORIGIN` so it runs from
 *   there, plus `build.json`. Appears by an atomic rename once complete; another release builds beside it.
 * - `llama.cpp-<release>/server-<gpu>-<hash>/`: what a session runs (`prepareRpcServerDir`): the server
 *   executable (hard link or copy) and `libggml-rpc.so`, among symlinks to the ggml libraries node-llama-cpp
 *   uses on this machine (its CUDA or Vulkan backend and CPU variants). ggml with `GGML_BACKEND_DL` loads
 *   backends from the executable's own directory and the working directory (`ggml_backend_load_all` in
 *   ggml/src/ggml-backend-reg.cpp), and `libggml-base.so.0` / `libggml.so.0` there point at node-llama-cpp's
 *   files, so the server runs exactly one copy of ggml: the same one the engine runs.
 */
import {execFile, spawn} from 'node:child_process';
import {createHash, randomBytes} from 'node:crypto';
import {constants} from 'node:fs';
import {access, copyFile, link, mkdir, open, readdir, readFile, readlink, rename, rm, stat, symlink, unlink, utimes, writeFile} from 'node:fs/promises';
import {availableParallelism, hostname} from 'node:os';
import {basename, delimiter, dirname, join} from 'node:path';
import {createInterface} from 'node:readline';
import {fileURLToPath} from 'node:url';
import {promisify} from 'node:util';
import type {GpuBackend} from '../../core/inference-types.js';

const execFileAsync = promisify(execFile);

export const RPC_SERVER_FILE = 'ggml-rpc-server';
export const RPC_LIBRARY_FILE = 'libggml-rpc.so';
const MANIFEST_FILE = 'build.json';
const SERVER_DIR_MARKER = '.complete';

/**
 * Only the RPC backend and its server, for any x86-64/ARM CPU (not this machine's), shared libraries with
 * dynamically loaded backends, found next to each other (`$ORIGIN`) wherever the directory ends up.
 */
const CMAKE_FLAGS = [
    '-DCMAKE_BUILD_TYPE=Release',
    '-DBUILD_SHARED_LIBS=ON',
    '-DGGML_BACKEND_DL=ON',
    '-DGGML_RPC=ON',
    '-DGGML_NATIVE=OFF',
    '-DGGML_CCACHE=OFF',
    '-DLLAMA_CURL=OFF',
    '-DLLAMA_BUILD_TESTS=OFF',
    '-DLLAMA_BUILD_EXAMPLES=OFF',
    '-DLLAMA_BUILD_SERVER=OFF',
    '-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON',
    '-DCMAKE_INSTALL_RPATH=$ORIGIN'
];
/** The server depends on ggml, which depends on every backend, RPC included: one target gives one progress count. */
const CMAKE_TARGETS = ['ggml-rpc-server'];
/** Build outputs kept: the server and every ggml library it needs (with their version symlinks). */
const KEPT_OUTPUT = /^(ggml-rpc-server|libggml[\w.-]*\.so(\.\d+)*)$/;

/** Another process holding the build lock refreshes it this often; one silent for `LOCK_STALE_MS` is dead. */
const LOCK_HEARTBEAT_MS = 5_000;
const LOCK_STALE_MS = 60_000;
const LOCK_POLL_MS = 500;
/** Progress lines at most this often, and only when the percentage moved. */
const PROGRESS_INTERVAL_MS = 2_000;
/** Lines of build output quoted in an error. */
const ERROR_TAIL_LINES = 25;
const VERSION_TIMEOUT_MS = 5_000;

export interface RpcBinaries {
    /** The server built here: runs on the CPU with its own ggml libraries (see `prepareRpcServerDir` for GPUs). */
    serverPath: string,
    /**
     * The RPC backend. Loaded from here into node-llama-cpp, it brings a second `libggml-base` (its own); prefer
     * `prepareRpcServerDir`'s `libraryPath`, which resolves to the one already loaded.
     */
    libraryPath: string,
    /** The directory holding them: `<dir>/llama.cpp-<release>`. */
    dir: string,
    /** node-llama-cpp's llama.cpp release tag they were built from. */
    release: string
}

export interface RpcTool {
    path: string,
    /** First line of `--version`; undefined if it did not answer. */
    version: string | undefined
}

export interface RpcToolchain {
    cmake: RpcTool | undefined,
    cCompiler: RpcTool | undefined,
    cxxCompiler: RpcTool | undefined,
    /** make or ninja, which cmake drives. */
    buildTool: (RpcTool & {name: 'make' | 'ninja'}) | undefined,
    /** Unpacks the source bundle. */
    git: RpcTool | undefined,
    /** What is absent, in words ("cmake", "a C++ compiler (c++, g++ or clang++)"); empty when the build can run. */
    missing: string[]
}

export class RpcToolchainError extends Error {
    constructor(readonly missing: string[]) {
        super(`cannot build the llama.cpp RPC server: ${missing.join(', ')} not found`);
    }
}

export interface EnsureRpcBinariesOptions {
    /** Where builds live (the node passes `<data dir>/rpc`); one subdirectory per llama.cpp release. */
    dir: string,
    /** Build progress, a line at a time ("building llama.cpp RPC server: 45%"); defaults to none. */
    onProgress?: (line: string) => void,
    /** Parallel compile jobs; defaults to the number of cores. */
    jobs?: number,
    /** Environment of the build (its PATH finds the tools); defaults to `process.env`. */
    env?: NodeJS.ProcessEnv,
    /** Stops a build in progress (or the wait for another process's build). */
    signal?: AbortSignal
}

function toolVersion(path: string, env: NodeJS.ProcessEnv) {
    return execFileAsync(path, ['--version'], {env, timeout: VERSION_TIMEOUT_MS})
        .then(({stdout}) => stdout.split('\n')[0]!.trim() || undefined, () => undefined);
}

/** The first of `names` that is an executable on `PATH`. */
export async function findExecutable(names: string[], env: NodeJS.ProcessEnv) {
    for (const name of names)
        for (const directory of (env.PATH ?? '').split(delimiter).filter(Boolean)) {
            const path = join(directory, name);
            if (await access(path, constants.X_OK).then(() => true, () => false))
                return path;
        }
    return undefined;
}

async function findTool(names: string[], env: NodeJS.ProcessEnv): Promise<RpcTool | undefined> {
    const path = await findExecutable(names, env);
    return path === undefined ? undefined : {path, version: await toolVersion(path, env)};
}

/** What building the RPC server needs, and which of it this machine lacks. Honours `CC` and `CXX` as cmake does. */
export async function detectRpcToolchain({env = process.env}: {env?: NodeJS.ProcessEnv} = {}): Promise<RpcToolchain> {
    const [cmake, cCompiler, cxxCompiler, make, ninja, git] = await Promise.all([
        findTool(['cmake'], env),
        findTool(env.CC ? [env.CC] : ['cc', 'gcc', 'clang'], env),
        findTool(env.CXX ? [env.CXX] : ['c++', 'g++', 'clang++'], env),
        findTool(['make'], env),
        findTool(['ninja'], env),
        findTool(['git'], env)
    ]);
    const buildTool = make !== undefined ? {...make, name: 'make' as const} : ninja !== undefined ? {...ninja, name: 'ninja' as const} : undefined;
    const missing = [
        cmake === undefined && 'cmake',
        cxxCompiler === undefined && (env.CXX ? `the C++ compiler ${env.CXX}` : 'a C++ compiler (c++, g++ or clang++)'),
        cCompiler === undefined && (env.CC ? `the C compiler ${env.CC}` : 'a C compiler (cc, gcc or clang)'),
        buildTool === undefined && 'make or ninja',
        git === undefined && 'git'
    ].filter((item): item is string => item !== false);
    return {cmake, cCompiler, cxxCompiler, buildTool, git, missing};
}

/** node-llama-cpp's package directory. */
export function nodeLlamaCppDir() {
    return dirname(dirname(fileURLToPath(import.meta.resolve('node-llama-cpp'))));
}

/** The llama.cpp release node-llama-cpp ships, and its source bundle. */
export async function llamaCppSource() {
    const llamaDir = join(nodeLlamaCppDir(), 'llama');
    const info = JSON.parse(await readFile(join(llamaDir, 'llama.cpp.info.json'), 'utf8')) as {tag: string};
    return {release: info.tag, bundlePath: join(llamaDir, 'gitRelease.bundle')};
}

function releaseDirName(release: string) {
    return `llama.cpp-${release.replace(/[^\w.-]/g, '_')}`;
}

async function exists(path: string) {
    return stat(path).then(() => true, () => false);
}

/** The binaries already built into `dir` for node-llama-cpp's release, or undefined: never builds. */
export async function findRpcBinaries(dir: string): Promise<RpcBinaries | undefined> {
    const {release} = await llamaCppSource();
    const releaseDir = join(dir, releaseDirName(release));
    const manifest = await readFile(join(releaseDir, MANIFEST_FILE), 'utf8').then((text) => JSON.parse(text) as {flags?: string[]}, () => undefined);
    // a build with other flags (an older strongdoge) is rebuilt
    if (manifest?.flags?.join(' ') !== CMAKE_FLAGS.join(' '))
        return undefined;
    const binaries = {serverPath: join(releaseDir, RPC_SERVER_FILE), libraryPath: join(releaseDir, RPC_LIBRARY_FILE), dir: releaseDir, release};
    return await exists(binaries.serverPath) && await exists(binaries.libraryPath) ? binaries : undefined;
}

/** Builds in one process at a time per directory and release, across processes too. */
const buildsInProcess = new Map<string, Promise<RpcBinaries>>();

/**
 * The RPC server and backend for node-llama-cpp's llama.cpp release: built into `dir` the first time (about a
 * minute on 2 cores), reused afterwards. Concurrent callers, in this process or others, share one build: a lock
 * file says who builds, and the result appears by an atomic rename. Rejects with `RpcToolchainError` when cmake,
 * a compiler, make/ninja or git is missing.
 */
export function ensureRpcBinaries(options: EnsureRpcBinariesOptions): Promise<RpcBinaries> {
    const key = options.dir;
    let pending = buildsInProcess.get(key);
    if (pending === undefined) {
        pending = ensureUnshared(options).finally(() => buildsInProcess.delete(key));
        buildsInProcess.set(key, pending);
    }
    return pending;
}

async function ensureUnshared(options: EnsureRpcBinariesOptions): Promise<RpcBinaries> {
    const found = await findRpcBinaries(options.dir);
    if (found !== undefined)
        return found;
    const {release} = await llamaCppSource();
    await mkdir(options.dir, {recursive: true});
    const lockPath = join(options.dir, `${releaseDirName(release)}.lock`);
    let saidWaiting = false;
    for (;;) {
        options.signal?.throwIfAborted();
        const lock = await acquireLock(lockPath);
        if (lock !== undefined) {
            try {
                // whoever held the lock before may have finished
                return await findRpcBinaries(options.dir) ?? await build(options);
            } finally {
                await lock.release();
            }
        }
        if (!saidWaiting)
            options.onProgress?.('waiting for another process building the llama.cpp RPC server');
        saidWaiting = true;
        await new Promise((resolve) => setTimeout(resolve, LOCK_POLL_MS));
        const built = await findRpcBinaries(options.dir);
        if (built !== undefined)
            return built;
    }
}

/** Whether a process with this pid exists (one of another user's counts too). */
export function processAlive(pid: number) {
    try {
        process.kill(pid, 0);
        return true;
    } catch (error) {
        return (error as NodeJS.ErrnoException).code === 'EPERM';
    }
}

/** The lock, or undefined while a live holder has it. A holder that died or stopped refreshing it loses it. */
async function acquireLock(lockPath: string) {
    const owner = `${process.pid}\n${hostname()}\n`;
    try {
        const handle = await open(lockPath, 'wx');
        await handle.writeFile(owner);
        await handle.close();
    } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST')
            throw error;
        const [content, info] = await Promise.all([readFile(lockPath, 'utf8').catch(() => ''), stat(lockPath).catch(() => undefined)]);
        const [pid, host] = content.split('\n');
        const dead = host === hostname() && Number(pid) > 0 && !processAlive(Number(pid));
        const silent = info !== undefined && Date.now() - info.mtimeMs > LOCK_STALE_MS;
        if (info !== undefined && (dead || silent))
            await unlink(lockPath).catch(() => undefined);
        return undefined;
    }
    const heartbeat = setInterval(() => {
        const now = new Date();
        utimes(lockPath, now, now).catch(() => undefined);
    }, LOCK_HEARTBEAT_MS);
    heartbeat.unref();
    return {
        async release() {
            clearInterval(heartbeat);
            await unlink(lockPath).catch(() => undefined);
        }
    };
}

/** Runs a build step; its output lines go to `onLine`, and its last lines into the error if it fails. */
function runStep(command: string, args: string[], {cwd, env, signal, onLine}: {cwd: string, env: NodeJS.ProcessEnv, signal?: AbortSignal, onLine?: (line: string) => void}) {
    return new Promise<void>((resolve, reject) => {
        const child = spawn(command, args, {cwd, env, stdio: ['ignore', 'pipe', 'pipe'], signal});
        const tail: string[] = [];
        for (const stream of [child.stdout, child.stderr])
            createInterface({input: stream}).on('line', (line) => {
                tail.push(line);
                if (tail.length > ERROR_TAIL_LINES)
                    tail.shift();
                onLine?.(line);
            });
        child.on('error', reject);
        child.on('close', (code, exitSignal) => {
            if (code === 0)
                resolve();
            else
                reject(new Error(`${basename(command)} ${args.slice(0, 2).join(' ')} failed (${exitSignal ?? `exit code ${code}`}):\n${tail.join('\n')}`));
        });
    });
}

/** Turns cmake's `[ 45%]` (make) or `[12/80]` (ninja) lines into throttled progress lines. */
function progressReporter(onProgress: ((line: string) => void) | undefined) {
    let lastPercent = -1;
    let lastAt = 0;
    return (line: string) => {
        const match = /^\[\s*(\d+)%\]/.exec(line) ?? /^\[(\d+)\/(\d+)\]/.exec(line);
        if (match === null || onProgress === undefined)
            return;
        const percent = match[2] === undefined ? Number(match[1]) : Math.floor(100 * Number(match[1]) / Number(match[2]));
        const now = Date.now();
        if (percent <= lastPercent || (now - lastAt < PROGRESS_INTERVAL_MS && percent < 100))
            return;
        lastPercent = percent;
        lastAt = now;
        onProgress(`building llama.cpp RPC server: ${percent}%`);
    };
}

/** Copies what the server needs out of the build tree, version symlinks as symlinks. */
async function collectOutputs(binDir: string, outDir: string) {
    await mkdir(outDir);
    for (const entry of await readdir(binDir, {withFileTypes: true})) {
        if (!KEPT_OUTPUT.test(entry.name))
            continue;
        if (entry.isSymbolicLink())
            await symlink(await readlink(join(binDir, entry.name)), join(outDir, entry.name));
        else if (entry.isFile())
            await copyFile(join(binDir, entry.name), join(outDir, entry.name)); // keeps the mode
    }
}

async function build(options: EnsureRpcBinariesOptions): Promise<RpcBinaries> {
    const env = options.env ?? process.env;
    const toolchain = await detectRpcToolchain({env});
    if (toolchain.missing.length > 0)
        throw new RpcToolchainError(toolchain.missing);
    const {release, bundlePath} = await llamaCppSource();
    const say = (line: string) => options.onProgress?.(line);
    const started = Date.now();
    const work = join(options.dir, `.build-${releaseDirName(release)}-${process.pid}-${randomBytes(4).toString('hex')}`);
    const step = {cwd: work, env, signal: options.signal};
    try {
        await mkdir(work);
        say(`building llama.cpp RPC server ${release}: unpacking the source`);
        await runStep(toolchain.git!.path, ['clone', '--quiet', bundlePath, 'src'], step);
        say(`building llama.cpp RPC server ${release}: configuring`);
        const generator = toolchain.buildTool!.name === 'ninja' ? ['-G', 'Ninja'] : [];
        await runStep(toolchain.cmake!.path, ['-S', 'src', '-B', 'build', ...generator, ...CMAKE_FLAGS], step);
        const jobs = options.jobs ?? availableParallelism();
        await runStep(toolchain.cmake!.path, ['--build', 'build', '--target', ...CMAKE_TARGETS, '-j', String(jobs)], {...step, onLine: progressReporter(options.onProgress)});
        const outDir = join(work, 'out');
        await collectOutputs(join(work, 'build', 'bin'), outDir);
        const seconds = Math.round((Date.now() - started) / 1000);
        await writeFile(join(outDir, MANIFEST_FILE), JSON.stringify({release, flags: CMAKE_FLAGS, targets: CMAKE_TARGETS, builtAt: new Date().toISOString(), seconds}, null, 2) + '\n');
        const releaseDir = join(options.dir, releaseDirName(release));
        // an incomplete or outdated build of this release (other flags) makes way; we hold the lock
        await rm(releaseDir, {recursive: true, force: true});
        await rename(outDir, releaseDir);
        say(`built llama.cpp RPC server ${release} in ${seconds} s`);
        return {serverPath: join(releaseDir, RPC_SERVER_FILE), libraryPath: join(releaseDir, RPC_LIBRARY_FILE), dir: releaseDir, release};
    } finally {
        await rm(work, {recursive: true, force: true});
    }
}

/** The GPU backend of node-llama-cpp on this machine (`llama.gpu`), or false for the CPU. */

/**
 * The directory of node-llama-cpp's prebuilt ggml libraries for `gpu` on this platform, as node-llama-cpp
 * finds them (its `@node-llama-cpp/<platform>-<arch>[-gpu]` package), or undefined if that package is absent.
 * CUDA also has a fallback `libggml-cuda.so` in `-cuda-ext/…/fallback` that node-llama-cpp loads only when the
 * main one finds no GPU; a machine that needs it passes both directories to `prepareRpcServerDir`.
 */
export async function prebuiltGgmlDir(gpu: GpuBackend) {
    const suffix = gpu === false || (gpu === 'metal' && process.arch !== 'arm64') ? '' : `-${gpu}`;
    const platform = {linux: 'linux', darwin: 'mac', win32: 'win'}[process.platform as string] ?? process.platform;
    const name = `${platform}-${process.arch === 'arm' ? 'armv7l' : process.arch}${suffix}`;
    try {
        const packageDir = dirname(dirname(fileURLToPath(import.meta.resolve(`@node-llama-cpp/${name}`))));
        const binsDir = join(packageDir, 'bins', name);
        return await exists(binsDir) ? binsDir : undefined;
    } catch {
        return undefined;
    }
}

export interface RpcServerDirOptions {
    /** The GPU backend node-llama-cpp uses on this machine (`llama.gpu`); defaults to false (the CPU). */
    gpu?: GpuBackend,
    /**
     * Directories of the ggml libraries node-llama-cpp uses (later ones win for a name they share); defaults to
     * its prebuilt package for `gpu` (`prebuiltGgmlDir`). Without one for the CPU, the server runs on the ggml
     * it was built with.
     */
    ggmlDirs?: string[]
}

export interface RpcServerFiles {
    /** The executable a session runs (with its directory as working directory: ggml looks for backends there too). */
    serverPath: string,
    /** The RPC backend beside node-llama-cpp's ggml, for the engine: it resolves to the same `libggml-base`. */
    libraryPath: string,
    dir: string
}

/** node-llama-cpp's main ggml library: `libggml.so` or its release-named `libggml[.cuda].v0.4.0.so`. */
const GGML_LIBRARY = /^libggml(\.\w+)*\.so$/;

/**
 * The directory a session runs the server from, set up once per GPU backend and set of library directories:
 * the built server and RPC backend among symlinks to node-llama-cpp's ggml libraries, so that the server uses
 * the GPU backend node-llama-cpp uses here (see the top of this file). Safe to call concurrently.
 */
export async function prepareRpcServerDir(binaries: RpcBinaries, {gpu = false, ggmlDirs}: RpcServerDirOptions = {}): Promise<RpcServerFiles> {
    if (process.platform !== 'linux')
        throw new Error(`sharding runs rpc-server on Linux only so far, not ${process.platform}`);
    const prebuilt = ggmlDirs === undefined ? await prebuiltGgmlDir(gpu) : undefined;
    const dirs = ggmlDirs ?? (prebuilt === undefined ? [] : [prebuilt]);
    if (dirs.length === 0) {
        if (gpu !== false)
            throw new Error(`node-llama-cpp's prebuilt ${gpu} binaries are not installed: pass the directory of the ggml libraries it loaded`);
        return {serverPath: binaries.serverPath, libraryPath: binaries.libraryPath, dir: binaries.dir};
    }
    const libraries = new Map<string, string>();
    for (const directory of dirs)
        for (const name of await readdir(directory))
            if (/^libggml.*\.so$/.test(name))
                libraries.set(name, join(directory, name));
    const base = libraries.get('libggml-base.so');
    const main = [...libraries.keys()].find((name) => GGML_LIBRARY.test(name));
    if (base === undefined || main === undefined)
        throw new Error(`no ggml libraries in ${dirs.join(', ')}`);
    // the built server and RPC backend ask for these sonames
    libraries.set('libggml-base.so.0', base);
    libraries.set('libggml.so.0', libraries.get(main)!);
    const hash = createHash('sha256').update(JSON.stringify([binaries.dir, gpu, dirs])).digest('hex').slice(0, 8);
    const dir = join(binaries.dir, `server-${gpu || 'cpu'}-${hash}`);
    const files = {serverPath: join(dir, RPC_SERVER_FILE), libraryPath: join(dir, RPC_LIBRARY_FILE), dir};
    if (await exists(join(dir, SERVER_DIR_MARKER)))
        return files;
    const work = `${dir}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    try {
        await mkdir(work);
        for (const [name, target] of libraries)
            await symlink(target, join(work, name));
        await symlink(binaries.libraryPath, join(work, RPC_LIBRARY_FILE));
        // a real file, not a symlink: ggml finds backends beside /proc/self/exe, which resolves links
        await link(binaries.serverPath, join(work, RPC_SERVER_FILE)).catch(() => copyFile(binaries.serverPath, join(work, RPC_SERVER_FILE)));
        await writeFile(join(work, SERVER_DIR_MARKER), '');
        await rename(work, dir).catch(async (error: NodeJS.ErrnoException) => {
            // another process set it up first
            if (!(await exists(join(dir, SERVER_DIR_MARKER))))
                throw error;
        });
        return files;
    } finally {
        await rm(work, {recursive: true, force: true});
    }
}
