import {BenchmarkCache, benchmarkCachePath} from '../engine/device-benchmark/benchmark-cache.js';
import {deviceKey} from '../engine/device-benchmark/device-benchmark.js';
import {lookupGpuTflops} from '../engine/device-benchmark/gpu-lookup-table.js';
import type {DeviceInfo} from '../core/inference-types.js';
import type {ComputeMeasurement} from './node-capabilities.js';

/**
 * What this node announces of its compute: what `strongdoge bench` measured on this device, or the datasheet value
 * alone (docs/architecture.md, "Device benchmark"); `measured` says which.
 */
export async function computeMeasurement(dataDir: string, device: Pick<DeviceInfo, 'backend' | 'gpuNames'>): Promise<{compute: ComputeMeasurement, measured: boolean}> {
    const measured = await new BenchmarkCache(benchmarkCachePath(dataDir)).latest(deviceKey(device.backend, device.gpuNames));
    const lookupTflops = device.gpuNames.map(lookupGpuTflops).find((value) => value !== null) ?? null;
    return {
        compute: {
            measuredTflops: measured?.measuredTflops ?? null,
            lookupTflops: measured?.lookupTflops ?? lookupTflops,
            generationTokensPerSecond: measured?.generationTokensPerSecond ?? null,
            memoryBandwidthGBs: measured?.memoryBandwidthGBs ?? null
        },
        measured: measured !== undefined
    };
}
