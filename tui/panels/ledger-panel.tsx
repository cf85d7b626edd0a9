import {Text} from 'ink';
import type {DashboardState} from '../dashboard-state.js';
import {formatDogeShort, formatDuration} from '../text-format.js';

const ago = (ms: number) => formatDuration(Math.max(0, Math.round(ms / 1000)));
import {Panel} from './panel.js';

/**
 * Points, the log's length, DOGE earned, owed, paid and deposited (while payments are on), the last anchor and its
 * age, and what is still to be written or anchored.
 */
export function LedgerPanel({ledger, payments = null, focused, now = Date.now(), columns}: Pick<DashboardState, 'ledger'> & {
    payments?: DashboardState['payments'], focused?: boolean, now?: number,
    /** The panel's width with its border, when known: DOGE takes two lines where one would be cut. */
    columns?: number
}) {
    const anchor = ledger.lastAnchor === null
        ? 'anchor none yet'
        : `anchor block ${ledger.lastAnchor.block} (${ago(now - Date.parse(ledger.lastAnchor.at))} ago, ${ledger.lastAnchor.logLength} records)`;
    const pending = [
        ledger.pendingRecords > 0 ? `${ledger.pendingRecords} records to write` : '',
        ledger.pendingAnchor === null ? '' : `tx ${ledger.pendingAnchor.tx.slice(0, 12)}… for ${ledger.pendingAnchor.logLength} records`
    ].filter(Boolean).join(', ');
    const next = ledger.nextAnchorAt === null ? 'not scheduled' : `in ${ago(Date.parse(ledger.nextAnchorAt) - now)}`;
    return (
        <Panel title="Ledger" focused={focused}>
            <Text wrap="truncate-end">points {ledger.points ?? '-'}  log {ledger.records} records{ledger.core && ` ${ledger.core.slice(0, 16)}…`}</Text>
            {payments !== null && dogeLines(payments, columns).map((line) => <Text key={line} wrap="truncate-end">{line}</Text>)}
            {ledger.anchoringOff === null
                ? <Text wrap="truncate-end">{anchor} · next {next}{pending && ` · pending ${pending}`}</Text>
                : <Text wrap="truncate-end" dimColor>anchoring off: {ledger.anchoringOff}</Text>}
        </Panel>
    );
}

/** Border and padding: what a panel's text cannot use of its width. */
const PANEL_FRAME_COLUMNS = 4;

function dogeLines(payments: NonNullable<DashboardState['payments']>, columns: number | undefined) {
    const earned = `earned ${formatDogeShort(payments.earned)} · owed ${formatDogeShort(payments.owed)}`;
    const spent = `paid ${formatDogeShort(payments.paid)} · deposited ${formatDogeShort(payments.deposited)}`;
    const line = `DOGE ${earned} · ${spent}`;
    return columns === undefined || line.length <= columns - PANEL_FRAME_COLUMNS ? [line] : [`DOGE ${earned}`, `DOGE ${spent}`];
}
