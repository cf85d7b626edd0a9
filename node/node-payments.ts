/**
 * The node's payments (docs/architecture.md, "Payments"): its wallet bound to its node key, the channels it pays
 * through (requester) and is paid through (provider), the vouchers that go with receipts, settlement on chain, and
 * the wallet commands. With price 0 and no priced peer used, none of it runs.
 */
import {join} from 'node:path';
import {getAddress, hexlify, randomBytes, type Wallet} from 'ethers';
import {z} from 'zod';
import {LRUCache} from 'lru-cache';
import type {Capabilities} from '../swarm/capabilities.js';
import type {NodeIdentity} from '../swarm/node-identity.js';
import type {ContributionLog} from '../ledger/contribution-log.js';
import {LedgerError} from '../ledger/ledger-error.js';
import {LEDGER_RECORD_VERSION} from '../ledger/records.js';
import {type ChannelState, channelIdOf, depositToChannel, openChannel, type PaymentOutcome, type PaymentSettings, readChannel, requestClose, withdrawFromChannel} from '../ledger/payments/channels.js';
import {PayeeBook, type SavedPayeeChannel} from '../ledger/payments/payee-book.js';
import {PayerBook, type SavedPayerChannel} from '../ledger/payments/payer-book.js';
import {dogeToWei, jobCostWei, priceWeiPerMillion, weiToDoge} from '../ledger/payments/pricing.js';
import {Redeemer} from '../ledger/payments/redeemer.js';
import {parseVoucher, signVoucher, verifyVoucher, voucherJson, type VoucherDomain} from '../ledger/payments/vouchers.js';
import {bindWallet, boundWallet} from '../ledger/payments/wallet-binding.js';
import {WalletLock} from '../ledger/wallet-lock.js';
import {JsonStateFile} from '../ledger/json-state-file.js';
import type {WalletBinding} from '../core/wallet-binding-schema.js';
import {chainProvider, shortReason} from '../ledger/anchor/chain.js';
import type {JobPayment, ProviderPayments, RequesterPayments, WireVoucher} from '../inference/remote/jobs/job-payments.js';
import type {NodeSettings} from './node-settings.js';
import type {WalletActionStatus, WalletStatus} from './node-status.js';

/** How long a channel's state read from the chain is trusted before a job reads it again. */
const CHANNEL_CACHE_MS = 30_000;
/** How often a channel is read again at most, when a refusal or a voucher asks for its latest state. */
const FRESH_READ_MS = 2_000;
/** How long a voucher may take to follow its job before the requester counts as owing (as receipts, MAX_OWED_RECEIPTS). */
const VOUCHER_GRACE_MS = 10_000;
/** An auto deposit is at least this share of `--auto-deposit`, so a channel is not topped up for every job. */
const AUTO_DEPOSIT_SHARE = 10n;

const savedSchema = z.object({
    payer: z.array(z.object({channel: z.string(), payee: z.string(), peer: z.string().nullable(), deposited: z.string(), signed: z.string(),
        redeemed: z.string(), closesAt: z.number()})).default([]),
    payee: z.array(z.object({channel: z.string(), peer: z.string(), payer: z.string(), owed: z.string(),
        voucher: z.object({amount: z.string(), signature: z.string()}).nullable()})).default([]),
    autoDeposited: z.string().default('0'),
    autoFunded: z.array(z.string()).default([]),
    opening: z.array(z.object({channel: z.string(), payee: z.string(), peer: z.string().nullable()})).default([])
});

export interface NodePaymentsOptions {
    settings: NodeSettings,
    identity: NodeIdentity,
    log: ContributionLog,
    /** The node's wallet (the one anchoring uses), or why there is none. */
    wallet: {wallet: Wallet} | {missing: string},
    /** The payment contract: `--payment-contract`, else the one `ledger deploy` stored. */
    contract: string | undefined,
    /** The wallet's lock (`NodeLedger.walletLock()`), shared with anchoring; defaults to one of these payments' own. */
    walletLock?: WalletLock,
    /** What a connected peer announced. */
    peerCapabilities: (peerId: string) => Capabilities | undefined,
    onNotice: (level: 'info' | 'warn', message: string, fields?: object) => void
}

