/**
 * Settlement (docs/architecture.md, "Settlement"): a provider redeems the latest voucher of each of its channels on
 * the payment contract, in batches, on an interval or at once past a threshold, each transaction saved before it is
 * sent (as the anchorer does, ledger/anchorer.ts) so that a voucher is never paid twice nor recorded twice.
 */
import {EventEmitter} from 'node:events';
import {Contract, getAddress, Interface, type JsonRpcProvider, type TransactionReceipt, type Wallet} from 'ethers';
import {sharedRun} from '../../core/shared-run.js';
import {AnchorSchedule} from '../anchor/anchor-schedule.js';
import {shortReason, withChain} from '../anchor/chain.js';
import {sendPending, superseded, signWithinCap} from '../chain-transactions.js';
import type {ContributionLog} from '../contribution-log.js';
import {paymentChannelsAbi} from '../generated/payment-channels.js';
import {LedgerError} from '../ledger-error.js';
import {LEDGER_RECORD_VERSION, type RedeemRecord} from '../records.js';
import {type PaymentSettings, paymentDomain, readChannelOn, refusal} from './channels.js';
import {type PendingRedeem, type RedeemState, RedeemStateFile} from './redeem-state.js';
import {type SignedVoucher, verifyVoucher} from './vouchers.js';
import {resendSaved, WalletLock} from '../wallet-lock.js';

/** How long a sent redeem may take to be mined and confirmed before the attempt fails (and the same one is awaited again). */
const MINING_TIMEOUT_MS = 120_000;
/** The one redeem run at a time (`sharedRun`). */
const RUN = 'redeem';
const PAYMENT_CHANNELS = new Interface(paymentChannelsAbi);

/** A voucher the node holds: the latest of its channel, and the payer it came from. */
/** Gas of one redeem, rounded up (bench/results/payments.json: 47,449). */
const REDEEM_GAS = 50_000n;

export interface RedeemableVoucher {
    voucher: SignedVoucher,
    /** The payer's address, as the node knows it; the channel's payer on the chain is what counts. */
    payer: string
}

export interface RedeemerOptions extends PaymentSettings {
    /** The payee's wallet: it sends the redeems and is paid. */
    wallet: Wallet,
    log: ContributionLog,
    /** Where a signed redeem is remembered until it is confirmed and recorded, so a restart never sends a second one. */
    statePath: string,
    /** Most a transaction may pay per gas, in gwei. */
    maxFeeGwei: number,
    /** Blocks on top of a redeem's, its own included, before it counts and is recorded. */
    confirmations: number,
    /** Redeem this often (ms). */
    intervalMs: number,
    /** Redeem at once when the vouchers held exceed what was redeemed by more than this (wei). */
    thresholdWei: bigint,
    /** The latest voucher held per channel (the node's payee book). */
    vouchers: () => RedeemableVoucher[],
    /** How long a sent redeem may take to be mined and confirmed before the attempt fails; defaults to 2 min. */
    miningTimeoutMs?: number
}

export interface RedeemerStatus {
    /** Redeems signed and sent (or about to be), not yet confirmed and recorded; amounts are the vouchers' cumulative ones, in wei. */
    pending: Array<{channel: string, txHash: string, amount: bigint}>,
    lastRedeem: RedeemRecord | null,
    lastError: string | null,
    nextAttemptAt: string | null
}

/**
 * Redeems the vouchers the node holds. An attempt checks the chain id, finishes what a previous one left (sent again,
 * the same bytes, and awaited), then reads each channel and, for each voucher above what the chain says was
 * redeemed, signs `redeem` within the fee cap at consecutive nonces, saves them all, sends them all, and awaits and
 * records each in turn: one `redeem` record per transaction. A channel whose voucher cannot be redeemed (closed, not
 * this wallet's, refused by the contract) is a `failed` event, once for the same reason, and the batch goes on;
 * a failure of the whole attempt (chain down, wrong chain, fee above the cap) is a `failed` event too, rejects
 * `redeemNow`, and is retried with backoff (15 s, doubling, at most the interval: `AnchorSchedule`).
 */
