/**
 * llama.cpp built for this machine: node-llama-cpp's own source build of the release it ships, with `GGML_NATIVE`
 * on, which its `getLlama` then prefers to its prebuilt binaries; faster or slower by CPU and weights
 * (docs/architecture.md, "Engine").
 */
import {spawn} from 'node:child_process';
import {readFile} from 'node:fs/promises';
import {join} from 'node:path';
import type {Llama} from 'node-llama-cpp';
import type {DeviceInfo} from '../core/inference-types.js';
import {nodeLlamaCppDir} from './rpc/llama-cpp-source.js';
import {detectRpcToolchain} from './rpc/rpc-toolchain.js';

export type EngineBuildType = DeviceInfo['build'];

/** Which binaries `llama` runs: node-llama-cpp's prebuilt ones, or a build for this machine. */
export function engineBuildOf(llama: Llama): EngineBuildType {
    return llama.buildType === 'localBuild' ? 'local' : 'prebuilt';
}

export class EngineBuildError extends Error {
    constructor(message: string, readonly code: 'TOOLCHAIN_MISSING' | 'BUILD_FAILED' | 'NOT_LOADED') {
        super(message);
    }
}

export interface EngineBuildOptions {
    /** What to build for: 'auto' lets node-llama-cpp pick the GPU backend it finds (CUDA, Vulkan, Metal), else the CPU. */
    gpu: 'auto' | false,
    /** Where node-llama-cpp's build output goes, a line at a time; defaults to this process's stdout and stderr. */
    output?: 'inherit' | ((line: string) => void),
    /** Environment of the build (its PATH finds the tools); defaults to `process.env`. */
    env?: NodeJS.ProcessEnv
}

export interface EngineBuildReport {
    build: EngineBuildType,
    /** The GPU backend the built engine runs, or false for the CPU. */
    gpu: string | false,
    llamaCppRelease: string
}

function nodeLlamaCppCli() {
    return join(nodeLlamaCppDir(), 'dist', 'cli', 'cli.js');
}

/** Runs node-llama-cpp's CLI with `args`; rejects with the end of its output when it fails. */
function runNodeLlamaCpp(args: string[], {output = 'inherit', env = process.env}: Pick<EngineBuildOptions, 'output' | 'env'>) {
    return new Promise<void>((resolve, reject) => {
        const child = spawn(process.execPath, [nodeLlamaCppCli(), ...args], {env, stdio: ['ignore', output === 'inherit' ? 'inherit' : 'pipe', output === 'inherit' ? 'inherit' : 'pipe']});
        const tail: string[] = [];
        const collect = (chunk: Buffer) => {
            for (const line of chunk.toString().split('\n').filter((text) => text.trim() !== '')) {
                tail.push(line);
                tail.splice(0, tail.length - 20);
                if (typeof output === 'function')
                    output(line);
            }
        };
        child.stdout?.on('data', collect);
        child.stderr?.on('data', collect);
        child.once('error', reject);
        child.once('exit', (code, signal) => code === 0 ? resolve() : reject(new EngineBuildError(
            `node-llama-cpp ${args.slice(0, 2).join(' ')} failed (${signal ?? `exit code ${code}`})${tail.length > 0 ? `:\n${tail.join('\n')}` : ''}`,
            'BUILD_FAILED')));
    });
}

/** What the engine loads here for `gpu` (what `getLlama` picks with `build: 'never'`, as the engine calls it). */
export async function engineBuildReport(gpu: 'auto' | false): Promise<EngineBuildReport> {
    const {getLlama, LlamaLogLevel} = await import('node-llama-cpp');
    const llama = await getLlama({gpu, build: 'never', logLevel: LlamaLogLevel.error});
    try {
        return {build: engineBuildOf(llama), gpu: llama.gpu, llamaCppRelease: llama.llamaCppRelease.release};
    } finally {
        await llama.dispose();
    }
}

/**
 * Builds llama.cpp for this machine (about 6 minutes on 2 cores) and checks that the engine now loads that build.
 * Rejects with `EngineBuildError`: `TOOLCHAIN_MISSING` before anything is touched, `BUILD_FAILED` with the build's
 * last lines (the prebuilt binaries stay in use), `NOT_LOADED` if the engine would still load the prebuilt ones.
 */
export async function buildEngine(options: EngineBuildOptions): Promise<EngineBuildReport> {
    const toolchain = await detectRpcToolchain(options.env ? {env: options.env} : {});
    if (toolchain.missing.length > 0)
        throw new EngineBuildError(`cannot build llama.cpp: ${toolchain.missing.join(', ')} not found`, 'TOOLCHAIN_MISSING');
    const {tag} = JSON.parse(await readFile(join(nodeLlamaCppDir(), 'llama', 'llama.cpp.info.json'), 'utf8')) as {tag: string};
    // `source download` of the release node-llama-cpp ships unpacks its bundled source (no network), then builds it.
    await runNodeLlamaCpp(['source', 'download', '--release', tag, '--gpu', options.gpu === false ? 'false' : 'auto', '--noUsageExample'], options);
    const report = await engineBuildReport(options.gpu);
    if (report.build !== 'local')
        throw new EngineBuildError('the build finished, but node-llama-cpp still loads its prebuilt binaries (is the build for another GPU backend?)', 'NOT_LOADED');
    return report;
}

/** Back to node-llama-cpp's prebuilt binaries: removes every local build (the unpacked source stays for the next). */
export function clearEngineBuilds(options: Pick<EngineBuildOptions, 'output' | 'env'> = {}) {
    return runNodeLlamaCpp(['source', 'clear', 'builds'], options);
}