/** Payments are off (no wallet, no contract): priced peers are not used, and this node cannot ask a price. */
export class NodePayments implements RequesterPayments, ProviderPayments {
    private readonly payer: PayerBook;
    private readonly payee: PayeeBook | undefined;
    private readonly chain: PaymentSettings | undefined;
    private readonly wallet: Wallet | undefined;
    private readonly domain: VoucherDomain | undefined;
    private readonly channelCache = new LRUCache<string, {state: ChannelState | null, at: number}>({max: 4096});
    private readonly bindings = new LRUCache<string, WalletBinding | string>({max: 4096});
    /**
     * Priced jobs' prices (wei per million tokens), each side apart: jobs this node pays for, by id, and jobs it
     * serves, by `<peer>:<id>` (job ids are the requesters' choice: one peer's must never name another's job).
     */
    private readonly payingPrices = new LRUCache<string, bigint>({max: 8192});
    private readonly servingPrices = new LRUCache<string, bigint>({max: 8192});
    /** Priced work this node serves or served lately, by key: who pays, through which channel, and its cost once known. */
    private readonly charges = new LRUCache<string, {peer: string, channel: string, cost: bigint | null, charged: boolean}>({max: 8192});
    private readonly funding = new Map<string, Promise<void>>();
    /** Channels this node sent an `open` for and has not seen on chain yet: kept, so a crash or a timeout loses none. */
    private readonly opening: Map<string, {payee: string, peer: string | null}>;
    /** Payees that refused this node as owing: its next job to each carries its latest voucher again. */
    private readonly owing = new LRUCache<string, true>({max: 1024});
    private autoDeposited: bigint;
    /** Channels `--auto-deposit` funded: only what they return frees its cap again. */
    private readonly autoFunded: Set<string>;
    private saving: Promise<void> = Promise.resolve();
    private redeemer: Redeemer | undefined;
    readonly offReason: string | null;
    private readonly ownBinding: WalletBinding | null;

    private constructor(private readonly options: NodePaymentsOptions, private readonly stateFile: JsonStateFile<typeof savedSchema>,
        saved: z.infer<typeof savedSchema>) {
        const {settings, wallet, contract, identity} = options;
        this.offReason = 'missing' in wallet ? wallet.missing
            : contract === undefined ? `no payment contract for chain ${settings.chainId}: run \`strongdoge ledger deploy\` or pass --payment-contract` : null;
        this.payer = new PayerBook(saved.payer as SavedPayerChannel[]);
        this.autoDeposited = BigInt(saved.autoDeposited);
        this.autoFunded = new Set(saved.autoFunded);
        this.opening = new Map(saved.opening.map((entry) => [entry.channel, {payee: entry.payee, peer: entry.peer}]));
        if (this.offReason === null && 'wallet' in wallet) {
            this.wallet = wallet.wallet;
            // The wallet's lock rides with the settings into every channel call and the Redeemer (ledger/wallet-lock.ts).
            this.chain = {rpcUrl: settings.chainRpc, chainId: settings.chainId, contract: getAddress(contract!), maxFeeGwei: settings.maxFeeGwei, walletLock: options.walletLock ?? new WalletLock()};
            this.domain = {chainId: settings.chainId, contract: getAddress(contract!)};
            this.payee = new PayeeBook(wallet.wallet.address, VOUCHER_GRACE_MS, saved.payee as SavedPayeeChannel[]);
            this.ownBinding = bindWallet(identity, wallet.wallet, contract!, {network: settings.network, chainId: settings.chainId});
        } else {
            this.ownBinding = null;
        }
    }

    static async open(options: NodePaymentsOptions): Promise<NodePayments> {
        // The vouchers signed and held: a damaged file stops the node, never starts it over (JsonStateFile).
        const stateFile = new JsonStateFile(join(options.settings.dataDir, 'ledger', 'payments.json'), savedSchema,
            {empty: () => savedSchema.parse({}), damagedHint: 'the vouchers signed and held are in it: restore it from a backup'});
        const payments = new NodePayments(options, stateFile, await stateFile.load());
        const {settings} = options;
        if (settings.price !== undefined && settings.price > 0 && payments.offReason !== null)
            throw LedgerError.notConfigured(`--price ${settings.price} needs payments: ${payments.offReason}`);
        if (payments.offReason === null) {
            payments.redeemer = new Redeemer({
                ...payments.chain!, wallet: payments.wallet!, log: options.log, statePath: join(options.settings.dataDir, 'ledger', 'redeem-state.json'),
                maxFeeGwei: settings.maxFeeGwei, confirmations: settings.confirmations, intervalMs: settings.redeemInterval * 1000,
                thresholdWei: dogeToWei(settings.redeemThreshold), vouchers: () => payments.redeemable()
            });
            payments.redeemer.on('redeemed', (record) => options.onNotice('info', 'redeemed vouchers', {channel: record.channel, paid: weiToDoge(BigInt(record.paid)),
                txHash: record.txHash}));
            payments.redeemer.on('failed', (error) => options.onNotice('warn', `redeeming failed; retrying: ${error.message}`, {code: error.code}));
            await payments.redeemer.start();
            void payments.reconcile().catch((error: Error) => options.onNotice('warn', `cannot read this node's channels from the chain: ${error.message}`));
            options.onNotice('info', 'payments on', {wallet: payments.wallet!.address, contract: payments.chain!.contract, price: settings.price ?? 0});
        } else {
            options.onNotice('info', `payments are off (free peers only): ${payments.offReason}`);
        }
        return payments;
    }

