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
    try {
        await checkChain(provider, settings.chainId);
        const factory = new ContractFactory(contributionAnchorAbi, contributionAnchorBytecode, wallet.connect(provider));
        const contract = await factory.deploy();
        const deployment = contract.deploymentTransaction();
        await contract.waitForDeployment();
        return {address: await contract.getAddress(), txHash: deployment?.hash ?? null};
    } catch (error) {
        throw error instanceof LedgerError ? error : LedgerError.chainUnavailable(`cannot deploy the anchoring contract: ${shortReason(error)}`);
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

/** A wallet the log's owner let anchor its log, as the chain holds it (the signature is checked by the verifier). */
export interface AuthorizationEvent {
    sender: string,
    ownerSignature: string,
    blockNumber: number
}

/** What the chain holds for one log on one contract. */
export interface ChainAnchors {
    chainId: number,
    contract: string,
    anchors: AnchorEvent[],
    authorizations: AuthorizationEvent[]
}

/** Every anchor and every authorization of the log `coreKey` on the contract. */
export async function readAnchorEvents(settings: ChainSettings & {contract: string}, coreKey: string): Promise<ChainAnchors> {
    const provider = chainProvider(settings);
    try {
        await checkChain(provider, settings.chainId);
        const contract = new Contract(settings.contract, contributionAnchorAbi, provider);
        const [anchored, authorized] = await Promise.all([
            contract.queryFilter(contract.filters.Anchored!(null, `0x${coreKey}`), 0),
            contract.queryFilter(contract.filters.Authorized!(null, `0x${coreKey}`), 0)
        ]);
        return {
            chainId: settings.chainId,
            contract: settings.contract,
            anchors: anchored.flatMap((event) => 'args' in event ? [{
                sender: String(event.args[0]), core: String(event.args[1]).slice(2), logLength: Number(event.args[2]),
                treeHash: String(event.args[3]).slice(2), blockNumber: event.blockNumber, txHash: event.transactionHash
            }] : []),
            authorizations: authorized.flatMap((event) => 'args' in event ? [{
                sender: String(event.args[0]), ownerSignature: String(event.args[2]).slice(2), blockNumber: event.blockNumber
            }] : [])
        };
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

/** A transaction signed and (maybe) sent, not yet known to be mined, and where it was meant to go. */
interface PendingAnchor {
    rawTx: string,
    txHash: string,
    nonce: number,
    logLength: number,
    treeHash: string,
    chainId: number,
    contract: string,
    wallet: string
}

/** What survives a restart, in `statePath`. */
interface AnchorState {
    pending: PendingAnchor | null,
    /** `chainId:contract:wallet` where the owner's authorization is on chain already. */
    authorized: string[]
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
 * record in the log with the transaction and its block (docs/architecture.md, "Ledger"). The first time a wallet
 * anchors the log, it publishes the owner's signed permission (`authorize`), without which verifiers ignore its
 * anchors. Before a transaction is sent, its signed bytes are saved: after a failure or a restart the same
 * transaction is sent again (a chain accepts one transaction per nonce), so a length is never anchored twice nor
 * lost. Failures (chain down, fee too high, a revert) are retried with backoff.
 */
export class Anchorer extends EventEmitter<{anchored: [record: AnchorRecord], failed: [error: LedgerError]}> {
    private readonly options: Required<AnchorerOptions>;
    private timer: NodeJS.Timeout | undefined;
    private running: Promise<AnchorOutcome> | undefined;
    private lastError: string | null = null;
    private nextAttemptAt: number | null = null;
    private failures = 0;
    private state: AnchorState = {pending: null, authorized: []};
    private stopped = false;

    constructor(options: AnchorerOptions) {
        super();
        this.options = {intervalMs: 3_600_000, miningTimeoutMs: MINING_TIMEOUT_MS, rpcTimeoutMs: RPC_TIMEOUT_MS, ...options};
    }

    /** Loads what a previous run left and anchors on the interval (at once, if a transaction is pending). */
    async start() {
        this.state = await this.loadState();
        this.schedule(this.state.pending === null ? this.options.intervalMs : 0);
    }

    /** No further attempts; one under way finishes (its transaction stays saved if the log closes first). */
    stop() {
        this.stopped = true;
        clearTimeout(this.timer);
    }

    status(): AnchorerStatus {
        const {pending} = this.state;
        return {
            pending: pending && {logLength: pending.logLength, txHash: pending.txHash},
            lastAnchor: this.options.log.anchors.at(-1) ?? null,
            lastError: this.lastError,
            nextAttemptAt: this.nextAttemptAt === null ? null : new Date(this.nextAttemptAt).toISOString()
        };
    }

    /** Anchors now (one attempt at a time: a second caller shares the first's); throws LedgerError when it fails. */
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
            await this.forgetForeignPending(provider);
            if (this.state.pending === null) {
                await log.flush();
                const last = log.anchors.at(-1);
                // The anchor record itself adds one record: only growth beyond it is worth a transaction.
                if (last !== undefined && log.length <= last.logLength + 1)
                    return {status: 'up-to-date', logLength: last.logLength};
                await this.ensureAuthorized(provider);
                const pending = await this.signAnchor(provider, log.length, await log.treeHash(log.length));
                await this.saveState({...this.state, pending});
            }
            const record = await this.sendAndRecord(provider, this.state.pending!);
            await this.saveState({...this.state, pending: null});
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

    /**
     * A saved transaction that can no longer be mined is dropped: it was meant for another chain, contract or wallet
     * (the settings changed), or its nonce was used by another transaction of the wallet and it is not on the chain.
     */
    private async forgetForeignPending(provider: JsonRpcProvider) {
        const {pending} = this.state;
        if (pending === null)
            return;
        const elsewhere = pending.chainId !== this.options.chainId || pending.contract.toLowerCase() !== this.options.contract.toLowerCase()
            || pending.wallet.toLowerCase() !== this.options.wallet.address.toLowerCase();
        const superseded = !elsewhere && await provider.getTransactionReceipt(pending.txHash) === null
            && await provider.getTransactionCount(pending.wallet, 'latest') > pending.nonce;
        if (elsewhere || superseded)
            await this.saveState({...this.state, pending: null});
    }

    /** Publishes the owner's permission for this wallet on this contract, once. */
    private async ensureAuthorized(provider: JsonRpcProvider) {
        const {log, chainId, contract: address} = this.options;
        const wallet = this.options.wallet.connect(provider);
        const key = `${chainId}:${address.toLowerCase()}:${wallet.address.toLowerCase()}`;
        if (this.state.authorized.includes(key))
            return;
        const contract = new Contract(address, contributionAnchorAbi, wallet);
        const published = await contract.queryFilter(contract.filters.Authorized!(wallet.address, `0x${log.key}`), 0);
        if (published.length === 0) {
            // Sending it twice would be harmless: no saved transaction is needed here.
            const signature = `0x${log.authorizeAnchoring(wallet.address, chainId, address)}`;
            const populated = await contract.authorize!.populateTransaction(`0x${log.key}`, signature);
            const tx = await wallet.signTransaction({...populated, ...await this.fees(provider), chainId,
                gasLimit: await this.gasLimit(provider, populated, wallet.address), nonce: await provider.getTransactionCount(wallet.address, 'pending')});
            await provider.broadcastTransaction(tx);
            const receipt = await waitForReceipt(provider, Transaction.from(tx).hash!, this.options.miningTimeoutMs);
            if (receipt === null || receipt.status !== 1)
                throw LedgerError.chainUnavailable('the authorization of this wallet is not mined yet');
        }
        await this.saveState({...this.state, authorized: [...this.state.authorized, key]});
    }

    /** The fee fields of a transaction within the cap, or FEE_TOO_HIGH. */
    private async fees(provider: JsonRpcProvider) {
        const fee = await provider.getFeeData();
        const perGas = fee.maxFeePerGas ?? fee.gasPrice;
        if (perGas === null)
            throw LedgerError.chainUnavailable('the chain RPC gives no fee data');
        if (perGas > BigInt(Math.round(this.options.maxFeeGwei * 1e9)))
            throw LedgerError.feeTooHigh(`the chain asks ${Number(perGas) / 1e9} gwei per gas, above --max-fee-gwei ${this.options.maxFeeGwei}`);
        return fee.maxFeePerGas !== null
            ? {type: 2, maxFeePerGas: fee.maxFeePerGas, maxPriorityFeePerGas: fee.maxPriorityFeePerGas ?? 0n}
            : {type: 0, gasPrice: fee.gasPrice};
    }

    private async gasLimit(provider: JsonRpcProvider, transaction: {to?: string | null, data?: string}, from: string) {
        return BigInt(Math.ceil(Number(await provider.estimateGas({...transaction, from})) * GAS_MARGIN));
    }

    /** Builds and signs the transaction for `logLength` within the fee cap; nothing is sent yet. */
    private async signAnchor(provider: JsonRpcProvider, logLength: number, treeHash: string): Promise<PendingAnchor> {
        const {chainId, contract: address} = this.options;
        const wallet = this.options.wallet.connect(provider);
        const contract = new Contract(address, contributionAnchorAbi, wallet);
        const fees = await this.fees(provider);
        const populated = await contract.anchor!.populateTransaction(`0x${this.options.log.key}`, logLength, `0x${treeHash}`);
        const gasLimit = await this.gasLimit(provider, populated, wallet.address);
        const nonce = await provider.getTransactionCount(wallet.address, 'pending');
        const rawTx = await wallet.signTransaction({...populated, ...fees, gasLimit, nonce, chainId});
        return {rawTx, txHash: Transaction.from(rawTx).hash!, nonce, logLength, treeHash, chainId, contract: address, wallet: wallet.address};
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
            await this.saveState({...this.state, pending: null});
            throw LedgerError.reverted(`transaction ${pending.txHash} reverted in block ${receipt.blockNumber}`);
        }
        const {log} = this.options;
        // Recorded already by a run that stopped before it could clear the saved transaction.
        const recorded = log.anchors.find((anchor) => anchor.txHash === pending.txHash);
        if (recorded !== undefined)
            return recorded;
        const record: AnchorRecord = {
            version: LEDGER_RECORD_VERSION, type: 'anchor', at: new Date().toISOString(), chainId: pending.chainId,
            contract: pending.contract, txHash: pending.txHash, blockNumber: receipt.blockNumber, logLength: pending.logLength, treeHash: pending.treeHash
        };
        if (!log.append(record))
            throw LedgerError.storage('the contribution log refused the anchor record');
        await log.flush();
        return record;
    }

    private async loadState(): Promise<AnchorState> {
        let text: string;
        try {
            text = await readFile(this.options.statePath, 'utf8');
        } catch (error) {
            if ((error as NodeJS.ErrnoException).code === 'ENOENT')
                return {pending: null, authorized: []};
            throw LedgerError.storage(`cannot read ${this.options.statePath}: ${(error as Error).message}`);
        }
        try {
            const state = JSON.parse(text) as Partial<AnchorState>;
            return {pending: state.pending ?? null, authorized: state.authorized ?? []};
        } catch {
            // A transaction may be on its way: losing track of it could anchor a length twice, so say so and stop.
            throw LedgerError.storage(`${this.options.statePath} is damaged; if no anchoring transaction is pending, remove it`);
        }
    }

    /** Written whole or not at all (a rename), before the transaction it names can reach the chain. */
    private async saveState(state: AnchorState) {
        await mkdir(dirname(this.options.statePath), {recursive: true});
        const temporary = `${this.options.statePath}.tmp`;
        await writeFile(temporary, JSON.stringify(state) + '\n', {mode: 0o600, flush: true});
        await rename(temporary, this.options.statePath);
        this.state = state;
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
