import {Text} from 'ink';
import type {DashboardState} from '../dashboard-state.js';
import {layerBar} from '../text-graphics.js';
import {Panel} from './panel.js';

export function PipelinePanel({pipeline, focused, width = 30}: Pick<DashboardState, 'pipeline'> & {focused?: boolean, width?: number}) {
    if (pipeline === null || pipeline.stages.length === 0)
        return <Panel title="Pipeline" focused={focused}><Text dimColor>no sharded model: requests are served whole</Text></Panel>;
    const layers = Math.max(...pipeline.stages.map((stage) => stage.lastLayer)) + 1;
    return (
        <Panel title={`Pipeline: ${pipeline.model}`} focused={focused}>
            <Text>{layerBar(pipeline.stages, layers, width)}</Text>
            {pipeline.stages.map((stage, index) => (
                <Text key={stage.nodeId}>
                    {String.fromCharCode(65 + (index % 26))} {stage.nodeId.slice(0, 8)} layers {stage.firstLayer}-{stage.lastLayer}{stage.latencyMs === null ? '' : ` hop ${stage.latencyMs.toFixed(1)}ms`}
                </Text>
            ))}
        </Panel>
    );
}