    /** What capabilities announce: this node's wallet, bound to its key, or null when payments are off. */
    binding() {
        return this.ownBinding;
    }

    price() {
        return this.offReason === null ? this.options.settings.price ?? 0 : 0;
    }

    // The requester's side: jobs, in tokens at the peer's price.

    cannotPay(peerId: string, capabilities: Capabilities, tokens: number): string | undefined {
        const price = capabilities.pricePerMillionTokens ?? 0;
        return price === 0 ? undefined : this.cannotPayWei(peerId, capabilities, jobCostWei(tokens, priceWeiPerMillion(price)));
    }

    async reserve(peerId: string, capabilities: Capabilities, jobId: string, tokens: number): Promise<JobPayment | undefined> {
        const price = capabilities.pricePerMillionTokens ?? 0;
        if (price === 0)
            return undefined;
        const priceWei = priceWeiPerMillion(price);
        const channel = await this.reserveWei(peerId, capabilities, jobId, jobCostWei(tokens, priceWei));
        this.payingPrices.set(jobId, priceWei);
        const signed = this.payer.get(channel)?.signed ?? 0n;
        if (!this.owing.delete(peerId) || signed === 0n)
            return {channel, pricePerMillion: price};
        return {channel, pricePerMillion: price, voucher: voucherJson(signVoucher(this.wallet!.signingKey, this.domain!, {channel, amount: signed}))};
    }

    owes(peerId: string) {
        this.owing.set(peerId, true);
    }

    async pay(peerId: string, jobId: string, tokens: number): Promise<WireVoucher | undefined> {
        const priceWei = this.payingPrices.get(jobId);
        this.payingPrices.delete(jobId);
        return priceWei === undefined ? undefined : this.payWei(peerId, jobId, jobCostWei(tokens, priceWei));
    }

    release(jobId: string) {
        this.payingPrices.delete(jobId);
        this.payer.release(jobId);
    }

    // The requester's side in wei: jobs, and a pipeline's stages (their share of the layers), by a key of 32 hex digits.

    /** Why this node cannot pay `worst` wei to the priced peer now, or undefined when it can. */
    cannotPayWei(peerId: string, capabilities: Capabilities, worst: bigint): string | undefined {
        if (this.offReason !== null)
            return `payments are off here: ${this.offReason}`;
        const binding = this.peerBinding(peerId, capabilities);
        if (typeof binding === 'string')
            return binding;
        const channel = this.payer.channelTo(binding.wallet);
        if (channel !== undefined && this.payer.left(channel) >= worst)
            return undefined;
        if (this.autoDepositLeft() >= worst - (channel === undefined ? 0n : this.payer.left(channel)))
            return undefined;
        return `no channel to it with ${weiToDoge(worst)} DOGE left for this work (${channel === undefined ? 'no channel' : `${weiToDoge(this.payer.left(channel))} DOGE left`}): `
            + `run \`strongdoge wallet deposit ${peerId.slice(0, 16)}… <DOGE>\` or set --auto-deposit`;
    }

    /** Holds `worst` wei for `key` on a channel to the peer (opening or topping one up within --auto-deposit): the channel. */
    async reserveWei(peerId: string, capabilities: Capabilities, key: string, worst: bigint): Promise<string> {
        const problem = this.cannotPayWei(peerId, capabilities, worst);
        if (problem !== undefined)
            throw LedgerError.channelRefused(problem);
        const binding = this.peerBinding(peerId, capabilities) as WalletBinding;
        let channel = this.payer.channelTo(binding.wallet);
        if (channel === undefined || this.payer.left(channel) < worst) {
            await this.autoDeposit(peerId, binding.wallet, worst);
            channel = this.payer.channelTo(binding.wallet);
        }
        if (channel === undefined || !this.payer.reserve(key, channel.channel, worst))
            throw LedgerError.channelRefused(`no channel to ${binding.wallet} covers this work's ${weiToDoge(worst)} DOGE`);
        return channel.channel;
    }

