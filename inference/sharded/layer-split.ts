/**
 * How a plan becomes llama.cpp's layer split (docs/architecture.md, "Sharding", "The tunnel"). llama.cpp keeps the
 * first `layers + 1 - gpuLayers` layers on the CPU and splits the rest, the output layer counted as one more, over
 * the RPC devices by the free memory each reports: layer j of the offloaded ones goes to the first device whose
 * cumulative share exceeds j / offloaded. The last device also takes the output layer; it may take nothing else
 * (the coordinator's own output device, which keeps the logits at home).
 */

/** Reported bytes per layer: any unit gives the same split; this one keeps the numbers plausible. */
const BYTES_PER_LAYER_UNIT = 2 ** 20;

export interface LayerSplit {
    /** llama.cpp's `n_gpu_layers`: every remote stage's layers plus the output layer. */
    gpuLayers: number,
    /** The free (and total) memory each device reports, in order. */
    reportedBytes: bigint[]
}

/**
 * `coordinatorLayers`: layers kept on the coordinator (the first ones); `deviceLayers`: each RPC device's layer
 * count in order, every one at least 1 but the last, which also holds the output layer.
 */
export function layerSplit(coordinatorLayers: number, deviceLayers: number[]): LayerSplit {
    if (deviceLayers.length === 0)
        throw new RangeError('a split needs at least one device');
    const last = deviceLayers.length - 1;
    if (!Number.isInteger(coordinatorLayers) || coordinatorLayers < 0
        || deviceLayers.some((count, index) => !Number.isInteger(count) || count < (index === last ? 0 : 1)))
        throw new RangeError(`invalid layer counts: ${coordinatorLayers}, [${deviceLayers.join(', ')}]`);
    const gpuLayers = deviceLayers.reduce((sum, count) => sum + count, 0) + 1;
    // Boundaries in offloaded layers (halves, doubled to stay integral): stage k ends at cumulative − ½.
    const reportedBytes: bigint[] = [];
    let cumulative = 0;
    let previousBoundary = 0;
    deviceLayers.forEach((count, index) => {
        cumulative += count;
        const boundary = index === last ? 2 * gpuLayers : 2 * cumulative - 1;
        reportedBytes.push(BigInt(boundary - previousBoundary) * BigInt(BYTES_PER_LAYER_UNIT / 2));
        previousBoundary = boundary;
    });
    return {gpuLayers, reportedBytes};
}