export class Redeemer extends EventEmitter<{redeemed: [record: RedeemRecord], failed: [error: LedgerError]}> {
    private readonly options: RedeemerOptions & {miningTimeoutMs: number, walletLock: WalletLock};
    private readonly stateFile: RedeemStateFile;
    private readonly schedule: AnchorSchedule;
    private readonly runs = new Map<string, Promise<RedeemRecord[]>>();
    private state: RedeemState = {pending: []};
    private loaded = false;
    private stopped = false;
    /** A voucher arrived past the threshold while a run was under way, which may have read the book before it. */
    private recheck = false;
    /** What the chain said each channel (lower case) had redeemed, as last read or redeemed. */
    private readonly redeemed = new Map<string, bigint>();
    /**
     * Vouchers the chain will not take, by channel: the amount refused (null: any, the channel closed) and why. Each
     * reason is reported once, and a refused voucher does not count toward the threshold.
     */
    private readonly refused = new Map<string, {amount: bigint | null, reason: string}>();
    private lastRedeem: RedeemRecord | null = null;
    private lastError: string | null = null;

    constructor(options: RedeemerOptions) {
        super();
        this.options = {...options, miningTimeoutMs: options.miningTimeoutMs ?? MINING_TIMEOUT_MS, walletLock: options.walletLock ?? new WalletLock()};
        this.stateFile = new RedeemStateFile(options.statePath);
        this.schedule = new AnchorSchedule({
            attempt: () => this.redeemNow(),
            // Reported by the attempt itself, whoever started it.
            onFailure: () => undefined,
            intervalMs: options.intervalMs
        });
    }

    /** Loads what a previous run left and redeems on the interval (at once, if a redeem is pending). */
    async start() {
        await this.loadState();
        this.lastRedeem ??= this.options.log.recent().find((record): record is RedeemRecord => record.type === 'redeem') ?? null;
        this.schedule.start(this.state.pending.length > 0 ? 0 : this.options.intervalMs);
    }

    /** No further attempts; one under way finishes (its transactions stay saved if the log closes first). */
    stop() {
        this.stopped = true;
        this.schedule.stop();
    }

    /**
     * Redeems every channel whose latest voucher is above what the chain says was redeemed (one run at a time: a
     * second caller shares the first's). Resolves with the records it appended; rejects with LedgerError when the
     * attempt as a whole fails (also a `failed` event, as every failure is).
     */
    redeemNow(): Promise<RedeemRecord[]> {
        return sharedRun(this.runs, RUN, () => this.attempt(), {keep: false});
    }

    /**
     * For the node, after each voucher it keeps: redeems at once when the vouchers held exceed what was redeemed by more
     * than `thresholdWei`. Returns whether a redeem started (or one under way will be followed by another).
     */
    voucherArrived(): boolean {
        if (this.stopped || this.unredeemed() <= this.options.thresholdWei)
            return false;
        if (this.runs.has(RUN)) {
            this.recheck = true;
            return true;
        }
        this.redeemNow().catch(() => undefined); // a `failed` event
        return true;
    }

    /** What the chain said `channel` had redeemed (wei), as last read; undefined before it was read. */
    redeemedOf(channel: string): bigint | undefined {
        return this.redeemed.get(channel.toLowerCase());
    }

    status(): RedeemerStatus {
        const {nextAttemptAt} = this.schedule;
        return {
            pending: this.state.pending.map(({channel, txHash, amount}) => ({channel, txHash, amount: BigInt(amount)})),
            lastRedeem: this.lastRedeem,
            lastError: this.lastError,
            nextAttemptAt: nextAttemptAt === null || this.stopped ? null : new Date(nextAttemptAt).toISOString()
        };
    }

    /** What the vouchers held are worth beyond what was redeemed or is being redeemed, less vouchers the chain refused. */
    private unredeemed() {
        let total = 0n;
        for (const {voucher} of this.options.vouchers()) {
            const channel = voucher.channel.toLowerCase();
            const refused = this.refused.get(channel);
            if (refused !== undefined && (refused.amount === null || refused.amount === voucher.amount))
                continue;
            const done = this.state.pending.filter((pending) => pending.channel === channel)
                .reduce((most, pending) => BigInt(pending.amount) > most ? BigInt(pending.amount) : most, this.redeemed.get(channel) ?? 0n);
            if (voucher.amount > done)
                total += voucher.amount - done;
        }
        return total;
    }

    private async attempt(): Promise<RedeemRecord[]> {
        try {
            this.lastError = null;
            return await withChain(this.options, 'cannot redeem vouchers', (provider) => this.attemptOn(provider));
        } catch (error) {
            const failure = error instanceof LedgerError ? error : LedgerError.chainUnavailable(shortReason(error));
            this.fail(failure);
            throw failure;
        } finally {
            if (this.recheck) {
                this.recheck = false;
                // Once this run is forgotten (`sharedRun`), so that the check can start another.
                setImmediate(() => this.voucherArrived());
            }
        }
    }