    /** `key` was served for `cost` wei: the next voucher, kept (state file, then log) before it is returned. */
    async payWei(peerId: string, key: string, cost: bigint): Promise<WireVoucher | undefined> {
        const next = this.payer.pay(key, cost);
        if (next === undefined)
            return undefined;
        const voucher = signVoucher(this.wallet!.signingKey, this.domain!, next);
        // Kept before it is sent: after a crash, the next voucher still counts up from this one.
        await this.save();
        const channel = this.payer.get(next.channel)!;
        await this.options.log.append({version: LEDGER_RECORD_VERSION, type: 'payment', at: new Date().toISOString(), peer: peerId, jobId: key,
            chainId: this.domain!.chainId, contract: this.domain!.contract, channel: next.channel, payee: channel.payee,
            amount: next.amount.toString(), cost: cost.toString()});
        return voucherJson(voucher);
    }

    // The provider's side: jobs, in tokens at the price the job offers.

    async admit(peerId: string, jobId: string, payment: JobPayment | undefined, tokens: number): Promise<string | undefined> {
        const price = this.price();
        if (price === 0)
            return undefined;
        if (payment === undefined)
            return `this node charges ${price} DOGE per million tokens: the job needs payment terms (a channel to this node's wallet ${this.wallet!.address})`;
        if (payment.pricePerMillion < price)
            return `the job offers ${payment.pricePerMillion} DOGE per million tokens; this node's price is ${price}`;
        const priceWei = priceWeiPerMillion(payment.pricePerMillion);
        // A voucher with the terms pays a debt its receipts could not (docs/architecture.md, "Payments").
        if (payment.voucher !== undefined) {
            const problem = await this.debtVoucher(peerId, jobId, payment.channel, payment.voucher);
            if (problem !== undefined)
                return `the voucher with the job's terms does not pay: ${problem}`;
        }
        const refusal = await this.admitWei(peerId, jobId, payment.channel, jobCostWei(tokens, priceWei));
        if (refusal === undefined)
            this.servingPrices.set(`${peerId}:${jobId}`, priceWei);
        return refusal;
    }

    served(peerId: string, jobId: string, tokens: number) {
        const priceWei = this.servingPrices.get(`${peerId}:${jobId}`);
        this.servingPrices.delete(`${peerId}:${jobId}`);
        if (priceWei !== undefined)
            this.servedWei(peerId, jobId, jobCostWei(tokens, priceWei));
    }

    async voucher(peerId: string, jobId: string, wire: WireVoucher | undefined): Promise<string | undefined> {
        return this.voucherFor(peerId, jobId, wire);
    }

    // The provider's side in wei, by key (a job, or a stage's receipt).

    /** Why `peerId` may not run `key` whose worst case is `worst` wei on `channel`, or undefined once it is held. */
    async admitWei(peerId: string, key: string, channel: string, worst: bigint): Promise<string | undefined> {
        if (this.offReason !== null)
            return `this node cannot be paid: ${this.offReason}`;
        const capabilities = this.options.peerCapabilities(peerId);
        const binding = capabilities === undefined ? 'the requester announced nothing' : this.peerBinding(peerId, capabilities);
        if (typeof binding === 'string')
            return `the requester's wallet is unknown: ${binding}`;
        // Keys are the peer's choice (job ids): scoped by peer, one peer's never names another's work.
        const scoped = `${peerId}:${key}`;
        let refusal = this.payee!.admit(peerId, binding.wallet, await this.channelState(channel), scoped, worst);
        // A deposit made since the last read: read the chain once more before refusing.
        if (refusal?.startsWith('the channel\'s deposit') === true || refusal?.startsWith('the payment channel named does not exist') === true)
            refusal = this.payee!.admit(peerId, binding.wallet, await this.channelState(channel, true), scoped, worst);
        if (refusal === undefined)
            this.charges.set(scoped, {peer: peerId, channel, cost: null, charged: false});
        return refusal;
    }

    /**
     * `key` ended having served `cost` wei (0 without a result): its worst case is freed, and the peer owes the cost
     * once the receipt comes (`voucherFor`). Work whose receipt never comes is not charged: a requester that gave up
     * before the answer reached it owes nothing, and one that keeps back receipts is refused by the receipt rules.
     */
    servedWei(peerId: string, key: string, cost: bigint) {
        const charge = this.charges.get(`${peerId}:${key}`);
        if (charge === undefined)
            return;
        charge.cost = cost;
        this.payee!.served(`${peerId}:${key}`, 0n);
    }

