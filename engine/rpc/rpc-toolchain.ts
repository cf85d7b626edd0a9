/**
 * What building the llama.cpp RPC server needs on this machine (docs/architecture.md, "Sharding": cmake, a C and
 * C++ compiler, make or ninja, git), found on `PATH`; `strongdoge doctor` reports it.
 */
import {execFile} from 'node:child_process';
import {constants} from 'node:fs';
import {access} from 'node:fs/promises';
import {delimiter, join} from 'node:path';
import {promisify} from 'node:util';

const execFileAsync = promisify(execFile);

const VERSION_TIMEOUT_MS = 5_000;

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
