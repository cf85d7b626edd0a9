import {Text} from 'ink';
import {clusterActive, type DashboardState, type PipelineView} from '../dashboard-state.js';
import {formatBytes} from '../../core/display.js';
import {alignColumns, formatHosting, formatLayers, formatSpeculation, formatWeights} from '../text-format.js';
import {layerBar, stageLetter} from '../text-graphics.js';
import {Panel} from './panel.js';

/** One row per stage, columns aligned; while loading, the weights sent to it so far instead of its traffic. */
function stageRows(pipeline: PipelineView) {
    return alignColumns(pipeline.stages.map((stage, index) => {
        const placement = [stageLetter(index), stage.self ? 'this node' : stage.peer.slice(0, 8), `layers ${formatLayers(stage.layers)}`,
            `${Math.round(stage.loadRatio * 100)}%`, formatBytes(stage.bytes)];
        // This node's own layers travel over no tunnel: it has no hop, success rate or traffic.
        if (stage.self)
            return placement;
        if ((pipeline.state === 'loading' || pipeline.state === 'forming') && stage.transferBytes > 0)
            return [...placement, `weights ${formatWeights(stage.weights, stage.bytesSent, stage.transferBytes)}`];
        return [...placement, stage.hopMs === null ? 'hop -' : `hop ${stage.hopMs.toFixed(1)}ms`,
            stage.successRate === null ? 'ok -' : `ok ${Math.round(stage.successRate * 100)}%`,
            `↑${formatBytes(stage.bytesSent)} ↓${formatBytes(stage.bytesReceived)}`];
    }));
}

function PipelineLines({pipeline, width}: {pipeline: PipelineView, width: number}) {
    const totalLayers = Math.max(-1, ...pipeline.stages.map((stage) => stage.layers?.[1] ?? -1)) + 1;
    const lastFailure = pipeline.failures.at(-1);
    const summary = [
        pipeline.state,
        pipeline.plan && `~${pipeline.plan.estimatedMsPerToken.toFixed(1)} ms/token`,
        pipeline.failovers > 0 && `${pipeline.failovers} failover${pipeline.failovers === 1 ? '' : 's'}`,
        (pipeline.spares?.length ?? 0) > 0 && `spares ${pipeline.spares!.filter((spare) => spare.state === 'ready').length}/${pipeline.spares!.length} ready`
    ].filter(Boolean).join(' · ');
    return (
        <>
            <Text wrap="truncate-end"><Text bold>{pipeline.model}</Text> {summary}{pipeline.placementMatches === false && <Text color="yellow"> · llama.cpp placed layers off the plan</Text>}{pipeline.speculation && ` · ${formatSpeculation(pipeline.speculation)}`}</Text>
            {pipeline.plan
                ? <Text wrap="truncate-end">{layerBar(pipeline.stages.map((stage) => stage.layers), totalLayers, width)} <Text dimColor>{pipeline.plan.reason}</Text></Text>
                : pipeline.reason !== null && <Text wrap="truncate-end" dimColor>{pipeline.reason}</Text>}
            {stageRows(pipeline).map((row, index) => <Text key={pipeline.stages[index]!.peer} wrap="truncate-end">{row}</Text>)}
            {lastFailure && <Text wrap="truncate-end" color="yellow">last failure {new Date(lastFailure.at).toTimeString().slice(0, 8)} {lastFailure.peer.slice(0, 8)}: {lastFailure.reason}</Text>}
        </>
    );
}

/** Pipelines this node coordinates, and the layers it hosts for peers (in the title); nothing when it does neither. */
export function PipelinePanel({cluster, focused, width = 20}: Pick<DashboardState, 'cluster'> & {focused?: boolean, width?: number}) {
    if (!clusterActive(cluster))
        return null;
    return (
        <Panel title={`Sharding · hosting ${formatHosting(cluster.hosting)}`} focused={focused}>
            {cluster.pipelines.map((pipeline) => <PipelineLines key={pipeline.model} pipeline={pipeline} width={width}/>)}
        </Panel>
    );
}