    /** The voucher that came with `key`'s receipt: why it does not pay, or undefined once it is kept (state file, log). */
    async voucherFor(peerId: string, key: string, wire: WireVoucher | undefined): Promise<string | undefined> {
        const scoped = `${peerId}:${key}`;
        const charge = this.charges.get(scoped);
        if (charge === undefined || charge.cost === null)
            return undefined; // free work: a voucher with it pays for nothing
        const {cost} = charge;
        // Charged once, with its receipt (a receipt sent again brings its voucher again).
        if (!charge.charged) {
            charge.charged = true;
            this.payee!.charge(charge.channel, scoped, cost);
            void this.save().catch((error: Error) => this.options.onNotice('warn', `cannot save the payment state: ${error.message}`));
        }
        if (wire === undefined) {
            if (cost === 0n)
                return undefined;
            this.payee!.missingVoucher(peerId);
            return `the receipt of priced work (${weiToDoge(cost)} DOGE) came without a voucher`;
        }
        try {
            return await this.keepVoucher(peerId, charge.channel, wire, {jobId: key, cost}, scoped);
        } catch (error) {
            if (!(error instanceof LedgerError))
                throw error;
            // A bad voucher is the peer's debt at once; this node's own trouble (the chain, its disk) is not.
            if (error.code === 'INVALID_VOUCHER')
                this.payee!.missingVoucher(peerId);
            return error.message;
        }
    }

    /** A voucher the peer sent with a job's terms for a channel it pays through: why it does not pay, or undefined once kept. */
    private async debtVoucher(peerId: string, jobId: string, channelId: string, wire: WireVoucher): Promise<string | undefined> {
        try {
            // Recorded with the job whose terms brought it, costing nothing of its own; held to all that is owed.
            return await this.keepVoucher(peerId, channelId, wire, {jobId, cost: 0n});
        } catch (error) {
            if (!(error instanceof LedgerError))
                throw error;
            return error.message;
        }
    }

    /**
     * Checks a peer's voucher for `channelId` (signed by its payer for this chain and contract; the deposit read
     * again when the voucher is above it) and keeps it when it is above the one held (the state file, then a
     * `voucher` record for `record.jobId`), which may start a redeem. Why it does not pay what it must (the work up to
     * `scoped`, else all owed), or undefined; INVALID_VOUCHER for one that is not the payer's.
     */
    private async keepVoucher(peerId: string, channelId: string, wire: WireVoucher, record: {jobId: string, cost: bigint}, scoped?: string) {
        const channel = this.payee!.get(channelId);
        if (channel === undefined || channel.peer !== peerId)
            return `a voucher for channel ${channelId}, which this peer never paid this node through`;
        const voucher = parseVoucher(wire);
        if (voucher.channel !== channelId)
            throw LedgerError.invalidVoucher(`a voucher for channel ${voucher.channel}, not ${channelId}`);
        verifyVoucher(this.domain!, voucher, channel.payer);
        if (voucher.amount > channel.deposited) {
            const state = await this.channelState(channelId, true);
            if (state !== null)
                this.payee!.refresh(state);
        }
        const before = channel.voucher?.amount ?? 0n;
        const problem = this.payee!.voucher(peerId, voucher, scoped);
        if ((channel.voucher?.amount ?? 0n) > before) {
            await this.save();
            await this.options.log.append({version: LEDGER_RECORD_VERSION, type: 'voucher', at: new Date().toISOString(), peer: peerId, jobId: record.jobId,
                chainId: this.domain!.chainId, contract: this.domain!.contract, channel: channelId, payer: channel.payer,
                amount: voucher.amount.toString(), cost: record.cost.toString(), signature: voucher.signature});
            this.redeemer?.voucherArrived();
        }
        return problem;
    }

    /** The latest voucher of each channel paying this node: what the redeemer redeems. */
    private redeemable() {
        return (this.payee?.all() ?? []).filter((channel) => channel.voucher !== null)
            .map((channel) => ({voucher: channel.voucher!, payer: channel.payer}));
    }

    // The wallet commands.

