/**
 * What this node pays its payees, channel by channel (docs/architecture.md, "Payments"): each channel's deposit,
 * the cumulative amount its vouchers signed, and the worst case of the jobs running on it. Pure: the node opens and
 * tops up channels on chain and signs the vouchers; this says which channel pays and how much the next voucher is.
 */
import {getAddress} from 'ethers';

export interface PayerChannel {
    channel: string,
    /** The payee's wallet, and its node when known. */
    payee: string,
    peer: string | null,
    deposited: bigint,
    /** The cumulative amount signed in vouchers: never lowered, across restarts too. */
    signed: bigint,
    /** What the chain says was redeemed, as last read. */
    redeemed: bigint,
    closesAt: number
}

export interface SavedPayerChannel {
    channel: string, payee: string, peer: string | null, deposited: string, signed: string, redeemed: string, closesAt: number
}

export class PayerBook {
    private readonly channels = new Map<string, PayerChannel>();
    private readonly reserved = new Map<string, {channel: string, worst: bigint}>();

    constructor(saved: SavedPayerChannel[] = []) {
        for (const entry of saved)
            this.channels.set(entry.channel, {...entry, deposited: BigInt(entry.deposited), signed: BigInt(entry.signed), redeemed: BigInt(entry.redeemed)});
    }

    all() {
        return [...this.channels.values()];
    }

    get(channel: string) {
        return this.channels.get(channel);
    }

    /** The open channel to `payee` with the most left, if any. */
    channelTo(payee: string): PayerChannel | undefined {
        const wallet = getAddress(payee);
        return this.all().filter((channel) => channel.payee === wallet && channel.closesAt === 0).sort((a, b) => (this.left(b) > this.left(a) ? 1 : -1))[0];
    }

    /** What the channel can still pay: its deposit less what was signed and what running jobs hold. */
    left(channel: PayerChannel) {
        let held = 0n;
        for (const entry of this.reserved.values())
            if (entry.channel === channel.channel)
                held += entry.worst;
        return channel.deposited - channel.signed - held;
    }

    /**
     * A channel opened, or its chain state read: deposit, redemption, close. What was redeemed was signed, so it is a
     * floor for `signed`: a next voucher below it would be refused (`AlreadyRedeemed`), had this book lost its state.
     */
    track(state: {channel: string, payee: string, deposited: bigint, redeemed: bigint, closesAt: number}, peer: string | null) {
        const known = this.channels.get(state.channel);
        const signed = known?.signed ?? 0n;
        this.channels.set(state.channel, {
            channel: state.channel, payee: getAddress(state.payee), peer: peer ?? known?.peer ?? null, deposited: state.deposited,
            signed: state.redeemed > signed ? state.redeemed : signed, redeemed: state.redeemed, closesAt: state.closesAt
        });
    }

    /** Holds `worst` for the job on `channel`; false when the channel cannot cover it. */
    reserve(jobId: string, channel: string, worst: bigint): boolean {
        const entry = this.channels.get(channel);
        if (entry === undefined || entry.closesAt !== 0 || this.left(entry) < worst)
            return false;
        this.reserved.set(jobId, {channel, worst});
        return true;
    }

    /**
     * The job was served, costing `cost`: the channel's next cumulative amount, or undefined when it costs nothing
     * (nor for a negative cost, a caller's bug: the cumulative amount is never lowered).
     */
    pay(jobId: string, cost: bigint): {channel: string, amount: bigint} | undefined {
        const entry = this.reserved.get(jobId);
        this.reserved.delete(jobId);
        const channel = entry && this.channels.get(entry.channel);
        if (channel === undefined || cost <= 0n)
            return undefined;
        // Never more than was held for it: whatever a caller computed, a job's voucher stays within its worst case.
        channel.signed += cost < entry!.worst ? cost : entry!.worst;
        return {channel: channel.channel, amount: channel.signed};
    }

    release(jobId: string) {
        this.reserved.delete(jobId);
    }

    save(): SavedPayerChannel[] {
        return this.all().map((channel) => ({...channel, deposited: channel.deposited.toString(), signed: channel.signed.toString(),
            redeemed: channel.redeemed.toString()}));
    }
}
