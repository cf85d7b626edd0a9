import {Text} from 'ink';
import {formatBytes} from '../../core/display.js';
import type {DashboardState} from '../dashboard-state.js';
import {Panel} from './panel.js';

const MAX_ROWS = 6;

export function PeersPanel({peers, focused}: Pick<DashboardState, 'peers'> & {focused?: boolean}) {
    return (
        <Panel title={`Peers (${peers.length})`} focused={focused}>
            {peers.length === 0 && <Text dimColor>no peers yet</Text>}
            {peers.slice(0, MAX_ROWS).map((peer) => (
                <Text key={peer.id} wrap="truncate-end">
                    {peer.id.slice(0, 8)} {peer.rttMs === null ? '   -  ' : `${peer.rttMs.toFixed(0).padStart(4)}ms`} {peer.tflops === null ? '   ?' : `${peer.tflops.toFixed(2)}TF`} {peer.backend || 'cpu'}{peer.vramTotalBytes > 0 ? ` ${formatBytes(peer.vramTotalBytes)}` : ''} {Math.round(peer.successRate * 100)}%{peer.relayed ? ' relayed' : ''} {peer.models.join(',') || '-'}
                </Text>
            ))}
            {peers.length > MAX_ROWS && <Text dimColor>… {peers.length - MAX_ROWS} more (strongdoge peers)</Text>}
        </Panel>
    );
}