    async describe(): Promise<WalletStatus> {
        const {settings} = this.options;
        let balance: string | null = null;
        let chainError: string | null = null;
        if (this.wallet !== undefined && this.chain !== undefined) {
            const provider = chainProvider(this.chain);
            try {
                balance = weiToDoge(await provider.getBalance(this.wallet.address));
            } catch (error) {
                chainError = shortReason(error);
            } finally {
                provider.destroy();
            }
        }
        const redeemer = this.redeemer?.status();
        const closes = (at: number) => (at === 0 ? null : new Date(at * 1000).toISOString());
        return {
            address: this.wallet?.address ?? null, offReason: this.offReason, chainId: settings.chainId, contract: this.chain?.contract ?? null,
            balance, chainError, price: this.price(),
            ...this.totals(),
            autoDeposit: {cap: weiToDoge(this.autoDepositCap()), used: weiToDoge(this.autoDeposited)},
            paying: this.payer.all().map((channel) => ({peer: channel.peer, channel: channel.channel, payee: channel.payee,
                deposited: weiToDoge(channel.deposited), paid: weiToDoge(channel.signed), redeemed: weiToDoge(channel.redeemed), closesAt: closes(channel.closesAt)})),
            paidBy: (this.payee?.all() ?? []).map((channel) => ({peer: channel.peer, channel: channel.channel, payer: channel.payer,
                deposited: weiToDoge(channel.deposited), vouched: weiToDoge(channel.voucher?.amount ?? 0n), owed: weiToDoge(channel.owed),
                redeemed: weiToDoge(this.redeemer?.redeemedOf(channel.channel) ?? channel.redeemed), closesAt: closes(channel.closesAt)})),
            redeeming: {
                intervalSeconds: settings.redeemInterval, threshold: weiToDoge(dogeToWei(settings.redeemThreshold)),
                pending: (redeemer?.pending ?? []).map((entry) => ({channel: entry.channel, txHash: entry.txHash, amount: weiToDoge(entry.amount)})),
                lastRedeem: redeemer?.lastRedeem ? {at: redeemer.lastRedeem.at, txHash: redeemer.lastRedeem.txHash, channel: redeemer.lastRedeem.channel,
                    paid: weiToDoge(BigInt(redeemer.lastRedeem.paid))} : null,
                lastError: redeemer?.lastError ?? null, nextAttemptAt: redeemer?.nextAttemptAt ?? null
            }
        };
    }

    /** DOGE earned (redeemed), owed to this node, paid (vouchers signed) and deposited, for the dashboard; null when off. */
    summary() {
        return this.offReason === null ? this.totals() : null;
    }

    act(action: 'deposit' | 'redeem' | 'close' | 'withdraw', body: {peer?: string, amount?: string}): Promise<WalletActionStatus> {
        switch (action) {
            case 'deposit':
                return this.deposit(body.peer ?? '', body.amount ?? '');
            case 'redeem':
                return this.redeemNow();
            case 'close':
                return this.close(body.peer ?? '');
            case 'withdraw':
                return this.withdraw(body.peer ?? '');
        }
    }

    /** Opens a channel to the peer's bound wallet with `doge`, or tops up the open one. */
    async deposit(peerId: string, doge: string): Promise<WalletActionStatus> {
        const {wallet, chain} = this.on();
        const amount = dogeToWei(doge);
        if (amount === 0n)
            throw LedgerError.invalidRequest('deposit more than 0 DOGE');
        const payee = this.payeeWallet(peerId);
        return {transactions: [await this.fund(peerId, payee, amount, wallet, chain)]};
    }

    async redeemNow(): Promise<WalletActionStatus> {
        this.on();
        const records = await this.redeemer!.redeemNow();
        return {transactions: records.map((record) => ({action: 'redeem' as const, channel: record.channel, txHash: record.txHash,
            amount: weiToDoge(BigInt(record.paid)), gasUsed: null}))};
    }

    /** Asks to close every open channel to the peer: after the challenge period, `withdraw` returns what was not redeemed. */
    async close(peerId: string): Promise<WalletActionStatus> {
        const {wallet, chain} = this.on();
        const channels = this.channelsTo(peerId).filter((channel) => channel.closesAt === 0);
        if (channels.length === 0)
            throw LedgerError.invalidRequest(`no open channel to ${peerId.slice(0, 16)}…`);
        const transactions = [];
        for (const channel of channels) {
            const outcome = await requestClose(chain, wallet, channel.channel);
            await this.refreshPayer(channel.channel);
            transactions.push({action: 'close' as const, channel: channel.channel, txHash: outcome.txHash, amount: null, gasUsed: Number(outcome.gasUsed)});
        }
        await this.save();
        return {transactions};
    }