    /** What a previous run left, once: an attempt before `start()` must not overwrite it. */
    private async loadState() {
        if (!this.loaded)
            this.state = await this.stateFile.load();
        this.loaded = true;
    }

    /**
     * One attempt, on a chain whose id was checked: what was left first, then a new batch. Signing and sending are
     * under the wallet's lock (ledger/wallet-lock.ts), awaiting the receipts is not.
     */
    private async attemptOn(provider: JsonRpcProvider) {
        const {walletLock} = this.options;
        await this.loadState();
        await this.forgetForeignPending(provider);
        await walletLock.run(() => this.sendSaved(provider));
        const records = await this.awaitAndRecord(provider);
        const signed = await walletLock.run(async () => {
            if (!await this.signBatch(provider))
                return false;
            await this.sendSaved(provider);
            return true;
        });
        if (signed)
            records.push(...await this.awaitAndRecord(provider));
        return records;
    }

    /**
     * Saved redeems that can no longer be mined are dropped: meant for another chain, contract or wallet (the settings
     * changed), or their nonce was used by another transaction of the wallet and they are not on the chain.
     */
    private async forgetForeignPending(provider: JsonRpcProvider) {
        const {chainId, contract, wallet} = this.options;
        const kept: PendingRedeem[] = [];
        for (const pending of this.state.pending) {
            const elsewhere = pending.chainId !== chainId || pending.contract.toLowerCase() !== contract.toLowerCase()
                || pending.wallet.toLowerCase() !== wallet.address.toLowerCase();
            if (!elsewhere && !await superseded(provider, pending))
                kept.push(pending);
        }
        if (kept.length !== this.state.pending.length)
            await this.saveState({pending: kept});
    }

    /**
     * Reads each channel the node holds a voucher for and signs a redeem of each voucher above what the chain says was
     * redeemed, at consecutive nonces; saves them all before any is sent. Returns whether it signed any.
     */
    private async signBatch(provider: JsonRpcProvider) {
        const {chainId, contract: contractAddress} = this.options;
        const wallet = this.options.wallet.connect(provider);
        const contract = new Contract(contractAddress, paymentChannelsAbi, wallet);
        const chainTime = (await provider.getBlock('latest'))!.timestamp;
        // A redeem must be worth its gas: dust from a peer's tiny jobs waits for more (or for its channel's close).
        const fee = await provider.getFeeData();
        const worthRedeeming = (fee.maxFeePerGas ?? fee.gasPrice ?? 0n) * REDEEM_GAS * 2n;
        const signed: PendingRedeem[] = [];
        let nonce: number | undefined;
        for (const voucher of latestPerChannel(this.options.vouchers())) {
            const channel = voucher.channel.toLowerCase();
            if (this.refused.get(channel)?.amount === null)
                continue;
            const state = await readChannelOn(provider, this.options, channel);
            if (state === null) {
                this.refuse(channel, voucher.amount, LedgerError.channelRefused(`there is no channel ${channel} on the payment contract ${contractAddress}: its voucher for ${voucher.amount} wei is not redeemed`));
                continue;
            }
            this.redeemed.set(channel, state.redeemed);
            if (voucher.amount <= state.redeemed) {
                this.refused.delete(channel);
                continue;
            }
            if (state.closesAt === 0 && voucher.amount - state.redeemed < worthRedeeming)
                continue;
            // A channel in its challenge period is still redeemed: the payee may, until `closesAt`.
            if (state.closesAt !== 0 && state.closesAt <= chainTime) {
                this.refuse(channel, null, LedgerError.channelRefused(`channel ${channel} closed at ${new Date(state.closesAt * 1000).toISOString()}`
                    + ` (its challenge period is over): its voucher for ${voucher.amount} wei, ${voucher.amount - state.redeemed} wei beyond what was redeemed, can no longer be redeemed`));
                continue;
            }
            if (state.payee.toLowerCase() !== wallet.address.toLowerCase()) {
                this.refuse(channel, voucher.amount, LedgerError.channelRefused(`channel ${channel} pays ${state.payee}, not this wallet ${wallet.address}: its voucher is not redeemed`));
                continue;
            }
            try {
                verifyVoucher(paymentDomain(this.options), voucher, state.payer);
                const populated = await contract.getFunction('redeem').populateTransaction(channel, voucher.amount, voucher.signature);
                const transaction = await signWithinCap(provider, wallet, populated, this.options, nonce);
                nonce = transaction.nonce + 1;
                signed.push({...transaction, chainId, contract: contractAddress, channel, payer: getAddress(state.payer), amount: voucher.amount.toString(),
                    wallet: wallet.address});
            } catch (error) {
                // The contract refused it at the estimate (nothing signed), or the voucher is not the payer's.
                const refused = error instanceof LedgerError && error.code === 'INVALID_VOUCHER' ? error : refusal(error, 'redeem');
                if (refused === undefined)
                    throw error;
                this.refuse(channel, voucher.amount, refused);
            }
        }
        if (signed.length > 0)
            await this.saveState({pending: [...this.state.pending, ...signed]});
        return signed.length > 0;
    }

