/**
 * The anchorer's state machine (docs/architecture.md, "Anchoring"); its parts are in anchor/: the chain I/O and
 * event decoding, the transactions, the state file, the schedule.
 */
import {EventEmitter} from 'node:events';
import {Interface, type JsonRpcProvider, type Wallet} from 'ethers';
import {AnchorSchedule} from './anchor/anchor-schedule.js';
import {readWalletEventsOn} from './anchor/anchor-events.js';
import {type AnchorState, AnchorStateFile, type PendingAnchor} from './anchor/anchor-state.js';
import {publishAuthorization, signAnchor} from './anchor/anchor-transactions.js';
import {type AnchorEvent, anchorCounts, type AuthorizationWindow, authorizationWindows, type OwnerEvent} from './anchor/authorization-windows.js';
import {type ChainSettings, shortReason, withChain} from './anchor/chain.js';
import {broadcast, sendPending, superseded} from './chain-transactions.js';
import type {ContributionLog} from './contribution-log.js';
import {LedgerError} from './ledger-error.js';
import {contributionAnchorAbi} from './generated/contribution-anchor.js';
import {LEDGER_RECORD_VERSION, type AnchorRecord} from './records.js';
import {resendSaved, type WalletLockOption, WalletLock} from './wallet-lock.js';

/** How long a sent anchoring transaction may take to be mined and confirmed before the attempt is retried (the same transaction). */
export const MINING_TIMEOUT_MS = 120_000;
/** How long an authorization of the wallet is valid: a year, renewed when a quarter of it is left. */
const AUTHORIZATION_LIFETIME_MS = 365 * 24 * 3600_000;
const contractInterface = new Interface(contributionAnchorAbi);

export interface AnchorerOptions extends ChainSettings, WalletLockOption {
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
    /**
     * How long a sent transaction may take to be mined and confirmed before the attempt fails (and the same one is
     * awaited again); defaults to 2 min.
     */
    miningTimeoutMs?: number,
    /** Blocks on top of a transaction's, its own included, before it counts and its anchor is recorded; defaults to 1 (mined). */
    confirmations?: number,
    /** How long the wallet's authorization is valid; renewed when a quarter of it is left. Defaults to a year. */
    authorizationLifetimeMs?: number,
    /** The first block read for the wallet's authorizations: the contract's deployment. Defaults to 0. */
    fromBlock?: number,
    /** Blocks per `eth_getLogs` call; defaults to 10,000. */
    pageBlocks?: number
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
 * Anchors the contribution log on the chain, authorizing the wallet first, with the signed transaction saved
 * before it is sent so that a length is never anchored twice nor lost (docs/architecture.md, "Anchoring").
 */
export class Anchorer extends EventEmitter<{anchored: [record: AnchorRecord], failed: [error: LedgerError]}> {
    private readonly options: AnchorerOptions & Required<Pick<AnchorerOptions, 'intervalMs' | 'miningTimeoutMs' | 'confirmations' | 'authorizationLifetimeMs'
        | 'walletLock'>>;
    private readonly stateFile: AnchorStateFile;
    private readonly schedule: AnchorSchedule;
    private running: Promise<AnchorOutcome> | undefined;
    private lastError: string | null = null;
    private state: AnchorState = {pending: null, authorizations: []};
    private loaded = false;
    /** The owner's events for the wallet and this log read so far, to `readTo`: each attempt reads only the blocks since. */
    private walletEvents: {wallet: string, events: OwnerEvent[], readTo: number} | undefined;
    /** Why anchoring stopped for good: the owner revoked this wallet. */
    private revoked: LedgerError | undefined;

    constructor(options: AnchorerOptions) {
        super();
        this.options = {intervalMs: 3_600_000, miningTimeoutMs: MINING_TIMEOUT_MS, confirmations: 1, authorizationLifetimeMs: AUTHORIZATION_LIFETIME_MS,
            ...options, walletLock: options.walletLock ?? new WalletLock()};
        this.stateFile = new AnchorStateFile(options.statePath);
        this.schedule = new AnchorSchedule({
            attempt: () => this.anchorNow(),
            onFailure: (error) => this.emit('failed', error as LedgerError),
            intervalMs: this.options.intervalMs
        });
    }

    /** Loads what a previous run left and anchors on the interval (at once, if a transaction is pending). */
    async start() {
        await this.loadState();
        this.schedule.start(this.state.pending === null ? this.options.intervalMs : 0);
    }

    /** No further attempts; one under way finishes (its transaction stays saved if the log closes first). */
    stop() {
        this.schedule.stop();
    }

    status(): AnchorerStatus {
        const {pending} = this.state;
        const {nextAttemptAt} = this.schedule;
        return {
            pending: pending && {logLength: pending.logLength, txHash: pending.txHash},
            lastAnchor: this.options.log.anchors.at(-1) ?? null,
            lastError: this.lastError,
            nextAttemptAt: nextAttemptAt === null || this.revoked !== undefined ? null : new Date(nextAttemptAt).toISOString()
        };
    }