    /** Withdraws what the peer's closed channels hold beyond what was redeemed, once their challenge period is over. */
    async withdraw(peerId: string): Promise<WalletActionStatus> {
        const {wallet, chain} = this.on();
        const closing = this.channelsTo(peerId).filter((channel) => channel.closesAt !== 0);
        if (closing.length === 0)
            throw LedgerError.invalidRequest(`no closing channel to ${peerId.slice(0, 16)}…: run \`strongdoge wallet close\` first`);
        const transactions = [];
        const waiting: string[] = [];
        for (const channel of closing) {
            const before = await this.refreshPayer(channel.channel);
            // Each channel on its own: one withdrawn already, or still in its challenge period, does not hold back the others.
            if (before === null || before.deposited === before.redeemed)
                continue;
            let outcome: PaymentOutcome;
            try {
                outcome = await withdrawFromChannel(chain, wallet, channel.channel);
            } catch (error) {
                // The chain's clock decides: a channel still in its challenge period is refused, and the others go on.
                if (!(error instanceof LedgerError) || error.code !== 'CHANNEL_REFUSED')
                    throw error;
                waiting.push(`${channel.channel.slice(0, 10)}… (from ${new Date(before.closesAt * 1000).toISOString()}: ${error.message})`);
                continue;
            }
            await this.refreshPayer(channel.channel);
            const returned = before.deposited - before.redeemed;
            // What comes back may be deposited on this node's own again (--auto-deposit caps what is out at once).
            if (this.autoFunded.has(channel.channel))
                this.autoDeposited = this.autoDeposited > returned ? this.autoDeposited - returned : 0n;
            transactions.push({action: 'withdraw' as const, channel: channel.channel, txHash: outcome.txHash, amount: weiToDoge(returned),
                gasUsed: Number(outcome.gasUsed)});
        }
        await this.save();
        if (transactions.length === 0)
            throw LedgerError.channelRefused(waiting.length > 0
                ? `nothing to withdraw yet: ${waiting.join('; ')}`
                : `nothing left to withdraw from the channels to ${peerId.slice(0, 16)}…`);
        return {transactions};
    }

    async stop() {
        this.redeemer?.stop();
        await this.saving;
    }

    // Inside.

    private on() {
        if (this.offReason !== null)
            throw LedgerError.notConfigured(`payments are off: ${this.offReason}`);
        return {wallet: this.wallet!, chain: this.chain!};
    }

    /** DOGE earned (redeemed), owed to this node, paid (vouchers signed) and deposited. */
    private totals() {
        let earned = 0n;
        let owed = 0n;
        for (const channel of this.payee?.all() ?? []) {
            const redeemed = this.redeemer?.redeemedOf(channel.channel) ?? channel.redeemed;
            const vouched = channel.voucher?.amount ?? 0n;
            earned += redeemed;
            owed += (vouched > channel.owed ? vouched : channel.owed) - redeemed;
        }
        let paid = 0n;
        let deposited = 0n;
        for (const channel of this.payer.all()) {
            paid += channel.signed;
            deposited += channel.deposited;
        }
        return {earned: weiToDoge(earned), owed: weiToDoge(owed < 0n ? 0n : owed), paid: weiToDoge(paid), deposited: weiToDoge(deposited)};
    }

    /** A peer's bound wallet, checked (and the check cached per binding), or why there is none usable. */
    private peerBinding(peerId: string, capabilities: Capabilities): WalletBinding | string {
        const announced = capabilities.payment;
        if (announced === undefined || announced === null)
            return 'the peer announces no payment wallet';
        const key = `${peerId}:${announced.nodeSignature}`;
        let binding = this.bindings.get(key);
        if (binding === undefined) {
            try {
                binding = boundWallet(peerId, announced, {network: this.options.settings.network, chainId: this.options.settings.chainId});
            } catch (error) {
                binding = (error as Error).message;
            }
            this.bindings.set(key, binding);
        }
        if (typeof binding !== 'string' && this.domain !== undefined && binding.contract !== this.domain.contract)
            return `the peer is paid through another payment contract (${binding.contract})`;
        return binding;
    }

    private payeeWallet(peerId: string) {
        const capabilities = this.options.peerCapabilities(peerId);
        const known = this.payer.all().find((channel) => channel.peer === peerId)?.payee;
        if (capabilities === undefined) {
            if (known !== undefined)
                return known;
            throw LedgerError.invalidRequest(`peer ${peerId.slice(0, 16)}… is not connected, and this node never paid it: its wallet is unknown`);
        }
        const binding = this.peerBinding(peerId, capabilities);
        if (typeof binding === 'string')
            throw LedgerError.invalidRequest(`cannot pay peer ${peerId.slice(0, 16)}…: ${binding}`);
        return binding.wallet;
    }

    private channelsTo(peerId: string) {
        let wallet: string | undefined;
        try {
            wallet = this.payeeWallet(peerId);
        } catch {
            wallet = undefined;
        }
        return this.payer.all().filter((channel) => channel.peer === peerId || channel.payee === wallet);
    }

    private autoDepositCap() {
        return this.options.settings.autoDeposit === undefined ? 0n : dogeToWei(this.options.settings.autoDeposit);
    }

    private autoDepositLeft() {
        const left = this.autoDepositCap() - this.autoDeposited;
        return left > 0n ? left : 0n;
    }