    /** Sends every saved redeem not mined (again, if it was sent before or a reorganization dropped it), all of them first so that they are mined together. */
    private async sendSaved(provider: JsonRpcProvider) {
        for (const pending of this.state.pending)
            await resendSaved(provider, pending);
    }

    /** Awaits each saved redeem (sent by `sendSaved`) until it is confirmed, and records it. */
    private async awaitAndRecord(provider: JsonRpcProvider) {
        const records: RedeemRecord[] = [];
        for (const pending of [...this.state.pending]) {
            const receipt = await sendPending(provider, pending, this.options);
            if (receipt === null)
                throw LedgerError.chainUnavailable(`the redeem of channel ${pending.channel} (transaction ${pending.txHash}) is not mined and confirmed yet; it will be awaited again`);
            if (receipt.status !== 1) {
                await this.forget(pending);
                this.fail(LedgerError.reverted(`the redeem of channel ${pending.channel} (transaction ${pending.txHash}) reverted in block ${receipt.blockNumber}: nothing was paid`));
                continue;
            }
            const record = await this.record(pending, receipt);
            await this.forget(pending);
            if (record !== null) {
                records.push(record);
                this.lastRedeem = record;
                this.emit('redeemed', record);
            }
        }
        return records;
    }

    /**
     * Appends the `redeem` record of a confirmed redeem, with what its `Redeemed` event paid; null when the log has
     * it already (a run that stopped before it could clear the saved transaction).
     */
    private async record(pending: PendingRedeem, receipt: TransactionReceipt): Promise<RedeemRecord | null> {
        const {log, contract} = this.options;
        const event = receipt.logs.map((entry) => entry.address.toLowerCase() === contract.toLowerCase()
            ? PAYMENT_CHANNELS.parseLog({topics: [...entry.topics], data: entry.data}) : null)
            .find((parsed) => parsed?.name === 'Redeemed' && String(parsed.args[0]).toLowerCase() === pending.channel);
        if (!event)
            throw LedgerError.chainUnavailable(`transaction ${pending.txHash} emitted no Redeemed event for channel ${pending.channel}`);
        this.redeemed.set(pending.channel, BigInt(event.args[4] as bigint));
        this.refused.delete(pending.channel);
        if (log.hasWork(`redeem:${pending.txHash}`))
            return null;
        const record: RedeemRecord = {
            version: LEDGER_RECORD_VERSION, type: 'redeem', at: new Date().toISOString(), chainId: pending.chainId, contract: pending.contract,
            channel: pending.channel, payer: pending.payer, amount: pending.amount, paid: String(event.args[3]), txHash: pending.txHash,
            blockNumber: receipt.blockNumber
        };
        await log.append(record).catch((error: Error) => {
            throw LedgerError.storage(`the contribution log did not take the redeem record: ${error.message}`);
        });
        return record;
    }

    /** A voucher the chain will not take: reported once for the same reason. */
    private refuse(channel: string, amount: bigint | null, error: LedgerError) {
        if (this.refused.get(channel)?.reason === error.message)
            return;
        this.refused.set(channel, {amount, reason: error.message});
        this.fail(error);
    }

    private fail(error: LedgerError) {
        this.lastError = `${error.code}: ${error.message}`;
        this.emit('failed', error);
    }

    /** A saved redeem done with: recorded, found in the log, or reverted. */
    private forget(pending: PendingRedeem) {
        return this.saveState({pending: this.state.pending.filter((other) => other.txHash !== pending.txHash)});
    }

    private async saveState(state: RedeemState) {
        await this.stateFile.save(state);
        this.state = state;
    }
}

/** The highest voucher of each channel (the book should hold one a channel). */
function latestPerChannel(held: readonly RedeemableVoucher[]) {
    const latest = new Map<string, SignedVoucher>();
    for (const {voucher} of held) {
        const channel = voucher.channel.toLowerCase();
        if ((latest.get(channel)?.amount ?? -1n) < voucher.amount)
            latest.set(channel, voucher);
    }
    return latest.values();
}
