import {formatEther} from 'ethers';
import {Command} from 'commander';
import type {AnchorOutcomeStatus, LedgerStatus, RevocationOutcomeStatus, VerifyReportStatus} from '../../node/node-status.js';
import {loadNodeSettings} from '../config/load-node-settings.js';
import {fetchNodeStatus, NodeUnreachableError, type NodeAddressFlags} from '../node-client.js';
import type {SettingFlags} from '../config/node-config.js';
import {addNodeAddressOptions, addSettingOptions} from './shared-options.js';
import {shortPeerId} from '../../core/display.js';

type LedgerFlags = NodeAddressFlags & SettingFlags & {json?: boolean, core?: string};

/** Exit code of a log that does not verify. */
const VERIFY_FAILED_EXIT_CODE = 1;

function ledgerSubcommand(name: string, description: string) {
    return addNodeAddressOptions(addSettingOptions(new Command(name).description(description), 'ledger'));
}

/**
 * Asks the running node; when none answers, works on the data dir itself (a stopped node's), loading the ledger
 * code only then.
 */
async function throughNodeOrDataDir<T>(viaNode: () => Promise<T>, viaDataDir: (offline: typeof import('./ledger-offline.js')) => Promise<T>) {
    try {
        return await viaNode();
    } catch (error) {
        if (!(error instanceof NodeUnreachableError))
            throw error;
    }
    return viaDataDir(await import('./ledger-offline.js'));
}

function print(flags: LedgerFlags, value: unknown, text: string) {
    process.stdout.write(flags.json ? JSON.stringify(value, null, 2) + '\n' : text + '\n');
}

function recordLine(record: LedgerStatus['recent'][number]): string {
    switch (record.type) {
        case 'served':
        case 'consumed':
            return `  ${record.at}  ${record.type.padEnd(8)} ${record.receipt.body.model} ${record.receipt.body.completionTokens} tokens, job ${record.receipt.body.jobId.slice(0, 8)}`;
        case 'shard':
        case 'shard-consumed':
            return `  ${record.at}  ${record.type.padEnd(8)} ${record.receipt.body.model} layers ${record.receipt.body.firstLayer}-${record.receipt.body.lastLayer}, ${record.receipt.body.tokens} tokens`;
        case 'anchor':
            return `  ${record.at}  anchor   ${record.logLength} records, block ${record.blockNumber}`;
        case 'header':
            return `  ${record.at}  header   owner ${shortPeerId(record.owner)}`;
        case 'voucher':
            return `  ${record.at}  voucher  ${formatEther(BigInt(record.cost))} DOGE for job ${record.jobId.slice(0, 8)} from ${shortPeerId(record.peer)}`;
        case 'payment':
            return `  ${record.at}  payment  ${formatEther(BigInt(record.cost))} DOGE for job ${record.jobId.slice(0, 8)} to ${shortPeerId(record.peer)}`;
        case 'redeem':
            return `  ${record.at}  redeem   ${formatEther(BigInt(record.paid))} DOGE from channel ${record.channel.slice(0, 10)}, block ${record.blockNumber}`;
    }
}

function showText(ledger: LedgerStatus) {
    const {tally, anchoring} = ledger;
    const last = anchoring.lastAnchor;
    const lines = [
        ['log', `${ledger.core}  (${ledger.length} records${ledger.pendingRecords > 0 ? `, ${ledger.pendingRecords} being written` : ''})`],
        ['points', `${tally.points}  (${tally.witnessedPoints} witnessed by trusted peers, the rest bare claims; served ${tally.servedJobs} jobs, ${tally.servedTokens} tokens;`
            + ` ${tally.embeddedJobs} embedding jobs; ${tally.shardSessions} shard receipts; consumed ${tally.consumedJobs} jobs, ${tally.shardConsumed} shard receipts)`],
        ['anchors', `${tally.anchors}${last ? `, last: ${last.logLength} records in block ${last.blockNumber}, tx ${last.txHash}` : ''}`],
        ['anchoring', anchoring.enabled
            ? `on, chain ${anchoring.chainId}, contract ${anchoring.contract}${anchoring.pending ? `; pending tx ${anchoring.pending.txHash}` : ''}${anchoring.lastError ? `; last error: ${anchoring.lastError}` : ''}`
            : `off: ${anchoring.offReason}`]
    ];
    const recent = ledger.recent.slice(0, 10).map(recordLine);
    return [...lines.map(([key, value]) => `${key!.padEnd(10)}${value}`), ...(recent.length > 0 ? ['recent:', ...recent] : [])].join('\n');
}

/** Earnings in the log against the chain's `Redeemed` events (docs/architecture.md, "Settlement"). */
function paymentsLine({vouchers, vouchedTotal, redeems, paidTotal, chainPaidTotal}: VerifyReportStatus['payments']) {
    return `payments: ${vouchers} vouchers received (${formatEther(BigInt(vouchedTotal))} DOGE), ${redeems} redeems (${formatEther(BigInt(paidTotal))} DOGE),`
        + ` on chain ${chainPaidTotal === null ? 'not checked' : `${formatEther(BigInt(chainPaidTotal))} DOGE`}`;
}

