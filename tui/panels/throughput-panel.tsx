import {Text} from 'ink';
import type {DashboardState} from '../dashboard-state.js';
import {formatRate, sparkline} from '../text-graphics.js';
import {Panel} from './panel.js';

export function ThroughputPanel({throughput, focused, width = 30}: Pick<DashboardState, 'throughput'> & {focused?: boolean, width?: number}) {
    const last = (values: number[]) => values.at(-1) ?? 0;
    return (
        <Panel title="Throughput (tokens/s)" focused={focused}>
            <Text>local     <Text color="green">{sparkline(throughput.local, width)}</Text> {formatRate(last(throughput.local))}</Text>
            <Text>for peers <Text color="magenta">{sparkline(throughput.forPeers, width)}</Text> {formatRate(last(throughput.forPeers))}</Text>
        </Panel>
    );
}
