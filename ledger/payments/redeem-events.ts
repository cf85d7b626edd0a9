/**
 * The payment contract's `Redeemed` events, read in bounded pages as the anchors are (ledger/anchor/anchor-events.ts):
 * what `verify` checks a log's `redeem` records against (docs/architecture.md, "Settlement"). Only the channels
 * asked for (topic 1, at most 32 a filter) or one payee's (topic 3) are read, so nobody else's events are.
 */
import {Interface, type JsonRpcProvider, type Log, zeroPadValue} from 'ethers';
import {type EventReadSettings, eventReadDefaults, PagedLogReader} from '../anchor/anchor-events.js';
import {withChain} from '../anchor/chain.js';
import {paymentChannelsAbi} from '../generated/payment-channels.js';
import {LedgerError} from '../ledger-error.js';

const PAYMENT_CHANNELS = new Interface(paymentChannelsAbi);
const REDEEMED_TOPIC = PAYMENT_CHANNELS.getEvent('Redeemed')!.topicHash;
/** Channels named in one filter: topics are ORed, and RPCs bound a filter's size. */
const CHANNELS_PER_FILTER = 32;

export interface RedeemedEvent {
    channel: string,
    payer: string,
    payee: string,
    /** What this redeem paid, in wei. */
    paid: bigint,
    /** The channel's cumulative amount redeemed after it (the voucher's amount), in wei. */
    redeemed: bigint,
    blockNumber: number,
    logIndex: number,
    txHash: string
}

/** The `Redeemed` events read, up to `confirmedBlock`, on one chain and contract. */
export interface ChainRedeems {
    chainId: number,
    contract: string,
    /** The last block read: the head less the confirmation depth. */
    confirmedBlock: number,
    /** In chain order. */
    redeems: RedeemedEvent[],
    reads: {calls: number, events: number},
    /** Why reading stopped before `confirmedBlock`, or null. */
    incomplete: string | null
}

/** Whose redeems to read: the channels a log's records name, or every redeem paid to one address. */
export type RedeemFilter = {channels: readonly string[]} | {payee: string};

function redeemedEvent(log: Log): RedeemedEvent[] {
    let parsed: ReturnType<Interface['parseLog']>;
    try {
        parsed = PAYMENT_CHANNELS.parseLog({topics: [...log.topics], data: log.data});
    } catch {
        return [];
    }
    if (parsed?.name !== 'Redeemed')
        return [];
    const [channel, payer, payee, paid, redeemed] = parsed.args;
    return [{channel: String(channel).toLowerCase(), payer: String(payer), payee: String(payee), paid: BigInt(paid), redeemed: BigInt(redeemed),
        blockNumber: log.blockNumber, logIndex: log.index, txHash: log.transactionHash}];
}

/** Reads the `Redeemed` events of `filter` on a provider whose chain id was checked. */
export async function readRedeemedEventsOn(provider: JsonRpcProvider, options: EventReadSettings, filter: RedeemFilter): Promise<ChainRedeems> {
    const settings = {...eventReadDefaults, ...options};
    const reader = new PagedLogReader(provider, settings.contract, settings);
    const confirmedBlock = await provider.getBlockNumber() - settings.confirmations + 1;
    const result: ChainRedeems = {chainId: settings.chainId, contract: settings.contract, confirmedBlock, redeems: [], reads: reader.reads, incomplete: null};
    const topicSets: (string | string[] | null)[][] = [];
    if ('payee' in filter) {
        topicSets.push([REDEEMED_TOPIC, null, null, zeroPadValue(filter.payee.toLowerCase(), 32)]);
    } else {
        const channels = [...new Set(filter.channels.map((channel) => channel.toLowerCase()))];
        if (channels.some((channel) => !/^0x[0-9a-f]{64}$/.test(channel)))
            throw LedgerError.invalidRequest('a channel to read redeems of is not 32 bytes of hex');
        for (let index = 0; index < channels.length; index += CHANNELS_PER_FILTER)
            topicSets.push([REDEEMED_TOPIC, channels.slice(index, index + CHANNELS_PER_FILTER)]);
    }
    for (const topics of topicSets) {
        if (confirmedBlock < settings.fromBlock || reader.incomplete !== null)
            break;
        result.redeems.push(...(await reader.read(topics, settings.fromBlock, confirmedBlock)).flatMap(redeemedEvent));
    }
    result.redeems.sort((a, b) => a.blockNumber - b.blockNumber || a.logIndex - b.logIndex);
    result.incomplete = reader.incomplete;
    return result;
}

/** Reads the payment contract's `Redeemed` events of `filter` (`settings.contract` is the payment contract). */
export function readRedeemedEvents(settings: EventReadSettings, filter: RedeemFilter): Promise<ChainRedeems> {
    return withChain(settings, 'cannot read redeems', (provider) => readRedeemedEventsOn(provider, settings, filter));
}
