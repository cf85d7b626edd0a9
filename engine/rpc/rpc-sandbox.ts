/**
 * The bubblewrap sandbox of every `rpc-server` a node runs for peers: what it shows the server, and why
 * (docs/architecture.md, "Sharding"). Beyond the docs: libraries are bound at their own paths (where the server's
 * symlinks lead), a GPU server also gets /sys, its own /proc is there because the loader finds `$ORIGIN` through
 * /proc/self/exe, and its environment is `LLAMA_CACHE` alone (and which GPUs to use).
 */
import {execFile, spawn} from 'node:child_process';
import {createHash, randomBytes} from 'node:crypto';
import {constants} from 'node:fs';
import {access, lstat, mkdir, readdir, readFile, readlink, rename, rm} from 'node:fs/promises';
import {constants as osConstants} from 'node:os';
import {dirname, join, normalize, resolve} from 'node:path';
import {fileURLToPath} from 'node:url';
import {promisify} from 'node:util';
import type {GpuBackend} from '../../core/inference-types.js';
import {findExecutable} from './rpc-toolchain.js';
import {sharedRun} from '../../core/shared-run.js';

const execFileAsync = promisify(execFile);

/** The port the server listens on inside its sandbox, on a loopback of its own: no other process can take it. */
export const SANDBOX_SERVER_PORT = 50052;
/** The uid and gid inside (nobody): the only ones mapped, onto the node's own user outside. */
export const SANDBOX_UID = 65534;
/** What the launcher prints on stdout once its socket listens. */
export const SANDBOX_READY_LINE = 'ready';
/** Environment passed into the sandbox where the node has it: which GPUs the server may use. */
export const SANDBOX_PASSED_ENV = ['CUDA_VISIBLE_DEVICES', 'GGML_VK_VISIBLE_DEVICES'];

const LAUNCHER_SOURCE = fileURLToPath(new URL('./sandbox/rpc-launcher.c', import.meta.url));
const LAUNCHER_FLAGS = ['-O2', '-Wall', '-Wextra'];
const LAUNCHER_FILE = 'rpc-launcher';
const COMPILE_TIMEOUT_MS = 60_000;
const PROBE_TIMEOUT_MS = 10_000;
const PROBE_LINE = 'sandbox ok';
/** The dynamic loader's cache: where it finds libraries outside its default directories. */
const LOADER_CACHE = '/etc/ld.so.cache';
/** Longest path of a Unix socket (`sun_path` holds 108 bytes with the terminating NUL). */
const MAX_SOCKET_PATH = 107;
/** NVIDIA's device nodes (CUDA and NVIDIA's Vulkan driver). */
const NVIDIA_DEVICE = /^nvidia(\d+|ctl|-uvm|-uvm-tools|-modeset|-caps)$/;
/** The GPU driver's own libraries, which CUDA and the Vulkan driver load by name (dlopen) from the loader's cache. */
const DRIVER_LIBRARY = /^lib(cuda|nvidia-[\w-]+|GLX_nvidia|EGL_nvidia)\.so/;
/** Where the Vulkan loader finds its drivers' manifests (`icd.d/*.json`). */
const VULKAN_MANIFEST_DIRS = ['/usr/share/vulkan', '/etc/vulkan', '/usr/local/share/vulkan'];

export type RpcSandboxErrorCode = 'BWRAP_MISSING' | 'BWRAP_TOO_OLD' | 'USERNS_REFUSED' | 'COMPILER_MISSING' | 'LAUNCHER_BUILD_FAILED' | 'SANDBOX_FAILED';

export class RpcSandboxError extends Error {
    constructor(message: string, readonly code: RpcSandboxErrorCode) {
        super(message);
        this.name = 'RpcSandboxError';
    }
}

export interface SandboxLauncherOptions {
    /** Where launchers are compiled (the node passes `<data dir>/rpc`): one `sandbox-<hash>/` per source and flags. */
    dir: string,
    /** Environment of the compiler (its PATH finds `CC`, else cc, gcc or clang); defaults to `process.env`. */
    env?: NodeJS.ProcessEnv
}


const launchersInProcess = new Map<string, Promise<string>>();

/**
 * The launcher's path, compiled from its source the first time (a fraction of a second) with the C compiler the
 * RPC build already needs. It appears by a rename, so concurrent callers in several processes are safe. Rejects
 * with `RpcSandboxError` (`COMPILER_MISSING`, `LAUNCHER_BUILD_FAILED`).
 */
export function ensureSandboxLauncher(options: SandboxLauncherOptions): Promise<string> {
    return sharedRun(launchersInProcess, options.dir, () => compileLauncher(options));
}

