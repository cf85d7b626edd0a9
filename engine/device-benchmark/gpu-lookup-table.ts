/**
 * A device's compute from its datasheet, by name (docs/architecture.md, "Device benchmark"). Dense FP16 tensor
 * TFLOP/s (no sparsity), the figure LLM inference leans on. A lookup is a prior; the measured value wins.
 */
const GPU_FP16_TFLOPS: [pattern: RegExp, tflops: number][] = [
    [/\bH200\b/i, 989],
    [/\bH100\b.*\bPCIe\b/i, 756],
    [/\bH100\b/i, 989],
    [/\bA100\b/i, 312],
    [/\bL40S\b/i, 362],
    [/\bL40\b/i, 181],
    [/\bA6000\b/i, 155],
    [/\bL4\b/i, 121],
    [/\bA10G?\b/i, 125],
    [/\bV100\b/i, 125],
    [/\bT4\b/i, 65],
    [/RTX\s*5090/i, 210],
    [/RTX\s*5080/i, 113],
    [/RTX\s*4090/i, 165],
    [/RTX\s*4080/i, 97],
    [/RTX\s*4070\s*Ti/i, 80],
    [/RTX\s*4070/i, 58],
    [/RTX\s*4060\s*Ti/i, 44],
    [/RTX\s*4060/i, 30],
    [/RTX\s*3090/i, 71],
    [/RTX\s*3080/i, 60],
    [/RTX\s*3070/i, 41],
    [/RTX\s*3060/i, 26],
    [/RTX\s*2080\s*Ti/i, 54],
    [/RX\s*7900\s*XTX/i, 123],
    [/RX\s*7900\s*XT\b/i, 103],
    [/RX\s*6900\s*XT/i, 46],
    [/Apple\s*M\d\s*Ultra/i, 54],
    [/Apple\s*M\d\s*Max/i, 27],
    [/Apple\s*M\d\s*Pro/i, 13],
    [/Apple\s*M\d/i, 7]
];

export function lookupGpuTflops(deviceName: string): number | null {
    for (const [pattern, tflops] of GPU_FP16_TFLOPS)
        if (pattern.test(deviceName))
            return tflops;
    return null;
}
