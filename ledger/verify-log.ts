import type Hypercore from 'hypercore';
import {type AnchorEvent, type ChainAnchors, countedAnchors} from './anchor/anchor-events.js';
import {PointsCounter, type PointsTally} from './points.js';
import type {ChainRedeems, RedeemedEvent} from './payments/redeem-events.js';
import {type AnchorRecord, type HeaderRecord, LEDGER_RECORD_VERSION, type LedgerRecord, ledgerRecordSchema, type RedeemRecord} from './records.js';
import type {SigningDomain} from './signing-domain.js';
import {checkLogRecords} from './verify-workers.js';

/** What `ledger verify` found: a log passes only with no problem at all. */
export interface VerifyReport {
    core: string,
    owner: string | null,
    /** The network and chain the log's header names. */
    domain: SigningDomain | null,
    length: number,
    /** Every record's credit. */
    tally: PointsTally | null,
    /** Records covered by the latest confirmed anchor from an authorized wallet that matches the log. */
    anchoredLength: number,
    /** The credit of the records below `anchoredLength`: fixed on the chain, it cannot be forked away. */
    anchoredTally: PointsTally | null,
    /** The credit of the rest, not anchored yet: its owner could still show others a different history. */
    unanchoredTally: PointsTally | null,
    /** Confirmed anchors from wallets in their authorization's window, checked against the log. */
    anchorsChecked: number,
    /** Anchors by wallets the owner authorized once, sent outside the authorization's window (before it, after its expiry or revocation). */
    anchorsIgnored: number,
    /** The first log the owner authorized on the chain (its canonical log), if any. */
    canonicalCore: string | null,
    /** Every problem, the first one first; empty when the log verifies. */
    problems: string[],
    /** What could not be checked, and why (a copy behind its log, a chain read cut short): not the log's fault. */
    warnings: string[],
    /** What the log says the node earned in payments, and what the chain bears out (docs/architecture.md, "Settlement"). */
    payments: PaymentsReport
}

/** Payments in a log; amounts are wei, in decimals. */
export interface PaymentsReport {
    /** `voucher` records: vouchers payers sent this node. */
    vouchers: number,
    /** The highest voucher received on each channel: what its payer owes in all. */
    channels: Record<string, string>,
    /** Their sum. */
    vouchedTotal: string,
    /** `redeem` records: vouchers this node redeemed on chain. */
    redeems: number,
    /** What they say the chain paid. */
    paidTotal: string,
    /** Redeem records the chain's `Redeemed` events bear out; null when no chain events were given. */
    redeemsConfirmed: number | null,
    /** What those events paid; null when no chain events were given. */
    chainPaidTotal: string | null
}

/** What the chain says of the log, as `readAnchorEvents` reads it; without `chainId` and `contract` nothing is on it. */
export type ChainEvidence = Pick<ChainAnchors, 'anchors' | 'authorizations'> & Partial<ChainAnchors>;

export interface VerifyOptions {
    /**
     * The log is a copy replicated from a peer, updated as far as the peer would: an anchor beyond its length means
     * the copy is behind, not that the log was truncated. Defaults to false: the owner's own log.
     */
    replicated?: boolean,
    /** The network and chain the verifier is on: a log started for another is a problem. Defaults to the chain's id only. */
    domain?: SigningDomain,
    /** Node ids the verifier stands behind: work done for them counts as witnessed (`PointsTally`); defaults to none. */
    witnesses?: ReadonlySet<string>,
    /** Check the owner's own signatures in receipts too, which its signed log vouches for (`checkRecord`'s `attestedByLog`); defaults to false. */
    ownerSignatures?: boolean,
    /**
     * The payment contract's `Redeemed` events for the log's redeems (ledger/payments/redeem-events.ts): a `redeem`
     * record on that chain and contract, confirmed, that no event bears out is a problem. Defaults to none: not checked.
     */
    redeems?: Pick<ChainRedeems, 'chainId' | 'contract' | 'confirmedBlock' | 'redeems' | 'incomplete'>
}

/** Problems listed at most: past this, the log is plainly broken and the first ones say why. */
const MAX_PROBLEMS = 20;

/** The log's header, if record 0 is one of this version; the version of one that is not, if it has one. */
export async function readLogHeader(core: Hypercore<unknown>): Promise<{header: HeaderRecord | null, version: unknown}> {
    const block = core.length > 0 ? await core.get(0) : null;
    const parsed = ledgerRecordSchema.safeParse(block);
    return {
        header: parsed.success && parsed.data.type === 'header' ? parsed.data : null,
        version: (block as {version?: unknown} | null)?.version
    };
}

/**
 * Checks a contribution log, anyone's, without trusting its owner (docs/architecture.md, "Verification"): that it is
 * its owner's one log on the chain, its authorized, confirmed anchors against its Merkle tree, then every record
 * (anchor records against the chain), then the credit, below the anchored length and above it.
 */
