/**
 * The directory a session runs the RPC server from (docs/architecture.md, "Sharding"):
 * `llama.cpp-<release>/server-<gpu>-<hash>/` beside the build. ggml with `GGML_BACKEND_DL` loads backends from the
 * executable's own directory and the working directory (`ggml_backend_load_all`), and `libggml-base.so.0` /
 * `libggml.so.0` there point at node-llama-cpp's files, so the server runs the one copy of ggml the engine runs.
 */
import {createHash, randomBytes} from 'node:crypto';
import {copyFile, link, mkdir, readdir, rename, rm, symlink, writeFile} from 'node:fs/promises';
import {dirname, join} from 'node:path';
import {fileURLToPath} from 'node:url';
import type {GpuBackend} from '../../core/inference-types.js';
import {exists, RPC_LIBRARY_FILE, RPC_SERVER_FILE, type RpcBinaries} from './rpc-build.js';

const SERVER_DIR_MARKER = '.complete';
/** node-llama-cpp's main ggml library: `libggml.so` or its release-named `libggml[.cuda].v0.4.0.so`. */
const GGML_LIBRARY = /^libggml(\.\w+)*\.so$/;

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
