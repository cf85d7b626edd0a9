import {Box, Text} from 'ink';
import {clusterActive, type DashboardState} from './dashboard-state.js';
import {DevicePanel} from './panels/device-panel.js';
import {HeaderPanel} from './panels/header-panel.js';
import {LedgerPanel} from './panels/ledger-panel.js';
import {PeersPanel} from './panels/peers-panel.js';
import {PipelinePanel} from './panels/pipeline-panel.js';
import {RequestsPanel} from './panels/requests-panel.js';
import {ThroughputPanel} from './panels/throughput-panel.js';

const FOCUSABLE_PANELS = ['device', 'peers', 'pipeline', 'throughput', 'requests', 'ledger'] as const;
export type FocusablePanel = typeof FOCUSABLE_PANELS[number];

/** The panels shown now, in focus order: the pipeline panel only while there is sharding to show. */
export function focusablePanels(state: DashboardState): FocusablePanel[] {
    return FOCUSABLE_PANELS.filter((panel) => panel !== 'pipeline' || clusterActive(state.cluster));
}

/** Below this width the panels stack in one column. */
const TWO_COLUMNS_MIN_WIDTH = 80;

export interface DashboardViewProps {
    state: DashboardState,
    columns: number,
    focus: FocusablePanel,
    showHelp: boolean
}

/** The whole screen as a pure function of the state and the terminal size. */
export function DashboardView({state, columns, focus, showHelp}: DashboardViewProps) {
    const twoColumns = columns >= TWO_COLUMNS_MIN_WIDTH;
    const chartWidth = Math.max(10, Math.min(60, (twoColumns ? Math.floor(columns / 2) : columns) - 22));
    const lastError = state.errors.at(-1);
    // Stage rows need the terminal's whole width: below both columns, or in the one column after the peers.
    const pipeline = <PipelinePanel cluster={state.cluster} focused={focus === 'pipeline'} width={Math.min(20, chartWidth)}/>;
    const left = (
        <>
            <DevicePanel device={state.device} engine={state.engine} progress={state.progress} pipelines={state.cluster.pipelines} focused={focus === 'device'}/>
            <PeersPanel peers={state.peers} focused={focus === 'peers'}/>
            {!twoColumns && pipeline}
        </>
    );
    const right = (
        <>
            <ThroughputPanel throughput={state.throughput} focused={focus === 'throughput'} width={chartWidth}/>
            <RequestsPanel requests={state.requests} focused={focus === 'requests'} rows={twoColumns ? 6 : 3}/>
            <LedgerPanel ledger={state.ledger} payments={state.payments} focused={focus === 'ledger'}
                columns={twoColumns ? Math.floor(columns / 2) : columns}/>
        </>
    );
    return (
        <Box flexDirection="column" width={columns}>
            <HeaderPanel node={state.node} engine={state.engine}/>
            {twoColumns
                ? <><Box><Box flexDirection="column" width="50%">{left}</Box><Box flexDirection="column" width="50%">{right}</Box></Box>{pipeline}</>
                : <Box flexDirection="column">{left}{right}</Box>}
            {lastError && <Text color="red" wrap="truncate-end">! {lastError.message}</Text>}
            {showHelp
                ? <Box flexDirection="column" borderStyle="single" paddingX={1}>
                    <Text bold>Keys</Text>
                    <Text>q quit (stops the node gracefully)   tab / arrows move focus   ? this help</Text>
                    <Text>Headless: strongdoge --daemon; from another terminal: strongdoge status, strongdoge peers</Text>
                </Box>
                : <Text dimColor>q quit · tab/arrows focus · ? help</Text>}
        </Box>
    );
}
