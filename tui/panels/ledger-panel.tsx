import {Text} from 'ink';
import type {DashboardState} from '../dashboard-state.js';
import {formatDuration} from '../text-format.js';

const ago = (ms: number) => formatDuration(Math.max(0, Math.round(ms / 1000)));
import {Panel} from './panel.js';

/** Points, the log's length, the last anchor and its age, and what is still to be written or anchored. */
export function LedgerPanel({ledger, focused, now = Date.now()}: Pick<DashboardState, 'ledger'> & {focused?: boolean, now?: number}) {
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
            {ledger.anchoringOff === null
                ? <Text wrap="truncate-end">{anchor} · next {next}{pending && ` · pending ${pending}`}</Text>
                : <Text wrap="truncate-end" dimColor>anchoring off: {ledger.anchoringOff}</Text>}
        </Panel>
    );
}
