import {Text} from 'ink';
import type {DashboardState} from '../dashboard-state.js';
import {Panel} from './panel.js';

export function LedgerPanel({ledger, focused}: Pick<DashboardState, 'ledger'> & {focused?: boolean}) {
    return (
        <Panel title="Ledger" focused={focused}>
            <Text>receipts {ledger.records}  points {ledger.points ?? '-'}</Text>
            <Text wrap="truncate-end">anchor {ledger.lastAnchor === null ? 'none yet' : `block ${ledger.lastAnchor.block} tx ${ledger.lastAnchor.tx.slice(0, 12)}…`} · next {ledger.nextAnchorAt ?? 'not scheduled'}</Text>
        </Panel>
    );
}
