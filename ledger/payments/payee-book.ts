/**
 * What peers owe this node, channel by channel (docs/architecture.md, "Payments"): the chain's view of each channel
 * (read, cached), the highest voucher held, the work served on it, and the worst case of the jobs still running.
 * Pure: the node reads the chain and keeps the vouchers; this decides what is admitted and what is owed.
 */
import {getAddress} from 'ethers';
import {weiToDoge} from './pricing.js';
import type {SignedVoucher} from './vouchers.js';
import type {ChannelState} from './channels.js';

export interface PayeeChannel {
    channel: string,
    /** The node paying through the channel, and its bound wallet (the channel's payer). */
    peer: string,
    payer: string,
    /** The chain's view, as last read. */
    deposited: bigint,
    redeemed: bigint,
    closesAt: number,
    /** The highest voucher held, or null. */
    voucher: SignedVoucher | null,
    /** What the work served through the channel costs, in all: what the vouchers must reach. */
    owed: bigint,
    /** Since when (ms) work served was not covered by a voucher, or null while it is. */
    unpaidSince: number | null,
    /** A voucher came short (or stale): the debt counts at once, not after the grace. */
    short: boolean,
    /**
     * Work served that no voucher covers yet, oldest first: what was owed once each was served, and when. A voucher
     * is held to the work up to its own job's, not to later work whose vouchers are still on their way.
     */
    uncovered: {key: string, owedAfter: bigint, at: number}[]
}

/** Uncovered work kept per channel: a requester that stops paying is refused after the grace, long before this. */
const MAX_UNCOVERED = 1024;

/** The part of a channel kept across restarts. */
export interface SavedPayeeChannel {
    channel: string, peer: string, payer: string, owed: string, voucher: {amount: string, signature: string} | null
}

export class PayeeBook {
    private readonly channels = new Map<string, PayeeChannel>();
    /** Jobs running, by id: their channel and the worst case held for them. */
    private readonly reserved = new Map<string, {channel: string, worst: bigint}>();

    /** `wallet`: this node's own, which every channel must pay; `graceMs`: how long a voucher may take to follow its job. */
    constructor(private readonly wallet: string, private readonly graceMs: number, saved: SavedPayeeChannel[] = []) {
        for (const entry of saved)
            this.channels.set(entry.channel, {
                channel: entry.channel, peer: entry.peer, payer: entry.payer, deposited: 0n, redeemed: 0n, closesAt: 0,
                voucher: entry.voucher === null ? null : {channel: entry.channel, amount: BigInt(entry.voucher.amount), signature: entry.voucher.signature},
                owed: BigInt(entry.owed), unpaidSince: null, short: false, uncovered: []
            });
        for (const channel of this.channels.values())
            if (channel.owed > (channel.voucher?.amount ?? 0n))
                channel.unpaidSince = 0; // owed before a restart: due at once
    }

    get(channel: string) {
        return this.channels.get(channel);
    }

    all() {
        return [...this.channels.values()];
    }

    /** Why `peer` (paying from `payerWallet`) may not run a job whose worst case is `worst` on `state`, or undefined once it is held. */
    admit(peer: string, payerWallet: string, state: ChannelState | null, jobId: string, worst: bigint, now = Date.now()): string | undefined {
        if (state === null)
            return 'the payment channel named does not exist on the payment contract';
        if (getAddress(state.payee) !== getAddress(this.wallet))
            return `the channel pays ${state.payee}, not this node's wallet ${this.wallet}`;
        if (getAddress(state.payer) !== getAddress(payerWallet))
            return `the channel's payer ${state.payer} is not the wallet the requester announces (${payerWallet})`;
        if (state.closesAt !== 0)
            return 'the channel is closing: open another';
        const debt = this.debt(peer, now);
        if (debt !== undefined)
            return debt;
        // One node per channel: debts are counted per node, so a wallet's second node may not run up the first's channel.
        const known = this.channels.get(state.channel);
        if (known !== undefined && known.peer !== peer)
            return 'the channel pays for another node\'s jobs: open one of this node\'s own';
        const channel = this.upsert(peer, state);
        const held = [...this.reserved.values()].filter((entry) => entry.channel === channel.channel).reduce((sum, entry) => sum + entry.worst, 0n);
        const spent = channel.owed > (channel.voucher?.amount ?? 0n) ? channel.owed : channel.voucher?.amount ?? 0n;
        const left = channel.deposited - spent - held;
        if (left < worst)
            return `the channel's deposit leaves ${weiToDoge(left < 0n ? 0n : left)} DOGE, less than this job's worst case of ${weiToDoge(worst)} DOGE: deposit more`;
        this.reserved.set(jobId, {channel: channel.channel, worst});
        return undefined;
    }

    /** The job ended having served work worth `cost` (0 without a result): what the peer owes grows by it. */
    served(jobId: string, cost: bigint, now = Date.now()) {
        const entry = this.reserved.get(jobId);
        this.reserved.delete(jobId);
        if (entry !== undefined)
            this.charge(entry.channel, jobId, cost, now);
    }

