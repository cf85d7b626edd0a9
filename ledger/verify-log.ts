import type Hypercore from 'hypercore';
import type {ChainAnchors} from './anchor/anchor-events.js';
import {PointsCounter, type PointsTally} from './points.js';
import {verifyAnchorAuthorization} from './record-check.js';
import {ledgerRecordSchema} from './records.js';
import {checkLogRecords} from './verify-workers.js';

/** What `ledger verify` found: a log passes only with no problem at all. */
export interface VerifyReport {
    core: string,
    owner: string | null,
    length: number,
    tally: PointsTally | null,
    anchorsChecked: number,
    /** Anchors for this log by wallets its owner never authorized: anyone can send those, so they prove nothing. */
    anchorsIgnored: number,
    /** Every problem, the first one first; empty when the log verifies. */
    problems: string[]
}

/** Problems listed at most: past this, the log is plainly broken and the first ones say why. */
const MAX_PROBLEMS = 20;

/**
 * Checks a contribution log, anyone's, without trusting its owner: its authorized anchors against its Merkle tree,
 * then every record, then the points (docs/architecture.md, "Verification").
 */
export async function verifyLog(core: Hypercore<unknown>, chain: Omit<ChainAnchors, 'chainId' | 'contract'> & Partial<ChainAnchors>): Promise<VerifyReport> {
    const coreKey = core.key!.toString('hex');
    const problems: string[] = [];
    const report = (problem: string) => {
        if (problems.length < MAX_PROBLEMS)
            problems.push(problem);
    };

    const header = ledgerRecordSchema.safeParse(core.length > 0 ? await core.get(0) : null);
    const owner = header.success && header.data.type === 'header' ? header.data.owner : null;
    const authorized = new Set(owner === null || chain.chainId === undefined || chain.contract === undefined ? [] : chain.authorizations
        .filter((authorization) => verifyAnchorAuthorization({core: coreKey, sender: authorization.sender, chainId: chain.chainId!,
            contract: chain.contract!}, owner, authorization.ownerSignature))
        .map((authorization) => authorization.sender.toLowerCase()));
    const attributed = chain.anchors.filter((anchor) => authorized.has(anchor.sender.toLowerCase()));
    const sorted = attributed.sort((a, b) => a.blockNumber - b.blockNumber || a.logLength - b.logLength);
    for (const anchor of sorted) {
        const where = `anchor of length ${anchor.logLength} in block ${anchor.blockNumber} (transaction ${anchor.txHash}, sent by ${anchor.sender})`;
        if (anchor.logLength > core.length)
            report(`${where}: the log has only ${core.length} records (truncated?)`);
        else if ((await core.treeHash(anchor.logLength)).toString('hex') !== anchor.treeHash)
            report(`${where}: the log's first ${anchor.logLength} records differ from what was anchored (rewritten or forked)`);
    }

    const anchorsIgnored = chain.anchors.length - attributed.length;
    if (owner === null) {
        report('record 0 is not a log header: whose log this is cannot be known');
        return {core: coreKey, owner, length: core.length, tally: null, anchorsChecked: sorted.length, anchorsIgnored, problems};
    }
    // Checked on worker threads, counted here in record order: the same tally as one thread's (ledger/verify-workers.ts).
    const counter = new PointsCounter(owner);
    let index = 0;
    for await (const verdicts of checkLogRecords(core, {owner, coreKey, length: core.length})) {
        for (const verdict of verdicts) {
            if (typeof verdict === 'string')
                report(`record ${index}: ${verdict}`);
            else
                counter.add(verdict);
            index++;
        }
    }
    return {core: coreKey, owner, length: core.length, tally: counter.tally, anchorsChecked: sorted.length, anchorsIgnored, problems};
}