    /** Anchors now (one attempt at a time: a second caller shares the first's); throws LedgerError when it fails. */
    anchorNow(): Promise<AnchorOutcome> {
        this.running ??= this.attempt().finally(() => this.running = undefined);
        return this.running;
    }

    private async attempt(): Promise<AnchorOutcome> {
        try {
            return await withChain(this.options, '', (provider) => this.attemptOn(provider));
        } catch (error) {
            const failure = error instanceof LedgerError ? error : LedgerError.chainUnavailable(shortReason(error));
            this.lastError = `${failure.code}: ${failure.message}`;
            throw failure;
        }
    }

    /** What a previous run left, once: an attempt before `start()` must not overwrite it. */
    private async loadState() {
        if (!this.loaded)
            this.state = await this.stateFile.load();
        this.loaded = true;
    }

    /** One attempt, on a chain whose id was checked. */
    private async attemptOn(provider: JsonRpcProvider): Promise<AnchorOutcome> {
        const {log} = this.options;
        await this.loadState();
        await this.forgetForeignPending(provider);
        if (this.state.pending === null) {
            // A revoked wallet stops anchoring, and says so, even when the log has not grown.
            const windows = await this.unlessRevoked(provider);
            await log.flush();
            const last = log.anchors.at(-1);
            // The anchor record itself adds one record: only growth beyond it is worth a transaction. A record the
            // chain does not bear out (a reorganization dropped its transaction, or it was never sent) counts for
            // nothing: the log is anchored again.
            if (last !== undefined && log.length <= last.logLength + 1 && await this.onChain(provider, last))
                return {status: 'up-to-date', logLength: last.logLength};
            const wallet = this.options.wallet.connect(provider);
            await this.ensureAuthorized(provider, wallet, windows);
            const logLength = log.length;
            const treeHash = await log.treeHash(logLength);
            // Signed, saved and sent under the wallet's lock (ledger/wallet-lock.ts): whoever signs next sees its nonce used.
            await this.options.walletLock.run(async () => {
                const pending = await signAnchor(provider, wallet, this.options, {coreKey: log.key, logLength, treeHash});
                await this.saveState({...this.state, pending});
                await broadcast(provider, pending);
            });
        } else {
            // What a previous attempt saved, sent again before anyone signs at its nonce.
            const saved = this.state.pending;
            await this.options.walletLock.run(() => resendSaved(provider, saved));
        }
        const record = await this.sendAndRecord(provider, this.state.pending!);
        await this.saveState({...this.state, pending: null});
        this.lastError = null;
        this.emit('anchored', record);
        return {status: 'anchored', record};
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
        if (elsewhere || await superseded(provider, pending))
            await this.saveState({...this.state, pending: null});
    }

    /**
     * Whether `record`'s transaction is on this chain, in its block, confirmed, and emitted its anchor (this log, that
     * length and tree hash) from this contract.
     */
    private async onChain(provider: JsonRpcProvider, record: AnchorRecord) {
        const {chainId, contract, confirmations, log} = this.options;
        if (record.chainId !== chainId || record.contract.toLowerCase() !== contract.toLowerCase())
            return false;
        const receipt = await provider.getTransactionReceipt(record.txHash);
        if (receipt === null || receipt.status !== 1 || receipt.blockNumber !== record.blockNumber
            || await provider.getBlockNumber() - receipt.blockNumber + 1 < confirmations)
            return false;
        return receipt.logs.some((event) => {
            if (event.address.toLowerCase() !== contract.toLowerCase())
                return false;
            const parsed = contractInterface.parseLog({topics: [...event.topics], data: event.data});
            return parsed?.name === 'Anchored' && String(parsed.args[1]) === `0x${log.key}` && Number(parsed.args[2]) === record.logLength
                && String(parsed.args[3]) === `0x${record.treeHash}`;
        });
    }

    /**
     * The owner's authorizations of `wallet` for this log (docs/architecture.md, "Anchoring"), read from the chain up to
     * its head: the blocks read before, less the last `confirmations` (which a reorganization may still change), are
     * not read again.
     */
    private async walletWindows(provider: JsonRpcProvider, wallet: string) {
        const {log, chainId, contract, confirmations, fromBlock = 0} = this.options;
        const head = await provider.getBlockNumber();
        const cache = this.walletEvents?.wallet === wallet.toLowerCase() ? this.walletEvents : {wallet: wallet.toLowerCase(), events: [], readTo: fromBlock - 1};
        const from = Math.max(fromBlock, cache.readTo - confirmations + 1);
        const events = [...cache.events.filter((event) => event.blockNumber < from),
            ...from <= head ? await readWalletEventsOn(provider, this.options, {owner: log.owner, core: log.key, wallet}, from, head) : []];
        this.walletEvents = {wallet: cache.wallet, events, readTo: head};
        return authorizationWindows(events, log.owner, {network: log.domain.network, chainId, contract});
    }

