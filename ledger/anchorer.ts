/**
 * The anchorer's state machine (docs/architecture.md, "Anchoring"); its parts are in anchor/: the chain I/O and
 * event decoding, the transactions, the state file, the schedule.
 */
import {EventEmitter} from 'node:events';
import type {JsonRpcProvider, Wallet} from 'ethers';
import {AnchorSchedule} from './anchor/anchor-schedule.js';
import {type AnchorState, AnchorStateFile, authorizationKey, type PendingAnchor} from './anchor/anchor-state.js';
import {authorizationPublished, publishAuthorization, sendPending, signAnchor} from './anchor/anchor-transactions.js';
import {type ChainSettings, shortReason, withChain} from './anchor/chain.js';
import type {ContributionLog} from './contribution-log.js';
import {LedgerError} from './ledger-error.js';
import {LEDGER_RECORD_VERSION, type AnchorRecord} from './records.js';

/** How long a sent anchoring transaction may take to be mined before the attempt is retried (the same transaction). */
const MINING_TIMEOUT_MS = 120_000;

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
    private readonly options: AnchorerOptions & Required<Pick<AnchorerOptions, 'intervalMs' | 'miningTimeoutMs'>>;
    private readonly stateFile: AnchorStateFile;
    private readonly schedule: AnchorSchedule;
    private running: Promise<AnchorOutcome> | undefined;
    private lastError: string | null = null;
    private state: AnchorState = {pending: null, authorized: []};

    constructor(options: AnchorerOptions) {
        super();
        this.options = {intervalMs: 3_600_000, miningTimeoutMs: MINING_TIMEOUT_MS, ...options};
        this.stateFile = new AnchorStateFile(options.statePath);
        this.schedule = new AnchorSchedule({
            attempt: () => this.anchorNow(),
            onFailure: (error) => this.emit('failed', error as LedgerError),
            intervalMs: this.options.intervalMs
        });
    }

    /** Loads what a previous run left and anchors on the interval (at once, if a transaction is pending). */
    async start() {
        this.state = await this.stateFile.load();
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

    /** One attempt, on a chain whose id was checked. */
    private async attemptOn(provider: JsonRpcProvider): Promise<AnchorOutcome> {
        const {log} = this.options;
        await this.forgetForeignPending(provider);
        if (this.state.pending === null) {
            await log.flush();
            const last = log.anchors.at(-1);
            // The anchor record itself adds one record: only growth beyond it is worth a transaction.
            if (last !== undefined && log.length <= last.logLength + 1)
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

    /** Publishes the owner's permission for this wallet on this contract, once. */
    private async ensureAuthorized(provider: JsonRpcProvider, wallet: Wallet) {
        const {log, chainId, contract} = this.options;
        const key = authorizationKey(chainId, contract, wallet.address);
        if (this.state.authorized.includes(key))
            return;
        // Sending it twice would be harmless: no saved transaction is needed here.
        if (!await authorizationPublished(provider, this.options, log.key, wallet.address))
            await publishAuthorization(provider, wallet, this.options, log.key, log.authorizeAnchoring(wallet.address, chainId, contract));
        await this.saveState({...this.state, authorized: [...this.state.authorized, key]});
    }

    /** Sends the signed transaction (again, if it was sent before), waits for it to be mined, and records it in the log. */
    private async sendAndRecord(provider: JsonRpcProvider, pending: PendingAnchor): Promise<AnchorRecord> {
        const receipt = await sendPending(provider, pending, this.options.miningTimeoutMs);
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
