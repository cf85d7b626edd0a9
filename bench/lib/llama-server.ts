import {spawn} from 'node:child_process';
import {once} from 'node:events';
import {existsSync} from 'node:fs';
import {fileURLToPath} from 'node:url';
import {waitFor} from '../../harness/cli-process.js';
import {freePort} from '../../harness/free-port.js';

/** Built by scripts/build-llama-server.sh from node-llama-cpp's bundled llama.cpp source. */
export const LLAMA_SERVER_PATH = fileURLToPath(new URL('../../.llama-build/bin/llama-server', import.meta.url));

export function llamaServerAvailable() {
    return existsSync(LLAMA_SERVER_PATH);
}

/**
 * llama-server with the same model, threads, slots and per-request context as the strongdoge node; `extraArgs` go
 * after those (a bench's own flags, such as `--jinja`).
 */
export async function startLlamaServer(modelPath: string, {threads, parallel, contextPerSlot, extraArgs = []}:
    {threads: number, parallel: number, contextPerSlot: number, extraArgs?: string[]}) {
    const port = await freePort();
    const child = spawn(LLAMA_SERVER_PATH, [
        '-m', modelPath, '--host', '127.0.0.1', '--port', String(port),
        '-t', String(threads), '-tb', String(threads), '-np', String(parallel), '-c', String(contextPerSlot * parallel),
        '-ngl', '0', '--no-webui', ...extraArgs
    ], {stdio: ['ignore', 'ignore', 'pipe']});
    let stderr = '';
    child.stderr.on('data', (chunk) => stderr = (stderr + chunk).slice(-4000));
    const origin = `http://127.0.0.1:${port}`;
    await waitFor(async () => {
        if (child.exitCode !== null)
            throw new Error(`llama-server exited: ${stderr}`);
        return (await fetch(`${origin}/health`)).status === 200;
    }, 60_000, 100);
    return {
        baseUrl: `${origin}/v1`,
        /** The end of its log, to explain a crash. */
        logTail: () => stderr.slice(-1500),
        exitCode: () => child.exitCode ?? child.signalCode,
        async stop() {
            if (child.exitCode !== null || child.signalCode !== null)
                return;
            const exited = once(child, 'exit');
            child.kill('SIGTERM');
            await exited;
        }
    };
}
