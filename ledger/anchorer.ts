import {EventEmitter} from 'node:events';
import {mkdir, readFile, rename, writeFile} from 'node:fs/promises';
import {dirname} from 'node:path';
import {Contract, ContractFactory, FetchRequest, JsonRpcProvider, Network, Transaction, type Wallet} from 'ethers';
import type {ContributionLog} from './contribution-log.js';
import {contributionAnchorAbi, contributionAnchorBytecode} from './generated/contribution-anchor.js';
import {LedgerError} from './ledger-error.js';
import {LEDGER_RECORD_VERSION, type AnchorRecord} from './records.js';

/** How long one chain RPC call may take before the chain counts as unavailable. */
const RPC_TIMEOUT_MS = 15_000;
/** How long a sent anchoring transaction may take to be mined before the attempt is retried (the same transaction). */
const MINING_TIMEOUT_MS = 120_000;
/** How often a sent transaction is looked for on the chain. */
const RECEIPT_POLL_MS = 500;
/** Gas estimates are raised by this much: a transaction that runs out of gas still costs its fee. */
const GAS_MARGIN = 1.2;
/** Retries after a failed attempt: quickly at first, then at most every interval. */
const RETRY_INITIAL_MS = 15_000;

export interface ChainSettings {
    /** JSON-RPC endpoint. */
    rpcUrl: string,
    /** The chain's id: 2000 for Dogechain, checked before anything is sent. */
    chainId: number,
    /** How long one RPC call may take before the chain counts as unavailable; defaults to 15 s. */
    rpcTimeoutMs?: number
}

/** A JSON-RPC provider that never asks the chain for its id again, never caches, and gives up on a silent chain. */
export function chainProvider({rpcUrl, chainId, rpcTimeoutMs = RPC_TIMEOUT_MS}: ChainSettings) {
    const request = new FetchRequest(rpcUrl);
    request.timeout = rpcTimeoutMs;
    // ethers' result cache returns stale nonces against fast chains ("nonce too low"): off.
    return new JsonRpcProvider(request, Network.from(chainId), {staticNetwork: Network.from(chainId), cacheTimeout: -1});
}

/** Asks the chain for its id: the configured one, or a WRONG_CHAIN refusal before anything is signed. */
export async function checkChain(provider: JsonRpcProvider, expected: number) {
    let actual: bigint;
    try {
        actual = BigInt(await provider.send('eth_chainId', []) as string);
    } catch (error) {
        throw LedgerError.chainUnavailable(`the chain RPC does not answer: ${shortReason(error)}`);
    }
    if (actual !== BigInt(expected))
        throw LedgerError.wrongChain(`the chain RPC serves chain id ${actual}, not the configured ${expected}: nothing was sent`);
}

/** Deploys the anchoring contract with `wallet`; returns its address. */
export async function deployAnchorContract(settings: ChainSettings, wallet: Wallet) {
    const provider = chainProvider(settings);
    await checkChain(provider, settings.chainId);
    const factory = new ContractFactory(contributionAnchorAbi, contributionAnchorBytecode, wallet.connect(provider));
    try {
        const contract = await factory.deploy();
        const deployment = contract.deploymentTransaction();
        await contract.waitForDeployment();
        return {address: await contract.getAddress(), txHash: deployment?.hash ?? null};
    } catch (error) {
        throw LedgerError.chainUnavailable(`cannot deploy the anchoring contract: ${shortReason(error)}`);
    } finally {
        provider.destroy();
    }
}

/** One anchor as the chain holds it. */
export interface AnchorEvent {
    sender: string,
    core: string,
    logLength: number,
    treeHash: string,
    blockNumber: number,
    txHash: string
}

/** Every anchor of the log `coreKey` on the contract, oldest first. */
export async function readAnchorEvents(settings: ChainSettings & {contract: string}, coreKey: string): Promise<AnchorEvent[]> {
    const provider = chainProvider(settings);
    try {
        await checkChain(provider, settings.chainId);
        const contract = new Contract(settings.contract, contributionAnchorAbi, provider);
        const events = await contract.queryFilter(contract.filters.Anchored!(null, `0x${coreKey}`), 0);
        return events.flatMap((event) => 'args' in event ? [{
            sender: String(event.args[0]), core: String(event.args[1]).slice(2), logLength: Number(event.args[2]),
            treeHash: String(event.args[3]).slice(2), blockNumber: event.blockNumber, txHash: event.transactionHash
        }] : []);
    } catch (error) {
        throw error instanceof LedgerError ? error : LedgerError.chainUnavailable(`cannot read anchors: ${shortReason(error)}`);
    } finally {
        provider.destroy();
    }
}

