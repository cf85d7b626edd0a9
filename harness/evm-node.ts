import {type ChildProcess, spawn} from 'node:child_process';
import {once} from 'node:events';
import {mkdtemp, rm, writeFile} from 'node:fs/promises';
import {createRequire} from 'node:module';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import {type JsonRpcProvider, Wallet} from 'ethers';
import {chainProvider} from '../ledger/anchor/chain.js';
import {freePort} from './free-port.js';

/** Dogechain's chain id, so tests see what `ledger` will see in production. */
export const DOGECHAIN_CHAIN_ID = 2000;
const HARDHAT_CLI = createRequire(import.meta.url).resolve('hardhat/internal/cli/cli.js');
const READY_TIMEOUT_MS = 60_000;
const READY_POLL_MS = 100;
const STOP_TIMEOUT_MS = 10_000;
/** Enough of the node's output to explain a failed start, without keeping its per-request log forever. */
const OUTPUT_TAIL_CHARS = 10_000;
/**
 * The first accounts of Hardhat's default mnemonic ("test test … junk"), each funded with 10000 ETH:
 * publicly known keys, the same ones `hardhat node` prints on startup.
 */
const FUNDED_KEYS = [
    '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80',
    '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d',
    '0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a'
];

export interface EvmNode {
    /** http://127.0.0.1:PORT, the JSON-RPC endpoint. */
    url: string,
    chainId: number,
    /** Private keys of funded accounts (0x hex). */
    accounts: string[],
    /** The current `hardhat node` process (a new one after `restart`). */
    process: ChildProcess,
    /** SIGTERM (SIGKILL if it lingers), wait for exit, remove the temp dir. */
    stop(): Promise<void>,
    /** SIGSTOP: the port stays open but nothing answers, like a hung RPC endpoint. */
    pause(): void,
    /** SIGCONT after `pause`. */
    resume(): void,
    /** A fresh node on the same port: Hardhat keeps its chain in memory only, so the chain starts over. */
    restart(): Promise<void>,
    /** One JSON-RPC call, e.g. Hardhat's `evm_snapshot`, `evm_revert`, `hardhat_mine`, `evm_increaseTime`; throws on an error answer. */
    send(method: string, params?: unknown[]): Promise<unknown>,
    /** Mines `blocks` empty blocks at once. */
    mine(blocks: number): Promise<void>,
    /** A new wallet holding `doge` (defaults to 1,000), set by Hardhat's `hardhat_setBalance`. */
    fundedWallet(doge?: bigint): Promise<Wallet>,
    /** Reads the chain through a provider of its own, destroyed after. */
    onChain<T>(read: (provider: JsonRpcProvider) => Promise<T>): Promise<T>
}

/**
 * Starts Hardhat 2's `hardhat node`, a real EVM JSON-RPC server, on a free loopback port and waits until it
 * answers `eth_chainId`. It runs from a temp dir holding only a tiny config, so nothing is compiled or downloaded.
 */
export async function startEvmNode({chainId = DOGECHAIN_CHAIN_ID}: {chainId?: number} = {}): Promise<EvmNode> {
    const dir = await mkdtemp(join(tmpdir(), 'strongdoge-evm-'));
    await writeFile(join(dir, 'hardhat.config.cjs'), `module.exports = {networks: {hardhat: {chainId: ${chainId}}}};\n`);
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    let child = await launch(dir, port, url, chainId);
    return {
        url,
        chainId,
        accounts: [...FUNDED_KEYS],
        get process() {
            return child;
        },
        async stop() {
            await terminate(child);
            await rm(dir, {recursive: true, force: true});
        },
        pause() {
            child.kill('SIGSTOP');
        },
        resume() {
            child.kill('SIGCONT');
        },
        async restart() {
            await terminate(child);
            child = await launch(dir, port, url, chainId);
        },
        send: (method, params = []) => rpcCall(url, method, params),
        async mine(blocks) {
            await rpcCall(url, 'hardhat_mine', [`0x${blocks.toString(16)}`]);
        },
        async fundedWallet(doge = 1000n) {
            const wallet = new Wallet(Wallet.createRandom().privateKey);
            await rpcCall(url, 'hardhat_setBalance', [wallet.address, `0x${(doge * 10n ** 18n).toString(16)}`]);
            return wallet;
        },
        async onChain(read) {
            const provider = chainProvider({rpcUrl: url, chainId});
            try {
                return await read(provider);
            } finally {
                provider.destroy();
            }
        }
    };
}

async function rpcCall(url: string, method: string, params: unknown[]) {
    const response = await fetch(url, {
        method: 'POST',
        headers: {'content-type': 'application/json'},
        body: JSON.stringify({jsonrpc: '2.0', id: 1, method, params})
    });
    const answer = await response.json() as {result?: unknown, error?: {message: string}};
    if (answer.error !== undefined)
        throw new Error(`${method}: ${answer.error.message}`);
    return answer.result;
}

async function launch(dir: string, port: number, url: string, chainId: number) {
    const child = spawn(process.execPath, [HARDHAT_CLI, 'node', '--hostname', '127.0.0.1', '--port', String(port)], {
        cwd: dir,
        env: {
            ...process.env,
            // Hardhat refuses to run from a dir whose node_modules lacks it; this temp dir has none.
            HARDHAT_EXPERIMENTAL_ALLOW_NON_LOCAL_INSTALLATION: 'true',
            // No telemetry prompt or analytics, whatever the terminal.
            HARDHAT_DISABLE_TELEMETRY_PROMPT: 'true',
            CI: 'true'
        },
        stdio: ['ignore', 'pipe', 'pipe']
    });
    // Always drained: the node logs every RPC call, and a full pipe would stall it.
    let output = '';
    const keep = (chunk: Buffer) => output = (output + chunk).slice(-OUTPUT_TAIL_CHARS);
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (Date.now() < deadline) {
        if (child.exitCode !== null || child.signalCode !== null)
            throw new Error(`hardhat node exited (${child.exitCode ?? child.signalCode}): ${output}`);
        const answered = await rpcChainId(url);
        if (answered === chainId)
            return child;
        if (answered !== undefined) {
            await terminate(child);
            throw new Error(`hardhat node answered chain id ${answered}, expected ${chainId}`);
        }
        await sleep(READY_POLL_MS);
    }
    await terminate(child);
    throw new Error(`hardhat node did not answer on ${url} within ${READY_TIMEOUT_MS} ms: ${output}`);
}

/** The chain id the node at `url` reports, or undefined while it does not answer yet. */
async function rpcChainId(url: string) {
    try {
        const response = await fetch(url, {
            method: 'POST',
            headers: {'content-type': 'application/json'},
            body: JSON.stringify({jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: []}),
            signal: AbortSignal.timeout(READY_POLL_MS * 10)
        });
        const {result} = await response.json() as {result?: string};
        return result === undefined ? undefined : Number(result);
    } catch {
        return undefined;
    }
}

async function terminate(child: ChildProcess) {
    if (child.exitCode !== null || child.signalCode !== null)
        return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    // A paused (SIGSTOPped) process only acts on SIGTERM once continued.
    child.kill('SIGCONT');
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
}
