/**
 * The anchorer's state machine (docs/architecture.md, "Anchoring"); its parts are in anchor/: the chain I/O and
 * event decoding, the transactions, the state file, the schedule.
 */
import {EventEmitter} from 'node:events';
import {Interface, type JsonRpcProvider, type Wallet} from 'ethers';
import {AnchorSchedule} from './anchor/anchor-schedule.js';
import {type AnchorState, AnchorStateFile, authorizationKey, type PendingAnchor} from './anchor/anchor-state.js';
import {publishAuthorization, sendPending, signAnchor} from './anchor/anchor-transactions.js';
import {type ChainSettings, shortReason, withChain} from './anchor/chain.js';
import type {ContributionLog} from './contribution-log.js';
import {LedgerError} from './ledger-error.js';
import {contributionAnchorAbi} from './generated/contribution-anchor.js';
import {LEDGER_RECORD_VERSION, type AnchorRecord} from './records.js';

/** How long a sent anchoring transaction may take to be mined and confirmed before the attempt is retried (the same transaction). */
const MINING_TIMEOUT_MS = 120_000;
/** How long an authorization of the wallet is valid: a year, renewed when a quarter of it is left. */
const AUTHORIZATION_LIFETIME_MS = 365 * 24 * 3600_000;
const contractInterface = new Interface(contributionAnchorAbi);

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
    /**
     * How long a sent transaction may take to be mined and confirmed before the attempt fails (and the same one is
     * awaited again); defaults to 2 min.
     */
    miningTimeoutMs?: number,
    /** Blocks on top of a transaction's, its own included, before it counts and its anchor is recorded; defaults to 1 (mined). */
    confirmations?: number,
    /** How long the wallet's authorization is valid; renewed when a quarter of it is left. Defaults to a year. */
    authorizationLifetimeMs?: number
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
    private readonly options: AnchorerOptions & Required<Pick<AnchorerOptions, 'intervalMs' | 'miningTimeoutMs' | 'confirmations' | 'authorizationLifetimeMs'>>;
    private readonly stateFile: AnchorStateFile;
    private readonly schedule: AnchorSchedule;
    private running: Promise<AnchorOutcome> | undefined;
    private lastError: string | null = null;
    private state: AnchorState = {pending: null, authorizations: []};
    private loaded = false;

    constructor(options: AnchorerOptions) {
        super();
        this.options = {intervalMs: 3_600_000, miningTimeoutMs: MINING_TIMEOUT_MS, confirmations: 1, authorizationLifetimeMs: AUTHORIZATION_LIFETIME_MS,
            ...options};
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
            nextAttemptAt: nextAttemptAt === null ? null : new Date(nextAttemptAt).toISOString()
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
            await log.flush();
            const last = log.anchors.at(-1);
            // The anchor record itself adds one record: only growth beyond it is worth a transaction. A record the
            // chain does not bear out (a reorganization dropped its transaction, or it was never sent) counts for
            // nothing: the log is anchored again.
            if (last !== undefined && log.length <= last.logLength + 1 && await this.onChain(provider, last))
                return {status: 'up-to-date', logLength: last.logLength};
            const wallet = this.options.wallet.connect(provider);
            await this.ensureAuthorized(provider, wallet);
            const pending = await signAnchor(provider, wallet, this.options, {coreKey: log.key, logLength: log.length, treeHash: await log.treeHash(log.length)});
            await this.saveState({...this.state, pending});
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
        const superseded = !elsewhere && await provider.getTransactionReceipt(pending.txHash) === null
            && await provider.getTransactionCount(pending.wallet, 'latest') > pending.nonce;
        if (elsewhere || superseded)
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
     * Publishes the owner's permission for this wallet on this contract, valid for `authorizationLifetimeMs`, when
     * there is none or a quarter of its time is left, and waits until it is confirmed.
     */
    private async ensureAuthorized(provider: JsonRpcProvider, wallet: Wallet) {
        const {log, chainId, contract, authorizationLifetimeMs} = this.options;
        const key = authorizationKey(chainId, contract, wallet.address);
        const now = Date.now();
        const current = this.state.authorizations.filter((entry) => entry.validUntil * 1000 > now);
        if (current.some((entry) => entry.key === key && entry.validUntil * 1000 - now > authorizationLifetimeMs / 4))
            return;
        // Sending it twice (after a crash) would be harmless: no saved transaction is needed here.
        const validUntil = Math.floor((now + authorizationLifetimeMs) / 1000);
        await publishAuthorization(provider, wallet, this.options, {owner: log.owner, core: log.key, wallet: wallet.address, validUntil,
            signature: log.authorizeAnchoring(wallet.address, contract, validUntil)});
        await this.saveState({...this.state, authorizations: [...current, {key, validUntil}]});
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