export interface AnchorerOptions extends ChainSettings {
    log: ContributionLog,
    /** The wallet that pays for anchors. */
    wallet: Wallet,
    /** The anchoring contract's address. */
    contract: string,
    /** Where a sent transaction is remembered until it is mined, so a restart never sends a second one for it. */
    statePath: string,
    /** Most a transaction may pay per gas, in gwei. */
    maxFeeGwei: number,
    /** How often the log is anchored when it grew; defaults to an hour. */
    intervalMs?: number,
    /** How long a sent transaction may take to be mined before the attempt fails (and the same one is awaited again); defaults to 2 min. */
    miningTimeoutMs?: number
}

/** A transaction signed and (maybe) sent, not yet known to be mined. */
interface PendingAnchor {
    rawTx: string,
    txHash: string,
    logLength: number,
    treeHash: string
}

export type AnchorOutcome =
    | {status: 'anchored', record: AnchorRecord}
    | {status: 'up-to-date', logLength: number};

export interface AnchorerStatus {
    /** A transaction sent and awaited. */
    pending: {logLength: number, txHash: string} | null,
    lastAnchor: AnchorRecord | null,
    lastError: string | null,
    nextAttemptAt: string | null
}

/**
 * Anchors the contribution log on the chain: `anchor(core, logLength, treeHash)` on the contract, then an `anchor`
 * record in the log with the transaction and its block. Before a transaction is sent, its signed bytes are saved:
 * after a failure or a restart the same transaction is sent again (a chain accepts it once), so a length is never
 * anchored twice nor lost. Failures (chain down, fee too high, a revert) are retried with backoff.
 */
export class Anchorer extends EventEmitter<{anchored: [record: AnchorRecord], failed: [error: LedgerError]}> {
    private readonly options: Required<AnchorerOptions>;
    private timer: NodeJS.Timeout | undefined;
    private running: Promise<AnchorOutcome> | undefined;
    private lastError: string | null = null;
    private nextAttemptAt: number | null = null;
    private failures = 0;
    private pending: PendingAnchor | null = null;
    private stopped = false;

    constructor(options: AnchorerOptions) {
        super();
        this.options = {intervalMs: 3_600_000, miningTimeoutMs: MINING_TIMEOUT_MS, rpcTimeoutMs: RPC_TIMEOUT_MS, ...options};
    }

    /** Loads what a previous run left pending and anchors on the interval (at once, if a transaction is pending). */
    async start() {
        this.pending = await this.loadPending();
        this.schedule(this.pending === null ? this.options.intervalMs : 0);
    }

    stop() {
        this.stopped = true;
        clearTimeout(this.timer);
    }

    status(): AnchorerStatus {
        const anchors = this.options.log.anchors;
        return {
            pending: this.pending && {logLength: this.pending.logLength, txHash: this.pending.txHash},
            lastAnchor: anchors.at(-1) ?? null,
            lastError: this.lastError,
            nextAttemptAt: this.nextAttemptAt === null ? null : new Date(this.nextAttemptAt).toISOString()
        };
    }

    /** Anchors now (one attempt at a time); throws LedgerError when the attempt fails. */
    anchorNow(): Promise<AnchorOutcome> {
        this.running ??= this.attempt().finally(() => this.running = undefined);
        return this.running;
    }

    private schedule(delayMs: number) {
        if (this.stopped)
            return;
        clearTimeout(this.timer);
        this.nextAttemptAt = Date.now() + delayMs;
        this.timer = setTimeout(() => {
            this.anchorNow().then(() => {
                this.failures = 0;
                this.schedule(this.options.intervalMs);
            }, (error: LedgerError) => {
                this.failures++;
                this.emit('failed', error);
                this.schedule(Math.min(this.options.intervalMs, RETRY_INITIAL_MS * 2 ** (this.failures - 1)));
            });
        }, delayMs);
        this.timer.unref();
    }

    private async attempt(): Promise<AnchorOutcome> {
        const {log} = this.options;
        const provider = chainProvider(this.options);
        try {
            await checkChain(provider, this.options.chainId);
            if (this.pending === null) {
                await log.flush();
                const last = log.anchors.at(-1);
                // The anchor record itself adds one record: only growth beyond it is worth a transaction.
                if (last !== undefined && log.length <= last.logLength + 1)
                    return {status: 'up-to-date', logLength: last.logLength};
                this.pending = await this.signAnchor(provider, log.length, await log.treeHash(log.length));
                await this.savePending(this.pending);
            }
            const record = await this.sendAndRecord(provider, this.pending);
            this.pending = null;
            await this.savePending(null);
            this.lastError = null;
            this.emit('anchored', record);
            return {status: 'anchored', record};
        } catch (error) {
            const failure = error instanceof LedgerError ? error : LedgerError.chainUnavailable(shortReason(error));
            this.lastError = `${failure.code}: ${failure.message}`;
            throw failure;
        } finally {
            provider.destroy();
        }
    }

