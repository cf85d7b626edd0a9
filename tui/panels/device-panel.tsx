import {Text} from 'ink';
import {formatBytes} from '../../core/display.js';
import type {DashboardState, PipelineView} from '../dashboard-state.js';
import {formatSpeculation} from '../text-format.js';
import {progressBar} from '../text-graphics.js';
import {Panel} from './panel.js';

export interface DevicePanelProps extends Pick<DashboardState, 'device' | 'engine' | 'progress'> {
    /** The pipelines this node coordinates: their models are served here too; defaults to none. */
    pipelines?: readonly Pick<PipelineView, 'model'>[],
    focused?: boolean
}

/**
 * This node's device, and the models it serves: its engine's, and those it runs as a pipeline over peers (whose
 * speculation the pipeline panel shows). A line per engine model that speculated, the model's name last: a narrow
 * column truncates the name, not the numbers.
 */
export function DevicePanel({device, engine, progress, pipelines = [], focused}: DevicePanelProps) {
    const tflops = device?.measuredTflops ?? device?.lookupTflops;
    const models = [...engine.models.map((model) => model.id), ...pipelines.map((pipeline) => `${pipeline.model} (pipeline)`)];
    return (
        <Panel title="This device" focused={focused}>
            {device === null
                ? <Text dimColor>detecting…</Text>
                : <>
                    <Text wrap="truncate-end">{device.backend
                        ? `${device.backend} ${device.gpuNames.join(', ')}, VRAM ${formatBytes(device.vramFreeBytes)} free of ${formatBytes(device.vramTotalBytes)}`
                        : `CPU, ${device.cpuThreads} threads`}</Text>
                    <Text>compute {tflops == null ? 'not measured (strongdoge bench)' : `${tflops.toFixed(3)} TFLOPS${device.measuredTflops == null ? ' (datasheet)' : ''}`}</Text>
                </>}
            <Text>models {models.join(', ') || 'none'}  ({engine.running} running, {engine.queued} queued)</Text>
            {engine.models.map((model) => model.speculation && <Text key={model.id} wrap="truncate-end">{formatSpeculation(model.speculation)} · {model.id}</Text>)}
            {progress.map((item) => <Text key={item.label}>{item.label} {progressBar(item.fraction, 16)}</Text>)}
        </Panel>
    );
}
