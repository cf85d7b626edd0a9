import {Text} from 'ink';
import {formatBytes} from '../text-format.js';
import type {DashboardState} from '../dashboard-state.js';
import {progressBar} from '../text-graphics.js';
import {Panel} from './panel.js';

export function DevicePanel({device, engine, progress, focused}: Pick<DashboardState, 'device' | 'engine' | 'progress'> & {focused?: boolean}) {
    const tflops = device?.measuredTflops ?? device?.lookupTflops;
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
            <Text>models {engine.models.join(', ') || 'none'}  ({engine.running} running, {engine.queued} queued)</Text>
            {progress.map((item) => <Text key={item.label}>{item.label} {progressBar(item.fraction, 16)}</Text>)}
        </Panel>
    );
}
