import {spawn, type ChildProcess, type SpawnOptions} from 'node:child_process';
import {once} from 'node:events';
import {createInterface} from 'node:readline';
import {setTimeout as sleep} from 'node:timers/promises';
import {fileURLToPath} from 'node:url';
import {TEST_RPC_DIR} from './rpc-binaries.js';

/** The built CLI, as users run it (`npm test` builds first). */
export const CLI_PATH = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));

/**
 * A `launch` for `startDaemon` that runs this checkout's sources (through tsx) instead of dist/: for tests whose
 * daemons must run the code as it is, without a build first.
 */
export function launchFromSource(command: string, args: string[], options: SpawnOptions): ChildProcess {
    return spawn(command, ['--import=tsx', fileURLToPath(new URL('../cli/main.ts', import.meta.url)), ...args.slice(1)], options);
}

export interface CliResult {
    code: number | null,
    stdout: string,
    stderr: string
}

/** Runs the CLI to completion. */
export async function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
    const child = spawn(process.execPath, [CLI_PATH, ...args], {env: {...process.env, ...env}, stdio: ['ignore', 'pipe', 'pipe']});
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => stdout += chunk);
    child.stderr!.on('data', (chunk) => stderr += chunk);
    const [code] = await once(child, 'exit') as [number | null];
    return {code, stdout, stderr};
}

export interface DaemonHandle {
    process: ChildProcess,
    /** http://127.0.0.1:PORT */
    origin: string,
    /** origin + /v1, for OpenAI clients */
    baseUrl: string,
    /** Parsed JSON log lines so far. */
    logs: Record<string, unknown>[],
    stop(signal?: NodeJS.Signals): Promise<number | null>
}

/**
 * Starts `strongdoge start --daemon --port 0` and waits until its API answers /health with 200.
 * The port is read from the daemon's own "listening" log line. Without `--bootstrap` (a loopback testnet)
 * the daemon runs `--offline`: tests never reach the public DHT.
 */
export interface StartDaemonOptions {
    env?: NodeJS.ProcessEnv,
    readyTimeoutMs?: number,
    /** Starts the process; defaults to node's spawn (a network lab runs it inside a namespace). */
    launch?: (command: string, args: string[], options: SpawnOptions) => ChildProcess,
    /** Turns the origin the daemon logged into one this process can reach; defaults to itself. */
    reach?: (origin: string) => Promise<string>
}

export async function startDaemon(args: string[], {env = {}, readyTimeoutMs = 60_000, launch = spawn, reach = async (origin) => origin}: StartDaemonOptions = {}): Promise<DaemonHandle> {
    const network = args.includes('--bootstrap') ? [] : ['--offline'];
    const child = launch(process.execPath, [CLI_PATH, 'start', '--daemon', '--port', '0', ...network, ...args], {
        // Every daemon that hosts or coordinates layers shares one build of the RPC server (about a minute).
        env: {STRONGDOGE_RPC_DIR: TEST_RPC_DIR, ...process.env, ...env},
        stdio: ['ignore', 'pipe', 'pipe']
    });
    const logs: Record<string, unknown>[] = [];
    let stderr = '';
    child.stderr!.on('data', (chunk) => stderr += chunk);
    const logged = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`daemon did not start listening; stderr: ${stderr}`)), readyTimeoutMs);
        createInterface({input: child.stdout!}).on('line', (line) => {
            const record = JSON.parse(line) as Record<string, unknown>;
            logs.push(record);
            if (typeof record.url === 'string') {
                clearTimeout(timer);
                resolve(record.url.replace(/\/v1$/, ''));
            }
        });
        child.once('exit', (code) => {
            clearTimeout(timer);
            reject(new Error(`daemon exited with ${code}; stderr: ${stderr}; logs: ${JSON.stringify(logs)}`));
        });
    });
    const origin = await reach(logged);
    await waitFor(async () => (await fetch(`${origin}/health`)).status === 200, readyTimeoutMs);
    return {
        process: child,
        origin,
        baseUrl: `${origin}/v1`,
        logs,
        async stop(signal: NodeJS.Signals = 'SIGTERM') {
            if (child.exitCode !== null || child.signalCode !== null)
                return child.exitCode;
            const exited = once(child, 'exit') as Promise<[number | null]>;
            child.kill(signal);
            return (await exited)[0];
        }
    };
}

export async function waitFor(condition: () => Promise<boolean> | boolean, timeoutMs = 30_000, intervalMs = 50) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        try {
            if (await condition())
                return;
        } catch {
            // not yet
        }
        if (Date.now() > deadline)
            throw new Error(`condition not met within ${timeoutMs} ms`);
        await sleep(intervalMs);
    }
}
