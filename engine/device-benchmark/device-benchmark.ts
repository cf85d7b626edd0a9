import {cpus} from 'node:os';
import {getLlama, LlamaCompletion, readGgufFileInfo, type Token} from 'node-llama-cpp';
import {lookupGpuTflops} from './gpu-lookup-table.js';

/** A device's effective compute, measured with what node-llama-cpp can run (docs/architecture.md, "Device benchmark"). */
export interface DeviceBenchmarkResult {
    device: string,
    backend: string | false,
    model: {path: string, parameters: number, weightBytes: number},
    threads: number,
    /** Method 2: FLOP/s of prompt processing, 2 × parameters × tokens / seconds. */
    measuredTflops: number,
    /** Method 1: the datasheet value for the GPU's name, when known. */
    lookupTflops: number | null,
    promptTokensPerSecond: number,
    generationTokensPerSecond: number,
    /** Weights are read once per generated token: weight bytes × tokens/s. */
    memoryBandwidthGBs: number,
    measuredAt: string
}

export interface DeviceBenchmarkOptions {
    modelPath: string,
    threads: number,
    gpu: 'auto' | false,
    promptTokens?: number,
    generatedTokens?: number,
    onProgress?: (phase: string) => void
}

export const deviceBenchmarkDefaults = {promptTokens: 512, generatedTokens: 64};

/** Parameters doing matrix work: every weight except the token embedding table (a lookup, not a matmul). */
async function countParameters(modelPath: string) {
    const info = await readGgufFileInfo(modelPath, {readTensorInfo: true});
    let parameters = 0;
    for (const tensor of info.fullTensorInfo ?? []) {
        if (tensor.name === 'token_embd.weight')
            continue;
        parameters += tensor.dimensions.reduce<number>((product, dim) => product * Number(dim), 1);
    }
    return parameters;
}

export function deviceKey(backend: string | false, gpuNames: string[]) {
    return backend ? `${backend}:${gpuNames.join('+')}` : `cpu:${cpus()[0]?.model.trim() ?? 'unknown'}`;
}

export async function runDeviceBenchmark(options: DeviceBenchmarkOptions): Promise<DeviceBenchmarkResult> {
    const {modelPath, threads, gpu, promptTokens, generatedTokens, onProgress} = {...deviceBenchmarkDefaults, ...options};
    onProgress?.('loading model');
    const llama = await getLlama({gpu, build: 'never', maxThreads: threads});
    const model = await llama.loadModel({modelPath, gpuLayers: llama.gpu === false ? 0 : 'max'});
    try {
        const parameters = await countParameters(modelPath);
        const gpuNames = llama.gpu === false ? [] : await llama.getGpuDeviceNames();
        const context = await model.createContext({contextSize: promptTokens + generatedTokens + 16, batchSize: promptTokens, threads});
        const vocabulary = model.fileInfo.metadata.tokenizer?.ggml?.tokens?.length ?? 256;
        // Deterministic "text": token ids spread over the vocabulary, skipping the first (special) ones.
        const tokens = Array.from({length: promptTokens}, (_, index) => (5 + (index * 7919) % (vocabulary - 5)) as Token);

        onProgress?.(`prompt processing: ${promptTokens} tokens`);
        const sequence = context.getSequence();
        await sequence.evaluateWithoutGeneratingNewTokens(tokens.slice(0, 8)); // warm-up
        await sequence.clearHistory();
        const promptStart = performance.now();
        await sequence.evaluateWithoutGeneratingNewTokens(tokens);
        const promptSeconds = (performance.now() - promptStart) / 1000;
        await sequence.clearHistory();

        onProgress?.(`generation: ${generatedTokens} tokens`);
        let firstTokenAt: number | undefined;
        let generated = 0;
        await new LlamaCompletion({contextSequence: sequence}).generateCompletion(tokens.slice(0, 16), {
            maxTokens: generatedTokens, temperature: 0, repeatPenalty: false,
            onToken: (chunk) => {
                firstTokenAt ??= performance.now();
                generated += chunk.length;
            }
        });
        const generationSeconds = (performance.now() - (firstTokenAt ?? performance.now())) / 1000;
        const generationTokensPerSecond = generated > 1 && generationSeconds > 0 ? (generated - 1) / generationSeconds : 0;
        const weightBytes = model.size;
        await context.dispose();

        return {
            device: llama.gpu === false ? cpus()[0]?.model.trim() ?? 'CPU' : gpuNames.join(', '),
            backend: llama.gpu,
            model: {path: modelPath, parameters, weightBytes},
            threads,
            measuredTflops: (2 * parameters * promptTokens) / promptSeconds / 1e12,
            lookupTflops: gpuNames.map(lookupGpuTflops).find((value) => value !== null) ?? null,
            promptTokensPerSecond: promptTokens / promptSeconds,
            generationTokensPerSecond,
            memoryBandwidthGBs: (weightBytes * generationTokensPerSecond) / 1e9,
            measuredAt: new Date().toISOString()
        };
    } finally {
        await model.dispose();
    }
}