function isExecutable(path: string) {
    return access(path, constants.X_OK).then(() => true, () => false);
}

async function compileLauncher({dir, env = process.env}: SandboxLauncherOptions) {
    const source = await readFile(LAUNCHER_SOURCE);
    const hash = createHash('sha256').update(source).update(LAUNCHER_FLAGS.join(' ')).digest('hex').slice(0, 12);
    const path = join(dir, `sandbox-${hash}`, LAUNCHER_FILE);
    if (await isExecutable(path))
        return path;
    const compiler = await findExecutable(env.CC ? [env.CC] : ['cc', 'gcc', 'clang'], env);
    if (compiler === undefined)
        throw new RpcSandboxError('no C compiler (cc, gcc or clang) to build the sandbox launcher: install one (apt install gcc)', 'COMPILER_MISSING');
    await mkdir(dirname(path), {recursive: true});
    const temporary = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    try {
        await execFileAsync(compiler, [...LAUNCHER_FLAGS, '-o', temporary, LAUNCHER_SOURCE], {env, timeout: COMPILE_TIMEOUT_MS});
        await rename(temporary, path);
        return path;
    } catch (error) {
        const said = (error as {stderr?: string}).stderr?.trim() || (error as Error).message;
        throw new RpcSandboxError(`could not build the sandbox launcher with ${compiler}: ${said}`, 'LAUNCHER_BUILD_FAILED');
    } finally {
        await rm(temporary, {force: true});
    }
}

/** Absolute paths, without those inside another one of them (a bound directory shows its contents), sorted. */
function compactPaths(paths: string[]) {
    const sorted = [...new Set(paths.map((path) => normalize(path)))].sort();
    return sorted.filter((path) => !sorted.some((other) => path.startsWith(other + '/')));
}

/**
 * The files a program or library loads as the dynamic loader finds them (`ldd`), and the loader itself: the paths
 * it opens, which may be symlinks (bwrap binds what they lead to at that path). Libraries not found are left out:
 * the program fails to load them in the sandbox as it would outside.
 */
