import {Text} from 'ink';
import {formatBytes} from '../../core/display.js';
import type {DashboardState, PeerView} from '../dashboard-state.js';
import {Panel} from './panel.js';

const MAX_ROWS = 6;

/** Peers by why they are connected, each kind once per peer: `network 4 · shard-host 2 · relay 1`; empty when none says. */
export function reasonCounts(peers: readonly PeerView[]) {
    const counts = new Map<string, number>();
    for (const peer of peers)
        for (const kind of new Set(peer.reasons.map((reason) => reason.split(':')[0]!)))
            counts.set(kind, (counts.get(kind) ?? 0) + 1);
    return [...counts].sort(([a, countA], [b, countB]) => countB - countA || a.localeCompare(b))
        .map(([kind, count]) => `${kind} ${count}`).join(' · ');
}

export function PeersPanel({peers, focused}: Pick<DashboardState, 'peers'> & {focused?: boolean}) {
    const reasons = reasonCounts(peers);
    return (
        <Panel title={`Peers (${peers.length})${reasons === '' ? '' : ` ${reasons}`}`} focused={focused}>
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
