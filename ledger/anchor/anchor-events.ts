/**
 * What the chain holds for a log, read in bounded pages (docs/architecture.md, "Anchoring" and "Verification"): first
 * every `Authorized`/`Revoked` event of the log's owner (by its indexed key), then `Anchored` events of the log only
 * from the wallets the owner's signatures authorized (a topic filter), so that nobody's spam for the log's key is
 * ever read; only blocks at the confirmation depth are read at all.
 */
import {Interface, type JsonRpcProvider, type Log, zeroPadValue} from 'ethers';
import {contributionAnchorAbi} from '../generated/contribution-anchor.js';
import {LedgerError} from '../ledger-error.js';
import type {SigningDomain} from '../signing-domain.js';
import {type AnchorEvent, anchorCounts, type AuthorizationWindow, authorizationWindows, type OwnerEvent} from './authorization-windows.js';
import {type ChainSettings, shortReason, withChain} from './chain.js';

export type {AnchorEvent, AuthorizationWindow, OwnerEvent} from './authorization-windows.js';

const contractInterface = new Interface(contributionAnchorAbi);
const topicOf = (name: string) => contractInterface.getEvent(name)!.topicHash;
/** Senders named in one `Anchored` filter: topics are ORed, and RPCs bound a filter's size. */
const SENDERS_PER_FILTER = 32;

export interface EventReadSettings extends ChainSettings {
    /** The anchoring contract's address. */
    contract: string,
    /** Events count once this many blocks are on top of theirs (1: once mined); later ones are not read. */
    confirmations: number,
    /** The first block read: the contract's deployment. Defaults to 0. */
    fromBlock?: number,
    /** Blocks per `eth_getLogs` call: halved for the rest of the read when the RPC refuses a range. Defaults to 10,000. */
    pageBlocks?: number,
    /** Most events read in all; past it, reading stops and says so. Defaults to 20,000. */
    maxEvents?: number
}

export const eventReadDefaults = {fromBlock: 0, pageBlocks: 10_000, maxEvents: 20_000};

/** The log whose chain record is read: its key, its owner, and the domain its owner signs for. */
export interface LogIdentity {
    core: string,
    owner: string,
    network: SigningDomain['network']
}

/** What the chain holds for one log on one contract, up to `confirmedBlock`. */
export interface ChainAnchors {
    chainId: number,
    contract: string,
    /** The last block read: the head less the confirmation depth; events after it are not counted (nor read). */
    confirmedBlock: number,
    /** Every valid authorization of the owner on this contract, of every log it ever authorized, in chain order. */
    authorizations: AuthorizationWindow[],
    /** `Anchored` events of this log by authorized wallets, in chain order, whether or not they count. */
    anchors: AnchorEvent[],
    /** What the read cost: `eth_getLogs` calls and the events they returned. */
    reads: {calls: number, events: number},
    /** Why reading stopped before `confirmedBlock`, or null. */
    incomplete: string | null
}

/**
 * `eth_getLogs` of one contract in pages, within an event budget; calls and events are counted in `reads`. Also reads
 * the payment contract's `Redeemed` events (ledger/payments/redeem-events.ts).
 */
export class PagedLogReader {
    readonly reads = {calls: 0, events: 0};
    incomplete: string | null = null;
    private pageBlocks: number;

    constructor(private readonly provider: JsonRpcProvider, private readonly contract: string, private readonly settings: Pick<Required<EventReadSettings>, 'pageBlocks' | 'maxEvents'>) {
        this.pageBlocks = settings.pageBlocks;
    }

    /** Every log matching `topics` in [fromBlock, toBlock], unless the budget runs out first (then `incomplete` says so). */
    async read(topics: (string | string[] | null)[], fromBlock: number, toBlock: number): Promise<Log[]> {
        const logs: Log[] = [];
        for (let start = fromBlock; start <= toBlock && this.incomplete === null;) {
            const end = Math.min(toBlock, start + this.pageBlocks - 1);
            let page: Log[];
            try {
                this.reads.calls++;
                page = await this.provider.getLogs({address: this.contract, topics, fromBlock: start, toBlock: end});
            } catch (error) {
                // RPCs refuse wide ranges and long answers, each in its own words: a narrower range is tried.
                if (end === start)
                    throw LedgerError.chainUnavailable(`cannot read the events of contract ${this.contract} in block ${start}: ${shortReason(error)}`);
                this.pageBlocks = Math.max(1, Math.floor((end - start + 1) / 2));
                continue;
            }
            this.reads.events += page.length;
            logs.push(...page);
            if (this.reads.events > this.settings.maxEvents)
                this.incomplete = `stopped reading the chain after ${this.settings.maxEvents} events, at block ${end} of ${toBlock}`;
            start = end + 1;
        }
        return logs;
    }
}

const topicAddress = (address: string) => zeroPadValue(address.toLowerCase(), 32);

