import type {ClusterStatus} from '../../node/node-status.js';
import {stageLetter} from '../../tui/text-graphics.js';
import {formatBytes, formatLayers, formatMs, formatPercent, formatTime, formatTransfer, plural, shortPeerId} from '../format.js';

type Pipeline = ClusterStatus['pipelines'][number];
type Stage = Pipeline['stages'][number];

/** Stage colours cycle through this many CSS classes (`stage-0` …). */
const STAGE_COLOURS = 6;

/** The model's layers as one bar, a colour per stage: which machine holds which part. */
function LayerBar({stages}: {stages: Stage[]}) {
    const total = Math.max(0, ...stages.map((stage) => (stage.layers?.[1] ?? -1) + 1));
    if (total === 0)
        return null;
    return (
        <svg class="layer-bar" viewBox={`0 0 ${total} 1`} preserveAspectRatio="none" role="img" aria-label={`${plural(total, 'layer')} by stage`}>
            {stages.map((stage, index) => stage.layers && (
                <rect key={stage.peer} class={`stage-${index % STAGE_COLOURS}`} x={stage.layers[0]} y="0" width={stage.layers[1] - stage.layers[0] + 1} height="1"/>
            ))}
        </svg>
    );
}

function StageCard({stage, index, loading}: {stage: Stage, index: number, loading: boolean}) {
    // This node's own layers travel over no tunnel: no hop, success rate or traffic.
    const transferring = !stage.self && stage.transferBytes > 0 && (loading || stage.bytesSent < stage.transferBytes);
    return (
        <li class="stage" data-stage={index}>
            <div class="stage-head">
                <span class={`stage-letter stage-${index % STAGE_COLOURS}`}>{stageLetter(index)}</span>
                <span class="mono" title={stage.peer}>{stage.self ? 'this node' : shortPeerId(stage.peer)}</span>
            </div>
            <dl class="facts">
                <dt>layers</dt><dd class="stage-layers">{formatLayers(stage.layers)}</dd>
                <dt>weights</dt><dd>{formatBytes(stage.bytes)} · {formatPercent(stage.loadRatio)}</dd>
                {!stage.self && <><dt>hop</dt><dd class="stage-hop">{formatMs(stage.hopMs)}</dd></>}
                {!stage.self && <><dt>ok</dt><dd class="stage-ok">{formatPercent(stage.successRate)}</dd></>}
                {!stage.self && <><dt>traffic</dt><dd class="stage-traffic">↑{formatBytes(stage.bytesSent)} ↓{formatBytes(stage.bytesReceived)}</dd></>}
            </dl>
            {transferring && (
                <div class="transfer">
                    <progress max={stage.transferBytes} value={Math.min(stage.bytesSent, stage.transferBytes)}/>
                    <span>weights {formatTransfer(stage.bytesSent, stage.transferBytes)}</span>
                </div>
            )}
        </li>
    );
}

/** A pipeline this node coordinates: its stages in order, as the activations flow through them. */
export function PipelineDiagram({pipeline}: {pipeline: Pipeline}) {
    const recentFailures = pipeline.failures.slice(-5).reverse();
    return (
        <article class="pipeline" data-model={pipeline.model}>
            <h3>
                <span class="mono">{pipeline.model}</span> <span class={`badge state-${pipeline.state}`}>{pipeline.state}</span>
                <span class="muted"> · {plural(pipeline.stages.length, 'stage')}
                    {pipeline.plan && ` · ~${pipeline.plan.estimatedMsPerToken.toFixed(1)} ms/token`}
                    {` · ${plural(pipeline.failovers, 'failover')}`}</span>
            </h3>
            {pipeline.reason !== null && <p class="muted">{pipeline.reason}</p>}
            {pipeline.plan && <p class="muted">{pipeline.plan.reason}</p>}
            {pipeline.placementMatches === false && <p class="warning">llama.cpp placed layers where the plan did not.</p>}
            <LayerBar stages={pipeline.stages}/>
            <ol class="stages">
                {pipeline.stages.map((stage, index) => <StageCard key={stage.peer} stage={stage} index={index} loading={pipeline.state === 'loading'}/>)}
            </ol>
            {recentFailures.length > 0 && (
                <ul class="failures">
                    {recentFailures.map((failure) => (
                        <li key={`${failure.at} ${failure.peer}`}>{formatTime(failure.at)} <span class="mono">{shortPeerId(failure.peer)}</span>: {failure.reason}</li>
                    ))}
                </ul>
            )}
        </article>
    );
}