    /** Work on `channel` worth `cost`, acknowledged by its receipt: what the peer owes grows by it. */
    charge(channel: string, key: string, cost: bigint, now = Date.now()) {
        const entry = this.channels.get(channel);
        // What is owed only grows: a negative cost (a caller's bug) must not forgive work served.
        if (entry === undefined || cost <= 0n)
            return;
        entry.owed += cost;
        if (entry.owed > (entry.voucher?.amount ?? 0n))
            entry.unpaidSince ??= now;
        entry.uncovered.push({key, owedAfter: entry.owed, at: now});
        if (entry.uncovered.length > MAX_UNCOVERED)
            entry.uncovered.shift();
    }

    /** Whether a job is held on a channel (it was admitted as priced). */
    channelOf(jobId: string) {
        return this.reserved.get(jobId)?.channel;
    }

    /**
     * A voucher `peer` sent (its signature already checked against the channel's payer) with the receipt of `key`:
     * why it does not pay the work up to that job's, or undefined once it does (without `key`: all work served). A
     * higher voucher is kept even when it comes short.
     */
    voucher(peer: string, voucher: SignedVoucher, key?: string): string | undefined {
        const channel = this.channels.get(voucher.channel);
        if (channel === undefined || channel.peer !== peer)
            return `a voucher for channel ${voucher.channel}, which this peer never paid this node through`;
        if (voucher.amount > channel.deposited) {
            // Unredeemable, so it pays nothing: while work is owed, that is a voucher missing.
            if (channel.owed > (channel.voucher?.amount ?? 0n))
                channel.short = true;
            return `a voucher of ${weiToDoge(voucher.amount)} DOGE, beyond the channel's deposit of ${weiToDoge(channel.deposited)} DOGE`;
        }
        const held = channel.voucher?.amount ?? 0n;
        // What this voucher must reach: the work up to its own job's. A job covered already (by a later voucher that
        // came first) needs nothing more; one never seen (a restart) needs all that is owed.
        const job = key === undefined ? undefined : channel.uncovered.find((entry) => entry.key === key);
        const required = job?.owedAfter ?? (key !== undefined && channel.owed <= held ? held : channel.owed);
        if (voucher.amount <= held) {
            if (required <= held)
                return undefined;
            channel.short = true;
            return `a voucher of ${weiToDoge(voucher.amount)} DOGE, not above the ${weiToDoge(held)} DOGE held already: it pays nothing of the ${weiToDoge(required - held)} DOGE owed`;
        }
        channel.voucher = voucher;
        channel.uncovered = channel.uncovered.filter((entry) => entry.owedAfter > voucher.amount);
        if (voucher.amount >= required) {
            if (channel.uncovered.length === 0 || voucher.amount >= channel.owed) {
                channel.short = false;
                channel.uncovered = [];
            }
            channel.unpaidSince = voucher.amount >= channel.owed ? null : channel.uncovered[0]?.at ?? channel.unpaidSince;
            return undefined;
        }
        channel.short = true;
        return `a voucher of ${weiToDoge(voucher.amount)} DOGE for work worth ${weiToDoge(required)} DOGE: ${weiToDoge(required - voucher.amount)} DOGE short`;
    }

    /** A job whose receipt came without a voucher although it cost something: the debt counts at once. */
    missingVoucher(peer: string) {
        for (const channel of this.channels.values())
            if (channel.peer === peer && channel.owed > (channel.voucher?.amount ?? 0n))
                channel.short = true;
    }

    /** Why `peer` gets no job until it pays (vouchers short, or overdue past the grace), or undefined. */
    debt(peer: string, now = Date.now()): string | undefined {
        for (const channel of this.channels.values()) {
            if (channel.peer !== peer)
                continue;
            const held = channel.voucher?.amount ?? 0n;
            if (channel.owed <= held)
                continue;
            if (channel.short || (channel.unpaidSince !== null && now - channel.unpaidSince > this.graceMs))
                return `owes ${weiToDoge(channel.owed - held)} DOGE for jobs served on channel ${channel.channel.slice(0, 10)}…: send a voucher of ${weiToDoge(channel.owed)} DOGE first`;
        }
        return undefined;
    }

    /** The chain's view of a channel, as read now. */
    refresh(state: ChannelState) {
        const channel = this.channels.get(state.channel);
        if (channel === undefined)
            return;
        channel.deposited = state.deposited;
        channel.redeemed = state.redeemed;
        channel.closesAt = state.closesAt;
    }

    /** What is kept across restarts: who pays through which channel, the work served and the highest voucher. */
    save(): SavedPayeeChannel[] {
        return this.all().map(({channel, peer, payer, owed, voucher}) => ({
            channel, peer, payer, owed: owed.toString(), voucher: voucher === null ? null : {amount: voucher.amount.toString(), signature: voucher.signature}
        }));
    }

    private upsert(peer: string, state: ChannelState) {
        let channel = this.channels.get(state.channel);
        if (channel === undefined) {
            channel = {channel: state.channel, peer, payer: getAddress(state.payer), deposited: 0n, redeemed: 0n, closesAt: 0, voucher: null, owed: 0n,
                unpaidSince: null, short: false, uncovered: []};
            this.channels.set(state.channel, channel);
        }
        this.refresh(state);
        return channel;
    }
}