function decode(log: Log) {
    try {
        return contractInterface.parseLog({topics: [...log.topics], data: log.data});
    } catch {
        return null;
    }
}

function ownerEvent(log: Log): OwnerEvent[] {
    const parsed = decode(log);
    if (parsed === null || (parsed.name !== 'Authorized' && parsed.name !== 'Revoked'))
        return [];
    const [owner, core, sender, validUntil, ownerSignature] = parsed.args;
    return [{
        kind: parsed.name === 'Authorized' ? 'authorized' : 'revoked', owner: String(owner).slice(2), core: String(core).slice(2),
        sender: String(sender), validUntil: Number(validUntil), ownerSignature: String(ownerSignature).slice(2),
        blockNumber: log.blockNumber, logIndex: log.index, txHash: log.transactionHash
    }];
}

function anchorEvent(log: Log): AnchorEvent[] {
    const parsed = decode(log);
    if (parsed?.name !== 'Anchored')
        return [];
    const [sender, core, logLength, treeHash, timestamp] = parsed.args;
    return [{
        sender: String(sender), core: String(core).slice(2), logLength: Number(logLength), treeHash: String(treeHash).slice(2),
        timestamp: Number(timestamp), blockNumber: log.blockNumber, logIndex: log.index, txHash: log.transactionHash
    }];
}

/** Reads the chain's record of `log` on a provider whose chain id was checked. */
export async function readAnchorEventsOn(provider: JsonRpcProvider, options: EventReadSettings, log: LogIdentity): Promise<ChainAnchors> {
    const settings = {...eventReadDefaults, ...options} as Required<EventReadSettings>;
    const reader = new PagedLogReader(provider, settings.contract, settings);
    const confirmedBlock = await provider.getBlockNumber() - settings.confirmations + 1;
    const result: ChainAnchors = {chainId: settings.chainId, contract: settings.contract, confirmedBlock, authorizations: [], anchors: [],
        reads: reader.reads, incomplete: null};
    if (confirmedBlock < settings.fromBlock)
        return result;
    const ownerLogs = await reader.read([[topicOf('Authorized'), topicOf('Revoked')], `0x${log.owner}`], settings.fromBlock, confirmedBlock);
    result.authorizations = authorizationWindows(ownerLogs.flatMap(ownerEvent), log.owner,
        {network: log.network, chainId: settings.chainId, contract: settings.contract});
    const ours = result.authorizations.filter((window) => window.core === log.core);
    const senders = [...new Set(ours.map((window) => window.sender.toLowerCase()))];
    for (let index = 0; index < senders.length && reader.incomplete === null; index += SENDERS_PER_FILTER) {
        const group = senders.slice(index, index + SENDERS_PER_FILTER);
        const from = Math.min(...ours.filter((window) => group.includes(window.sender.toLowerCase())).map((window) => window.from.blockNumber));
        const logs = await reader.read([topicOf('Anchored'), group.map(topicAddress), `0x${log.core}`], from, confirmedBlock);
        result.anchors.push(...logs.flatMap(anchorEvent));
    }
    result.anchors.sort((a, b) => a.blockNumber - b.blockNumber || a.logIndex - b.logIndex);
    result.incomplete = reader.incomplete;
    return result;
}

/**
 * The `Authorized` and `Revoked` events of `log`'s owner for one wallet and that log, in [fromBlock, toBlock], signatures
 * unchecked (authorizationWindows checks them): all three are indexed topics, so nobody else's events are read. The
 * anchorer reads them before each anchor, `ledger revoke` to find what to revoke.
 */
export async function readWalletEventsOn(provider: JsonRpcProvider, settings: Omit<EventReadSettings, 'confirmations'>,
    {owner, core, wallet}: {owner: string, core: string, wallet: string}, fromBlock: number, toBlock: number): Promise<OwnerEvent[]> {
    const reader = new PagedLogReader(provider, settings.contract, {...eventReadDefaults, confirmations: 1, ...settings} as Required<EventReadSettings>);
    const logs = await reader.read([[topicOf('Authorized'), topicOf('Revoked')], `0x${owner}`, `0x${core}`, topicAddress(wallet)], fromBlock, toBlock);
    if (reader.incomplete !== null)
        throw LedgerError.chainUnavailable(`${reader.incomplete} while reading the authorizations of ${wallet}`);
    return logs.flatMap(ownerEvent);
}

/** Reads the chain's record of `log`: its owner's authorizations, and its anchors by the wallets they name. */
export function readAnchorEvents(settings: EventReadSettings, log: LogIdentity): Promise<ChainAnchors> {
    return withChain(settings, 'cannot read anchors', (provider) => readAnchorEventsOn(provider, settings, log));
}

/** The anchors in `chain` that count: by an authorized wallet, inside its authorization's window. */
export function countedAnchors(chain: Pick<ChainAnchors, 'anchors' | 'authorizations'>) {
    return chain.anchors.filter((anchor) => anchorCounts(anchor, chain.authorizations));
}