    /** Builds and signs the transaction for `logLength` within the fee cap; nothing is sent yet. */
    private async signAnchor(provider: JsonRpcProvider, logLength: number, treeHash: string): Promise<PendingAnchor> {
        const wallet = this.options.wallet.connect(provider);
        const contract = new Contract(this.options.contract, contributionAnchorAbi, wallet);
        const fee = await provider.getFeeData();
        const perGas = fee.maxFeePerGas ?? fee.gasPrice;
        const capWei = BigInt(Math.round(this.options.maxFeeGwei * 1e9));
        if (perGas === null)
            throw LedgerError.chainUnavailable('the chain RPC gives no fee data');
        if (perGas > capWei)
            throw LedgerError.feeTooHigh(`the chain asks ${Number(perGas) / 1e9} gwei per gas, above --max-fee-gwei ${this.options.maxFeeGwei}`);
        const populated = await contract.anchor!.populateTransaction(`0x${this.options.log.key}`, logLength, `0x${treeHash}`);
        const gasLimit = BigInt(Math.ceil(Number(await provider.estimateGas({...populated, from: wallet.address})) * GAS_MARGIN));
        const nonce = await provider.getTransactionCount(wallet.address, 'pending');
        const fees = fee.maxFeePerGas !== null
            ? {type: 2, maxFeePerGas: fee.maxFeePerGas, maxPriorityFeePerGas: fee.maxPriorityFeePerGas ?? 0n}
            : {type: 0, gasPrice: fee.gasPrice};
        const rawTx = await wallet.signTransaction({...populated, ...fees, gasLimit, nonce, chainId: this.options.chainId});
        return {rawTx, txHash: Transaction.from(rawTx).hash!, logLength, treeHash};
    }

    /** Sends the signed transaction (again, if it was sent before), waits for it to be mined, and records it in the log. */
    private async sendAndRecord(provider: JsonRpcProvider, pending: PendingAnchor): Promise<AnchorRecord> {
        let receipt = await provider.getTransactionReceipt(pending.txHash);
        if (receipt === null) {
            try {
                await provider.broadcastTransaction(pending.rawTx);
            } catch (error) {
                // Sent before by an attempt that failed later: the chain refuses it again (each chain in its own words)
                // but knows it. Anything else is a failure to send.
                if (await provider.getTransaction(pending.txHash).catch(() => null) === null)
                    throw LedgerError.chainUnavailable(`cannot send the anchoring transaction: ${shortReason(error)}`);
            }
            receipt = await waitForReceipt(provider, pending.txHash, this.options.miningTimeoutMs);
        }
        if (receipt === null)
            throw LedgerError.chainUnavailable(`transaction ${pending.txHash} is not mined yet; it will be awaited again`);
        if (receipt.status !== 1) {
            this.pending = null;
            await this.savePending(null);
            throw LedgerError.reverted(`transaction ${pending.txHash} reverted in block ${receipt.blockNumber}`);
        }
        const record: AnchorRecord = {
            version: LEDGER_RECORD_VERSION, type: 'anchor', at: new Date().toISOString(), chainId: this.options.chainId,
            contract: this.options.contract, txHash: pending.txHash, blockNumber: receipt.blockNumber, logLength: pending.logLength, treeHash: pending.treeHash
        };
        if (!this.options.log.append(record))
            throw LedgerError.invalidRecord('the anchor record was refused by the log');
        await this.options.log.flush();
        return record;
    }

    private async loadPending(): Promise<PendingAnchor | null> {
        try {
            return (JSON.parse(await readFile(this.options.statePath, 'utf8')) as {pending: PendingAnchor | null}).pending;
        } catch {
            return null;
        }
    }

    /** Written whole or not at all (a rename), before the transaction it names can reach the chain. */
    private async savePending(pending: PendingAnchor | null) {
        await mkdir(dirname(this.options.statePath), {recursive: true});
        const temporary = `${this.options.statePath}.tmp`;
        await writeFile(temporary, JSON.stringify({pending}) + '\n', {mode: 0o600, flush: true});
        await rename(temporary, this.options.statePath);
    }
}

/**
 * The transaction's receipt once it is mined, or null after `timeoutMs`. (ethers' own waitForTransaction prints RPC
 * errors to stdout, which would break a daemon's JSON log lines.)
 */
async function waitForReceipt(provider: JsonRpcProvider, txHash: string, timeoutMs: number) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const receipt = await provider.getTransactionReceipt(txHash).catch(() => null);
        if (receipt !== null || Date.now() >= deadline)
            return receipt;
        await new Promise((resolve) => setTimeout(resolve, Math.min(RECEIPT_POLL_MS, Math.max(0, deadline - Date.now()))));
    }
}

/** An error's message without ethers' long request dumps. */
function shortReason(error: unknown) {
    const candidate = error as {shortMessage?: string, message?: string};
    return (candidate.shortMessage ?? candidate.message ?? String(error)).slice(0, 300);
}
