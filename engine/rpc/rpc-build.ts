/**
 * The llama.cpp RPC server and backend, built once from the llama.cpp source node-llama-cpp ships
 * (docs/architecture.md, "Sharding"). What the build needs is in rpc-toolchain.ts, its lock in rpc-build-lock.ts,
 * the directory a session runs the server from in rpc-server-dir.ts.
 *
 * Layout under `dir`: `llama.cpp-<release>/`, what the build produced (`ggml-rpc-server`, `libggml-rpc.so`, and the
 * server's own `libggml.so.0`, `libggml-base.so.0` and a single `libggml-cpu.so`), linked with `$ORIGIN` so it runs
 * from there, plus `build.json`. Another release builds beside it.
 */
import {spawn} from 'node:child_process';
import {randomBytes} from 'node:crypto';
import {copyFile, mkdir, readdir, readFile, readlink, rename, rm, stat, symlink, writeFile} from 'node:fs/promises';
import {availableParallelism} from 'node:os';
import {basename, join} from 'node:path';
import {createInterface} from 'node:readline';
import {llamaCppSource} from './llama-cpp-source.js';
import {withBuildLock} from './rpc-build-lock.js';
import {detectRpcToolchain, RpcToolchainError} from './rpc-toolchain.js';
import {sharedRun} from '../../core/shared-run.js';

export const RPC_SERVER_FILE = 'ggml-rpc-server';
export const RPC_LIBRARY_FILE = 'libggml-rpc.so';
const MANIFEST_FILE = 'build.json';

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

/** Progress lines at most this often, and only when the percentage moved. */
const PROGRESS_INTERVAL_MS = 2_000;
/** Lines of build output quoted in an error. */
const ERROR_TAIL_LINES = 25;

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

function releaseDirName(release: string) {
    return `llama.cpp-${release.replace(/[^\w.-]/g, '_')}`;
}

/** Whether `path` exists (rpc-server-dir.ts asks too). */
export async function exists(path: string) {
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
 * (rpc-build-lock.ts) says who builds, and the result appears by an atomic rename. Rejects with `RpcToolchainError`
 * when cmake, a compiler, make/ninja or git is missing.
 */
export function ensureRpcBinaries(options: EnsureRpcBinariesOptions): Promise<RpcBinaries> {
    return sharedRun(buildsInProcess, options.dir, () => ensureUnshared(options), {keep: false});
}

async function ensureUnshared(options: EnsureRpcBinariesOptions): Promise<RpcBinaries> {
    const found = await findRpcBinaries(options.dir);
    if (found !== undefined)
        return found;
    const {release} = await llamaCppSource();
    await mkdir(options.dir, {recursive: true});
    // whoever held the lock before may have finished
    return withBuildLock(join(options.dir, `${releaseDirName(release)}.build.lock`), async () => await findRpcBinaries(options.dir) ?? await build(options), {
        onWaiting: () => options.onProgress?.('waiting for another process building the llama.cpp RPC server'),
        onLost: (error) => options.onProgress?.(`the llama.cpp RPC server build lost its lock (${error.message}); building on`),
        signal: options.signal
    });
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
