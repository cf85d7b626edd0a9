import type {Capabilities} from '../swarm/capabilities.js';

export function capabilitiesFixture(overrides: Partial<Capabilities> = {}): Capabilities {
    return {
        software: '0.1.0',
        device: {backend: false, gpuNames: [], vramTotalBytes: 0, vramFreeBytes: 0, ramFreeBytes: 8e9, cpuThreads: 1},
        compute: {measuredTflops: null, lookupTflops: null, generationTokensPerSecond: null, memoryBandwidthGBs: null},
        models: [],
        shards: [],
        load: {active: 0, queued: 0},
        pricePerMillionTokens: null,
        ...overrides
    };
}