export async function verifyLog(core: Hypercore<unknown>, chain: ChainEvidence, {replicated = false, domain, witnesses, ownerSignatures = false, redeems}: VerifyOptions = {}): Promise<VerifyReport> {
    const coreKey = core.key!.toString('hex');
    const problems: string[] = [];
    const warnings: string[] = [];
    const report = (problem: string) => {
        if (problems.length < MAX_PROBLEMS)
            problems.push(problem);
    };
    const result: VerifyReport = {core: coreKey, owner: null, domain: null, length: core.length, tally: null, anchoredLength: 0, anchoredTally: null,
        unanchoredTally: null, anchorsChecked: 0, anchorsIgnored: 0, canonicalCore: null, problems, warnings, payments: emptyPayments(redeems !== undefined)};

    const {header, version} = await readLogHeader(core);
    if (header === null) {
        report(typeof version === 'number' && version < LEDGER_RECORD_VERSION
            ? `record 0 is a version ${version} log header: this log predates record version ${LEDGER_RECORD_VERSION}; its node starts a new log when it upgrades`
            : 'record 0 is not a log header: whose log this is cannot be known');
        return result;
    }
    const owner = header.owner;
    result.owner = owner;
    result.domain = {network: header.network, chainId: header.chainId};
    const expected = domain ?? (chain.chainId === undefined ? undefined : {network: header.network, chainId: chain.chainId});
    const otherDomain = expected !== undefined && (header.network !== expected.network || header.chainId !== expected.chainId);
    if (otherDomain)
        report(`the log was started for network '${header.network}' on chain ${header.chainId}, not '${expected.network}' on chain ${expected.chainId}`);
    const onChain = chain.chainId !== undefined && chain.contract !== undefined && !otherDomain;
    if (chain.incomplete)
        warnings.push(`the chain's record of this log was not read whole (${chain.incomplete}): what was not read counts for nothing`);

    if (onChain)
        checkIdentity(coreKey, chain, result, report);
    const counted = onChain ? countedAnchors(chain).filter((anchor) => anchor.core === coreKey) : [];
    result.anchorsIgnored = onChain ? chain.anchors.length - counted.length : 0;
    result.anchorsChecked = counted.length;
    let behind = 0;
    for (const anchor of counted) {
        const where = `anchor of length ${anchor.logLength} in block ${anchor.blockNumber} (transaction ${anchor.txHash}, sent by ${anchor.sender})`;
        if (anchor.logLength > core.length) {
            if (replicated)
                behind = Math.max(behind, anchor.logLength);
            else
                report(`${where}: the log has only ${core.length} records (truncated below an anchor: fraud)`);
        } else if ((await core.treeHash(anchor.logLength)).toString('hex') !== anchor.treeHash) {
            report(`${where}: the log's first ${anchor.logLength} records differ from what was anchored (a fork below an anchor: fraud)`);
        } else {
            result.anchoredLength = Math.max(result.anchoredLength, anchor.logLength);
        }
    }
    if (behind > 0)
        warnings.push(`copy not up to date (${core.length} of ${behind} records): no peer served the rest; only what is here was checked`);

    if (redeems?.incomplete)
        warnings.push(`the chain's redeems were not read whole (${redeems.incomplete}): redeem records after it were not checked`);
    const payments = new PaymentsCounter(result.payments, redeems);
    const counter = new PointsCounter(owner, {...(witnesses && {witnesses})});
    let anchoredTally = result.anchoredLength === 0 ? counter.tally : null;
    let index = 0;
    // Checked on worker threads, counted here in record order: the same tally as one thread's (ledger/verify-workers.ts).
    for await (const verdicts of checkLogRecords(core, {owner, coreKey, length: core.length, domain: result.domain!, attestedByLog: !ownerSignatures})) {
        for (const verdict of verdicts) {
            if (typeof verdict === 'string')
                report(`record ${index}: ${verdict}`);
            else {
                if (verdict.type === 'anchor' && onChain) {
                    const problem = anchorRecordProblem(verdict, index, chain as ChainAnchors, counted);
                    if (problem !== undefined)
                        report(`record ${index}: ${problem}`);
                }
                const problem = payments.add(verdict);
                if (problem !== undefined)
                    report(`record ${index}: ${problem}`);
                counter.add(verdict);
            }
            index++;
            if (index === result.anchoredLength)
                anchoredTally = counter.tally;
        }
    }
    result.tally = counter.tally;
    result.anchoredTally = anchoredTally ?? counter.tally;
    result.unanchoredTally = tallyDifference(result.tally, result.anchoredTally);
    return result;
}

/** The owner's first authorized log is its one log: any other it authorized is a second history for the same identity. */
function checkIdentity(coreKey: string, chain: ChainEvidence, result: VerifyReport, report: (problem: string) => void) {
    const [first] = chain.authorizations;
    if (first === undefined)
        return;
    result.canonicalCore = first.core;
    const firstBlock = new Map<string, number>();
    for (const window of chain.authorizations)
        if (!firstBlock.has(window.core))
            firstBlock.set(window.core, window.from.blockNumber);
    if (first.core !== coreKey) {
        const block = firstBlock.get(coreKey);
        report(block === undefined
            ? `this identity's log is ${first.core} (authorized in block ${first.from.blockNumber}), not this one`
            : `a second log for this identity: ${coreKey}, authorized in block ${block}; its first log is ${first.core} (block ${first.from.blockNumber})`);
        return;
    }
    for (const [other, block] of firstBlock)
        if (other !== coreKey)
            report(`a second log for this identity: ${other}, authorized in block ${block}`);
}