export async function sharedLibraries(files: string[]) {
    if (files.length === 0)
        return [];
    // ldd exits 1 when one of the files is not dynamic; what it printed for the others still holds
    const stdout = await execFileAsync('ldd', files, {maxBuffer: 16 * 1024 * 1024}).then((result) => result.stdout, (error: NodeJS.ErrnoException & {stdout?: string}) => {
        if (error.code === 'ENOENT')
            throw new Error('ldd is not installed: it finds the libraries the rpc-server sandbox must show (it comes with the C library, e.g. libc-bin)');
        return error.stdout ?? '';
    });
    const paths = new Set<string>();
    for (const line of stdout.split('\n')) {
        const match = /=>\s+(\/\S+)\s+\(0x/.exec(line) ?? /^\s+(\/\S+)\s+\(0x/.exec(line);
        if (match !== null)
            paths.add(normalize(match[1]!));
    }
    return [...paths];
}

/** Each path a symlink leads through to its file (a chain of links), resolved as the kernel would. */
async function symlinkTargets(path: string) {
    const targets: string[] = [];
    for (let hops = 0; hops < 40; hops++) {
        const info = await lstat(path).catch(() => undefined);
        if (!info?.isSymbolicLink())
            break;
        path = resolve(dirname(path), await readlink(path));
        targets.push(path);
    }
    return targets;
}

const readOnlyPathsInProcess = new Map<string, Promise<string[]>>();

/**
 * What the sandbox shows read-only to run the launcher and, when given, the server: the server's directory, where
 * each of its symlinks leads (node-llama-cpp's ggml libraries at their own paths), and every shared library the
 * launcher, the server and the libraries of its directory load (ggml loads its backends from there at run time),
 * with the loader's cache. Resolved once per process for each server and launcher.
 */
export function sandboxReadOnlyPaths({launcherPath, serverPath}: {launcherPath: string, serverPath?: string}) {
    return sharedRun(readOnlyPathsInProcess, JSON.stringify([launcherPath, serverPath]), () => resolveReadOnlyPaths(launcherPath, serverPath));
}

async function resolveReadOnlyPaths(launcherPath: string, serverPath: string | undefined) {
    const paths = [launcherPath];
    const loaded = [launcherPath];
    if (serverPath !== undefined) {
        const serverDir = dirname(serverPath);
        paths.push(serverDir);
        loaded.push(serverPath);
        for (const name of await readdir(serverDir)) {
            paths.push(...await symlinkTargets(join(serverDir, name)));
            if (/\.so(\.\d+)*$/.test(name))
                loaded.push(join(serverDir, name));
        }
    }
    paths.push(...await sharedLibraries(loaded));
    if (await access(LOADER_CACHE).then(() => true, () => false))
        paths.push(LOADER_CACHE);
    return compactPaths(paths);
}

export interface SandboxGpuAccess {
    /** Device nodes bound with device access (`/dev/nvidia0`, `/dev/nvidiactl`, `/dev/dri`, ...). */
    devices: string[],
    /** Shown read-only: /sys, the driver's libraries and what they load, Vulkan's driver manifests. */
    readOnlyPaths: string[]
}

/** The loader's cache as name → path (`ldconfig -p`); empty where there is none. */
async function loaderCacheEntries() {
    const ldconfig = await findExecutable(['ldconfig'], {PATH: '/usr/sbin:/sbin:/usr/bin:/bin'}) ?? 'ldconfig';
    const stdout = await execFileAsync(ldconfig, ['-p']).then((result) => result.stdout, () => '');
    return [...stdout.matchAll(/^\s+(\S+) \(.*\) => (\/\S+)$/gm)].map(([, name, path]) => ({name: name!, path: path!}));
}

/** The Vulkan drivers' manifest directories that exist, and the libraries their manifests name. */
async function vulkanDrivers(cache: {name: string, path: string}[]) {
    const dirs: string[] = [];
    const libraries: string[] = [];
    for (const dir of VULKAN_MANIFEST_DIRS) {
        const manifests = await readdir(join(dir, 'icd.d')).catch(() => undefined);
        if (manifests === undefined)
            continue;
        dirs.push(dir);
        for (const name of manifests.filter((file) => file.endsWith('.json'))) {
            const manifest = await readFile(join(dir, 'icd.d', name), 'utf8').then((text) => JSON.parse(text) as {ICD?: {library_path?: string}}, () => undefined);
            const library = manifest?.ICD?.library_path;
            // a bare name is found as the loader finds it (a relative path is not supported: left out)
            const path = library?.startsWith('/') ? library : cache.find((entry) => entry.name === library)?.path;
            if (path !== undefined)
                libraries.push(path);
        }
    }
    return {dirs, libraries};
}

/**
 * What a server on `gpu` needs besides its own files: the device nodes that exist under `devDir` (NVIDIA's; and
 * /dev/dri for Vulkan), /sys (drivers enumerate devices there), the NVIDIA driver libraries in the loader's cache,
 * and for Vulkan its driver manifests and the libraries they name, each with what it loads. Nothing for the CPU.
 */
export async function sandboxGpuAccess(gpu: GpuBackend, {devDir = '/dev'}: {devDir?: string} = {}): Promise<SandboxGpuAccess> {
    if (gpu === false || gpu === 'metal')
        return {devices: [], readOnlyPaths: []};
    const devices = (await readdir(devDir).catch(() => []))
        .filter((name) => NVIDIA_DEVICE.test(name) || (gpu === 'vulkan' && name === 'dri'))
        .map((name) => join(devDir, name));
    const cache = await loaderCacheEntries();
    const drivers = cache.filter((entry) => DRIVER_LIBRARY.test(entry.name)).map((entry) => entry.path);
    const vulkan = gpu === 'vulkan' ? await vulkanDrivers(cache) : {dirs: [], libraries: []};
    const loaded = await sharedLibraries([...drivers, ...vulkan.libraries]);
    return {devices: devices.sort(), readOnlyPaths: compactPaths(['/sys', ...drivers, ...vulkan.dirs, ...vulkan.libraries, ...loaded])};
}

export interface SandboxSpec {
    /** The launcher: the sandbox's first process. */
    launcherPath: string,
    /**
     * What the launcher runs: the server (its directory is the working directory: ggml looks for backends there),
     * its arguments (listening on 127.0.0.1:`SANDBOX_SERVER_PORT`), and the Unix socket it is reached through,
     * whose directory is writable. Undefined to probe the sandbox (`rpc-launcher --probe`).
     */
    server?: {path: string, args: string[], socketPath: string},
    /** Shown read-only, each at its own path (`sandboxReadOnlyPaths`). */
    readOnlyPaths: string[],
    /** Writable, each at its own path, besides the socket's directory; defaults to none. */
    writablePaths?: string[],
    /** Device nodes and driver files of a GPU backend (`sandboxGpuAccess`); defaults to none. */
    gpu?: SandboxGpuAccess,
    /** The whole environment inside (`LLAMA_CACHE`, ...); defaults to none. */
    env?: Record<string, string>
}

/** bubblewrap's arguments for a sandbox (see the top of this file); pure. */
export function sandboxArgs(spec: SandboxSpec): string[] {
    const args = [
        // every namespace bwrap knows: the sandbox sees its own processes and its own loopback, and may not
        // make further user namespaces; it runs as nobody, without capabilities, in a session of its own, and
        // dies with the node
        '--unshare-all', '--unshare-user', '--disable-userns', '--uid', String(SANDBOX_UID), '--gid', String(SANDBOX_UID),
        '--cap-drop', 'ALL', '--new-session', '--die-with-parent', '--clearenv'
    ];
    for (const [name, value] of Object.entries(spec.env ?? {}).sort(([a], [b]) => a.localeCompare(b)))
        args.push('--setenv', name, value);
    args.push('--proc', '/proc', '--dev', '/dev');
    for (const path of compactPaths([...spec.readOnlyPaths, ...(spec.gpu?.readOnlyPaths ?? []), spec.launcherPath]))
        args.push('--ro-bind', path, path);
    for (const device of spec.gpu?.devices ?? [])
        args.push('--dev-bind', device, device);
    // /dev is a tmpfs of bwrap's: read-only too (its device nodes stay usable)
    args.push('--remount-ro', '/dev');
    const socketDir = spec.server === undefined ? [] : [dirname(spec.server.socketPath)];
    for (const path of [...(spec.writablePaths ?? []), ...socketDir])
        args.push('--bind', path, path);
    // the root bwrap builds the sandbox on (a tmpfs) becomes read-only: nothing to write outside the binds above
    args.push('--remount-ro', '/');
    if (spec.server === undefined)
        return [...args, '--', spec.launcherPath, '--probe'];
    if (spec.server.socketPath.length > MAX_SOCKET_PATH)
        throw new Error(`the socket path ${spec.server.socketPath} is longer than ${MAX_SOCKET_PATH} bytes`);
    return [...args, '--chdir', dirname(spec.server.path), '--',
        spec.launcherPath, spec.server.socketPath, String(SANDBOX_SERVER_PORT), spec.server.path, ...spec.server.args];
}

/** The environment inside: the tensor cache's location when there is one, and the GPUs to use where set. */
export function sandboxEnv(cacheDir: string | undefined, env: NodeJS.ProcessEnv = process.env) {
    const inside: Record<string, string> = {};
    for (const name of SANDBOX_PASSED_ENV)
        if (env[name] !== undefined)
            inside[name] = env[name];
    if (cacheDir !== undefined)
        inside.LLAMA_CACHE = cacheDir;
    return inside;
}

/**
 * How the server in a sandbox ended, from what bwrap's exit says: the launcher's report line
 * (`rpc-server killed by signal 11 (SIGSEGV)`, `rpc-server exited with code 1`), else its exit code, 128+N
 * meaning signal N (also when the launcher itself was killed), else bwrap's own exit.
 */
export function sandboxedExit(code: number | null, signal: NodeJS.Signals | null, report: string | undefined): [number | null, NodeJS.Signals | null] {
    const signalNamed = (number: number) => (Object.entries(osConstants.signals) as [NodeJS.Signals, number][]).find(([, value]) => value === number)?.[0];
    const killed = report === undefined ? null : /^rpc-server killed by signal (\d+)/.exec(report);
    const exited = report === undefined ? null : /^rpc-server exited with code (\d+)/.exec(report);
    if (killed !== null)
        return [null, signalNamed(Number(killed[1])) ?? signal];
    if (exited !== null)
        return [Number(exited[1]), null];
    if (code !== null && code > 128 && signalNamed(code - 128) !== undefined)
        return [null, signalNamed(code - 128)!];
    return [code, signal];
}

export interface UserNamespaceSettings {
    /** `kernel.apparmor_restrict_unprivileged_userns` (Ubuntu 23.10 and later). */
    apparmorRestrict?: number,
    /** `kernel.unprivileged_userns_clone` (older Debian kernels). */
    unprivilegedClone?: number,
    /** `user.max_user_namespaces`. */
    maxUserNamespaces?: number
}

async function userNamespaceSettings(): Promise<UserNamespaceSettings> {
    const read = (path: string) => readFile(path, 'utf8').then((text) => Number(text.trim()), () => undefined);
    return {
        apparmorRestrict: await read('/proc/sys/kernel/apparmor_restrict_unprivileged_userns'),
        unprivilegedClone: await read('/proc/sys/kernel/unprivileged_userns_clone'),
        maxUserNamespaces: await read('/proc/sys/user/max_user_namespaces')
    };
}

/** Why bubblewrap could not start the probe, in one sentence a user can act on; pure. */
export function sandboxFailure(stderr: string, settings: UserNamespaceSettings): {code: RpcSandboxErrorCode, reason: string} {
    const said = stderr.trim().split('\n').at(-1)?.trim() || 'no message';
    if (/unknown option/i.test(stderr))
        return {code: 'BWRAP_TOO_OLD', reason: `this bubblewrap is too old for the sandbox (${said}): install bubblewrap 0.8 or later`};
    if (!/namespace|uid map|gid map|RTM_NEWADDR|unshare|make \/ slave|Operation not permitted/i.test(stderr))
        return {code: 'SANDBOX_FAILED', reason: `bubblewrap could not start a sandbox: ${said}`};
    const code = 'USERNS_REFUSED';
    if (settings.apparmorRestrict === 1)
        return {code, reason: `AppArmor does not let bubblewrap use user namespaces (kernel.apparmor_restrict_unprivileged_userns=1, as on Ubuntu 24.04): give bwrap an AppArmor profile that allows "userns" or set that sysctl to 0 (bwrap said: ${said})`};
    if (settings.unprivilegedClone === 0)
        return {code, reason: `unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone=0): set that sysctl to 1 (bwrap said: ${said})`};
    if (settings.maxUserNamespaces === 0)
        return {code, reason: `user namespaces are disabled (user.max_user_namespaces=0): set that sysctl above 0 (bwrap said: ${said})`};
    return {code, reason: `the kernel refused bubblewrap a user namespace: allow unprivileged user namespaces (bwrap said: ${said})`};
}

export type SandboxProbe =
    | {available: true, bwrapPath: string, launcherPath: string}
    | {available: false, code: RpcSandboxErrorCode, reason: string};

export interface ProbeSandboxOptions {
    /** Where the launcher is compiled (`ensureSandboxLauncher`'s `dir`). */
    launcherDir: string,
    /** bubblewrap; defaults to `bwrap` on the PATH of `env`. */
    bwrapPath?: string,
    /** Environment whose PATH finds bwrap and the C compiler; defaults to `process.env`. */
    env?: NodeJS.ProcessEnv
}

const probesInProcess = new Map<string, Promise<SandboxProbe>>();

/**
 * Whether rpc-servers can be sandboxed here: compiles the launcher and starts it in a sandbox as a server's (same
 * namespaces, uid, capabilities and mounts), where it checks that it has a loopback. When not, says why in one
 * sentence a user can act on. About 10 ms once the launcher is built; the result is kept for the process.
 */
export function probeSandbox(options: ProbeSandboxOptions): Promise<SandboxProbe> {
    const env = options.env ?? process.env;
    return sharedRun(probesInProcess, JSON.stringify([options.launcherDir, options.bwrapPath, env.PATH, env.CC]),
        () => probeUncached(options.launcherDir, options.bwrapPath, env));
}

async function probeUncached(launcherDir: string, bwrapPath: string | undefined, env: NodeJS.ProcessEnv): Promise<SandboxProbe> {
    const bwrap = bwrapPath ?? await findExecutable(['bwrap'], env);
    if (bwrap === undefined || !(await isExecutable(bwrap)))
        return {available: false, code: 'BWRAP_MISSING', reason: 'bubblewrap (bwrap) is not installed: install bubblewrap (apt install bubblewrap)'};
    let launcherPath: string;
    try {
        launcherPath = await ensureSandboxLauncher({dir: launcherDir, env});
    } catch (error) {
        if (error instanceof RpcSandboxError)
            return {available: false, code: error.code, reason: error.message};
        throw error;
    }
    let readOnlyPaths: string[];
    try {
        readOnlyPaths = await sandboxReadOnlyPaths({launcherPath});
    } catch (error) {
        return {available: false, code: 'SANDBOX_FAILED', reason: (error as Error).message};
    }
    const args = sandboxArgs({launcherPath, readOnlyPaths});
    const {code, stdout, stderr} = await new Promise<{code: number | null, stdout: string, stderr: string}>((done) => {
        const child = spawn(bwrap, args, {env: {}, stdio: ['ignore', 'pipe', 'pipe'], timeout: PROBE_TIMEOUT_MS});
        let out = '';
        let err = '';
        child.stdout.on('data', (chunk) => out += chunk);
        child.stderr.on('data', (chunk) => err += chunk);
        child.on('error', (error) => done({code: null, stdout: out, stderr: `${err}\n${error.message}`}));
        child.on('close', (exitCode) => done({code: exitCode, stdout: out, stderr: err}));
    });
    if (code === 0 && stdout.trim() === PROBE_LINE)
        return {available: true, bwrapPath: bwrap, launcherPath};
    return {available: false, ...sandboxFailure(stderr, await userNamespaceSettings())};
}