    /** Opens or tops up a channel to `payee` on this node's own, within `--auto-deposit`; one at a time per payee. */
    private async autoDeposit(peerId: string, payee: string, worst: bigint) {
        const running = this.funding.get(payee);
        if (running !== undefined) {
            await running;
            const channel = this.payer.channelTo(payee);
            if (channel !== undefined && this.payer.left(channel) >= worst)
                return;
        }
        const channel = this.payer.channelTo(payee);
        const need = worst - (channel === undefined ? 0n : this.payer.left(channel));
        const share = this.autoDepositCap() / AUTO_DEPOSIT_SHARE;
        const wanted = need > share ? need : share;
        const left = this.autoDepositLeft();
        const amount = wanted < left ? wanted : left;
        if (amount < need || amount === 0n)
            throw LedgerError.channelRefused(`--auto-deposit has ${weiToDoge(left)} DOGE left, less than the ${weiToDoge(need)} DOGE this work needs`);
        const {wallet, chain} = this.on();
        const work = (async () => {
            this.autoDeposited += amount;
            try {
                const outcome = await this.fund(peerId, payee, amount, wallet, chain, true);
                this.options.onNotice('info', `deposited ${weiToDoge(amount)} DOGE for ${peerId.slice(0, 8)} (--auto-deposit)`, {channel: outcome.channel, txHash: outcome.txHash});
            } catch (error) {
                this.autoDeposited -= amount;
                await this.save();
                throw error;
            }
        })();
        this.funding.set(payee, work.then(() => undefined, () => undefined));
        try {
            await work;
        } finally {
            this.funding.delete(payee);
        }
    }

    /** Opens a channel to `payee` with `amount`, or tops up the open one; `auto`: on this node's own (`--auto-deposit`). */
    private async fund(peerId: string, payee: string, amount: bigint, wallet: Wallet, chain: PaymentSettings, auto = false) {
        const open = this.payer.channelTo(payee);
        let outcome: PaymentOutcome & {channel: string, action: 'open' | 'deposit'};
        if (open === undefined) {
            // The channel's id is known before it is opened, and kept: after a crash or a timeout, `reconcile` finds it.
            const salt = hexlify(randomBytes(32));
            const channel = channelIdOf(wallet.address, payee, salt).toLowerCase();
            this.opening.set(channel, {payee: getAddress(payee), peer: peerId});
            await this.save();
            outcome = {...await openChannel(chain, wallet, payee, amount, salt), action: 'open' as const};
        } else {
            outcome = {...await depositToChannel(chain, wallet, open.channel, amount), channel: open.channel, action: 'deposit' as const};
        }
        const channel = outcome.channel.toLowerCase();
        const state = await readChannel(chain, channel);
        if (state !== null) {
            this.payer.track(state, peerId);
            this.opening.delete(channel);
        }
        if (auto)
            this.autoFunded.add(channel);
        await this.save();
        return {action: outcome.action, channel, txHash: outcome.txHash, amount: weiToDoge(amount), gasUsed: Number(outcome.gasUsed)};
    }

    /**
     * The chain's view of the channels this node pays through, at start: deposits made before a crash count, and a
     * channel whose `open` was sent but not seen is tracked once the chain has it.
     */
    private async reconcile() {
        for (const channel of this.payer.all())
            if (channel.closesAt === 0 || channel.deposited > channel.redeemed)
                await this.refreshPayer(channel.channel);
        for (const [channel, entry] of [...this.opening]) {
            const state = await readChannel(this.chain!, channel);
            if (state === null)
                continue; // not mined (yet): looked for again at the next start
            this.payer.track(state, entry.peer);
            this.opening.delete(channel);
        }
        await this.save();
    }

    private async refreshPayer(channel: string) {
        const state = await readChannel(this.chain!, channel);
        if (state !== null)
            this.payer.track(state, null);
        return state;
    }

    /** A channel's state from the chain, cached CHANNEL_CACHE_MS unless `fresh`. */
    private async channelState(channel: string, fresh = false): Promise<ChannelState | null> {
        const cached = this.channelCache.get(channel);
        // Read again when asked, but a peer naming channels cannot make this node read one more than every few seconds.
        if (cached !== undefined && Date.now() - cached.at < (fresh ? FRESH_READ_MS : CHANNEL_CACHE_MS))
            return cached.state;
        const state = await readChannel(this.chain!, channel);
        this.channelCache.set(channel, {state, at: Date.now()});
        if (state !== null)
            this.payee?.refresh(state);
        return state;
    }

    /** Written whole or not at all, one write at a time, in order. */
    private save(): Promise<void> {
        const state = {payer: this.payer.save(), payee: this.payee?.save() ?? [], autoDeposited: this.autoDeposited.toString(),
            autoFunded: [...this.autoFunded], opening: [...this.opening].map(([channel, entry]) => ({channel, ...entry}))};
        this.saving = this.saving.catch(() => undefined).then(() => this.stateFile.save(state));
        return this.saving;
    }
}