/**
 * Why an anchor record at `index` is not borne out by the chain, or undefined when it is (or cannot be judged yet:
 * another chain or contract, a block not confirmed yet, a chain read cut short).
 */
function anchorRecordProblem(record: AnchorRecord, index: number, chain: ChainAnchors, counted: readonly AnchorEvent[]): string | undefined {
    const where = `anchor record of length ${record.logLength} in block ${record.blockNumber} (transaction ${record.txHash})`;
    if (record.logLength > index)
        return `${where} anchors records after it`;
    if (record.chainId !== chain.chainId || record.contract.toLowerCase() !== chain.contract.toLowerCase()
        || record.blockNumber > chain.confirmedBlock || chain.incomplete !== null)
        return undefined;
    const event = counted.find((anchor) => anchor.txHash === record.txHash);
    if (event === undefined)
        return `${where}: no such anchor by an authorized wallet is on the chain (a fake record, or one a reorganization dropped)`;
    if (event.blockNumber !== record.blockNumber || event.logLength !== record.logLength || event.treeHash !== record.treeHash)
        return `${where}: the chain's anchor in that transaction is of length ${event.logLength} in block ${event.blockNumber}, tree hash ${event.treeHash}`;
    return undefined;
}

function emptyPayments(chainGiven: boolean): PaymentsReport {
    return {vouchers: 0, channels: {}, vouchedTotal: '0', redeems: 0, paidTotal: '0', redeemsConfirmed: chainGiven ? 0 : null, chainPaidTotal: chainGiven ? '0' : null};
}

/** Adds up the payment records into `report` as they are read, each `redeem` record checked against the chain's events. */
class PaymentsCounter {
    private readonly latest = new Map<string, bigint>();
    private vouched = 0n;
    private paid = 0n;
    private chainPaid = 0n;
    private readonly events: Map<string, RedeemedEvent[]>;

    constructor(private readonly report: PaymentsReport, private readonly chain: VerifyOptions['redeems']) {
        this.events = new Map();
        for (const event of chain?.redeems ?? [])
            this.events.set(event.txHash, [...this.events.get(event.txHash) ?? [], event]);
    }

    /** Counts one record; returns why a redeem record is not borne out by the chain, if it is not. */
    add(record: LedgerRecord): string | undefined {
        if (record.type === 'voucher') {
            const amount = BigInt(record.amount);
            const before = this.latest.get(record.channel) ?? 0n;
            this.report.vouchers++;
            if (amount > before) {
                this.latest.set(record.channel, amount);
                this.vouched += amount - before;
                this.report.channels[record.channel] = record.amount;
                this.report.vouchedTotal = this.vouched.toString();
            }
        } else if (record.type === 'redeem') {
            this.report.redeems++;
            this.paid += BigInt(record.paid);
            this.report.paidTotal = this.paid.toString();
            return this.check(record);
        }
        return undefined;
    }

    private check(record: RedeemRecord): string | undefined {
        const {chain} = this;
        // Another chain or contract, a block not confirmed yet, or a read cut short: not judged.
        if (chain === undefined || record.chainId !== chain.chainId || record.contract.toLowerCase() !== chain.contract.toLowerCase()
            || record.blockNumber > chain.confirmedBlock || chain.incomplete !== null)
            return undefined;
        const where = `redeem record of channel ${record.channel} in block ${record.blockNumber} (transaction ${record.txHash})`;
        const event = this.events.get(record.txHash)?.find((candidate) => candidate.channel === record.channel);
        if (event === undefined)
            return `${where}: no such redeem is on the chain (a fake record, or one a reorganization dropped)`;
        if (event.paid !== BigInt(record.paid) || event.redeemed !== BigInt(record.amount))
            return `${where}: the chain's redeem in that transaction paid ${event.paid} wei up to ${event.redeemed}, not ${record.paid} up to ${record.amount}`;
        this.report.redeemsConfirmed!++;
        this.chainPaid += event.paid;
        this.report.chainPaidTotal = this.chainPaid.toString();
        return undefined;
    }
}

/** `total` less `part`, field by field (points to the thousandth, as they are kept). */
function tallyDifference<T>(total: T, part: T): T {
    if (typeof total === 'string' && /^\d+$/.test(total)) // exact thousandths
        return (BigInt(total) - BigInt(part as string)).toString() as T;
    if (typeof total === 'number')
        return Math.round((total - (part as number)) * 1000) / 1000 as T;
    if (typeof total === 'object' && total !== null)
        return Object.fromEntries(Object.entries(total).map(([key, value]) => [key, tallyDifference(value, (part as Record<string, unknown>)[key])])) as T;
    return total;
}