/** What `ledger verify` prints without `--json`. */
export function verifyText(report: VerifyReportStatus) {
    const warnings = report.warnings.map((warning) => `  note: ${warning}`);
    if (report.problems.length === 0)
        return [`OK: log ${report.core} of ${report.owner}: ${report.length} records, ${report.anchorsChecked} anchors match, ${report.tally?.points ?? 0} points`
            + ` (${report.tally?.witnessedPoints ?? 0} for this node or peers it trusts, the rest bare claims)`
            + ` (${report.anchoredTally?.points ?? 0} anchored in the first ${report.anchoredLength} records, ${report.unanchoredTally?.points ?? 0} not anchored yet)`,
        paymentsLine(report.payments), ...warnings].join('\n');
    return [`FAILED: log ${report.core}: ${report.problems[0]}`, ...report.problems.slice(1).map((problem) => `  also: ${problem}`),
        paymentsLine(report.payments), ...warnings].join('\n');
}

function anchorText(outcome: AnchorOutcomeStatus) {
    return outcome.status === 'anchored'
        ? `anchored ${outcome.record.logLength} records in block ${outcome.record.blockNumber}, tx ${outcome.record.txHash}`
        : `nothing to anchor: the log has not grown since its anchor of ${outcome.logLength} records`;
}

function revokeText({revoked}: RevocationOutcomeStatus) {
    return revoked.map(({wallet, validUntil, txHash, blockNumber}) =>
        `revoked the authorization of ${wallet} valid until ${new Date(validUntil * 1000).toISOString()} (${validUntil}), in block ${blockNumber}, tx ${txHash}`)
        .join('\n');
}

export function ledgerCommand() {
    const ledger = new Command('ledger').description('the contribution log: show it, verify it, anchor it on the chain, revoke a wallet');
    ledger.addCommand(ledgerSubcommand('show', 'records, points and anchors of this node\'s log')
        .action(async (flags: LedgerFlags) => {
            const status = await throughNodeOrDataDir(() => fetchNodeStatus(flags, '/api/ledger'),
                async (offline) => offline.withOfflineLedger(await loadNodeSettings(flags), async (node) => node.describe()));
            print(flags, status, showText(status));
        }));
    ledger.addCommand(ledgerSubcommand('verify', 'check a log against its anchors on the chain, its receipts and its points')
        .option('--core <key>', 'another node\'s log (replicated from a peer) instead of this node\'s')
        .action(async (flags: LedgerFlags) => {
            const core = flags.core;
            const report = await throughNodeOrDataDir(() => fetchNodeStatus(flags, '/api/ledger/verify', core === undefined ? {} : {core}),
                async (offline) => offline.withOfflineLedger(await loadNodeSettings(flags), (node) => node.verify(core, {online: false})));
            print(flags, report, verifyText(report));
            if (report.problems.length > 0)
                process.exitCode = VERIFY_FAILED_EXIT_CODE;
        }));
    ledger.addCommand(ledgerSubcommand('anchor', 'anchor the log on the chain now')
        .action(async (flags: LedgerFlags) => {
            const outcome = await throughNodeOrDataDir(() => fetchNodeStatus(flags, '/api/ledger/anchor', {}),
                async (offline) => offline.withOfflineLedger(await loadNodeSettings(flags), (node) => node.anchorNow()));
            print(flags, outcome, anchorText(outcome));
        }));
    ledger.addCommand(ledgerSubcommand('revoke', 'revoke the authorizations of a wallet to anchor this node\'s log (any configured wallet pays)')
        .argument('<wallet>', 'the wallet address whose authorizations are revoked')
        .action(async (wallet: string, flags: LedgerFlags) => {
            const outcome = await throughNodeOrDataDir(() => fetchNodeStatus(flags, '/api/ledger/revoke', {wallet}),
                async (offline) => offline.withOfflineLedger(await loadNodeSettings(flags), (node) => node.revoke(wallet)));
            print(flags, outcome, revokeText(outcome));
        }));
    ledger.addCommand(ledgerSubcommand('deploy', 'deploy the anchoring and payment channel contracts on the chain and remember their addresses')
        .action(async (flags: LedgerFlags) => {
            const {deployContract} = await import('./ledger-offline.js');
            const deployed = await deployContract(await loadNodeSettings(flags));
            const payment = deployed.paymentContract;
            print(flags, deployed, [
                `deployed the anchoring contract at ${deployed.address} on chain ${deployed.chainId} in block ${deployed.blockNumber} (tx ${deployed.txHash})`,
                `deployed the payment contract at ${payment.address} on chain ${deployed.chainId} in block ${payment.blockNumber} (tx ${payment.txHash})`,
                `nodes using this data dir anchor and pay there from their next start (elsewhere: --anchor-contract ${deployed.address} `
                    + `--anchor-contract-block ${deployed.blockNumber} --payment-contract ${payment.address})`
            ].join('\n'));
        }));
    return ledger;
}