    /**
     * The wallet's authorizations for this log, unless the owner revoked one (`ledger revoke`): a revoked wallet is
     * never authorized again, since the revocation says the owner no longer trusts it (lost, stolen, retired) and a
     * new authorization would undo it. Anchoring stops then, with NOT_CONFIGURED, and no more attempts are scheduled.
     */
    private async unlessRevoked(provider: JsonRpcProvider) {
        const {address} = this.options.wallet;
        const windows = await this.walletWindows(provider, address);
        const revocation = windows.find((window) => window.until !== null);
        if (revocation !== undefined) {
            this.revoked = LedgerError.notConfigured(`the log's owner revoked the anchoring wallet ${address} in block ${revocation.until!.blockNumber}:`
                + ' a revoked wallet is not authorized again; configure another wallet (STRONGDOGE_WALLET_KEY or --wallet) and restart the node');
            this.schedule.stop();
            throw this.revoked;
        }
        return windows;
    }

    /**
     * Publishes the owner's permission for this wallet on this contract, valid for `authorizationLifetimeMs`, when the
     * chain holds none (`windows`) with more than a quarter of its time left, and waits until it is confirmed.
     */
    private async ensureAuthorized(provider: JsonRpcProvider, wallet: Wallet, windows: readonly AuthorizationWindow[]) {
        const {log, contract, authorizationLifetimeMs} = this.options;
        // One not yet confirmed will be by the time an anchor after it is, and that anchor counts only if it is (sendAndRecord).
        const now = Date.now();
        if (windows.some((window) => window.validUntil * 1000 - now > authorizationLifetimeMs / 4))
            return;
        // Sending it twice (after a crash) would be harmless: no saved transaction is needed here.
        const validUntil = Math.floor((now + authorizationLifetimeMs) / 1000);
        await publishAuthorization(provider, wallet, this.options, {owner: log.owner, core: log.key, wallet: wallet.address, validUntil,
            signature: log.authorizeAnchoring(wallet.address, contract, validUntil)});
    }

    /**
     * Whether the anchor in `receipt` counts: sent by the wallet inside one of its authorizations' windows. One mined
     * after the wallet's revocation or expiry would be a record `verify` reports as not borne out by the chain.
     */
    private async anchorCounts(provider: JsonRpcProvider, pending: PendingAnchor, receipt: {blockNumber: number, logs: readonly {address: string,
        topics: readonly string[], data: string, index: number}[]}) {
        const {contract, log} = this.options;
        const anchors = receipt.logs.flatMap((event): AnchorEvent[] => {
            if (event.address.toLowerCase() !== contract.toLowerCase())
                return [];
            const parsed = contractInterface.parseLog({topics: [...event.topics], data: event.data});
            return parsed?.name === 'Anchored' ? [{sender: String(parsed.args[0]), core: String(parsed.args[1]).slice(2), logLength: Number(parsed.args[2]),
                treeHash: String(parsed.args[3]).slice(2), timestamp: Number(parsed.args[4]), blockNumber: receipt.blockNumber, logIndex: event.index,
                txHash: pending.txHash}] : [];
        });
        const windows = await this.walletWindows(provider, pending.wallet);
        return anchors.some((anchor) => anchor.core === log.key && anchorCounts(anchor, windows));
    }

    /**
     * Sends the signed transaction (again, if it was sent before or a reorganization dropped it), waits until it is
     * confirmed, and records it in the log.
     */
    private async sendAndRecord(provider: JsonRpcProvider, pending: PendingAnchor): Promise<AnchorRecord> {
        const receipt = await sendPending(provider, pending, this.options);
        if (receipt === null)
            throw LedgerError.chainUnavailable(`transaction ${pending.txHash} is not mined and confirmed yet; it will be awaited again`);
        if (receipt.status !== 1) {
            await this.saveState({...this.state, pending: null});
            throw LedgerError.reverted(`transaction ${pending.txHash} reverted in block ${receipt.blockNumber}`);
        }
        const {log} = this.options;
        // Recorded already by a run that stopped before it could clear the saved transaction.
        const recorded = log.anchors.find((anchor) => anchor.txHash === pending.txHash && anchor.blockNumber === receipt.blockNumber);
        if (recorded !== undefined)
            return recorded;
        if (!await this.anchorCounts(provider, pending, receipt)) {
            await this.saveState({...this.state, pending: null});
            throw LedgerError.notConfigured(`the anchor in transaction ${pending.txHash} (block ${receipt.blockNumber}) does not count: the wallet's`
                + ' authorization was revoked or had expired before it; it is not recorded');
        }
        const record: AnchorRecord = {
            version: LEDGER_RECORD_VERSION, type: 'anchor', at: new Date().toISOString(), chainId: pending.chainId,
            contract: pending.contract, txHash: pending.txHash, blockNumber: receipt.blockNumber, logLength: pending.logLength, treeHash: pending.treeHash
        };
        await log.append(record).catch((error: Error) => {
            throw LedgerError.storage(`the contribution log did not take the anchor record: ${error.message}`);
        });
        return record;
    }

    private async saveState(state: AnchorState) {
        await this.stateFile.save(state);
        this.state = state;
    }
}
