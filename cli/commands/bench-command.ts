import {existsSync} from 'node:fs';
import {join} from 'node:path';
import {Command} from 'commander';
import {writeDemoModel} from '../../engine/demo/demo-model.js';
import {BenchmarkCache, benchmarkCachePath} from '../../engine/device-benchmark/benchmark-cache.js';
import type {DeviceBenchmarkResult} from '../../engine/device-benchmark/device-benchmark.js';
import {loadNodeSettings} from '../config/load-node-settings.js';
import type {SettingFlags} from '../config/node-config.js';
import {ensureDataDir, modelsDir} from '../data-dir.js';
import {formatBytes} from '../../core/display.js';
import {addDataDirOption, settingOption} from './shared-options.js';

/** The model benchmarked when none is given: big enough for matrix work to dominate (~86M parameters). */
const BENCHMARK_MODEL = {name: 'bench-86m.gguf', options: {layers: 12, width: 768, headCount: 12, feedForwardLength: 2048, seed: 7}};

function report(result: DeviceBenchmarkResult, cached: boolean) {
    const lines = [
        `device        ${result.device} (${result.backend || 'CPU'}, ${result.threads} threads)${cached ? ' [cached; --force to measure again]' : ''}`,
        `model         ${result.model.path} (${(result.model.parameters / 1e6).toFixed(1)}M parameters, ${formatBytes(result.model.weightBytes)})`,
        `compute       ${result.measuredTflops.toFixed(3)} TFLOPS measured (prompt processing, ${result.promptTokensPerSecond.toFixed(0)} tokens/s)`,
        `              ${result.lookupTflops === null ? 'no datasheet value for this device' : `${result.lookupTflops} TFLOPS datasheet (FP16)`}`,
        `generation    ${result.generationTokensPerSecond.toFixed(1)} tokens/s`,
        `bandwidth     ${result.memoryBandwidthGBs.toFixed(1)} GB/s effective (weights read per token)`
    ];
    process.stdout.write(lines.join('\n') + '\n');
}

export function benchCommand() {
    const command = new Command('bench')
        .description('measure this device (compute, generation speed, memory bandwidth); peers see the result')
        .option('-m, --model <path|name|hf:ref>', 'model to measure with (default: a generated 86M-parameter model)')
        .addOption(settingOption('threads', {description: 'CPU threads', showDefault: false}))
        .addOption(settingOption('gpu', {showDefault: false}))
        .option('--force', 'measure again even if a result is cached')
        .option('--json', 'print JSON');
    addDataDirOption(command);
    return command.action(async (flags: Pick<SettingFlags, 'threads' | 'gpu'> & {model?: string, force?: boolean, json?: boolean, dataDir?: string}) => {
        // node-llama-cpp and the model tools load only when the command runs.
        const [{getLlama}, {deviceKey, runDeviceBenchmark}, {sha256OfFile}, {resolveModelRefs}, {createLogger}] = await Promise.all([
            import('node-llama-cpp'), import('../../engine/device-benchmark/device-benchmark.js'), import('../../engine/model-files.js'),
            import('../model-refs.js'), import('../../node/logger.js')
        ]);
        const settings = await loadNodeSettings({threads: flags.threads, gpu: flags.gpu, dataDir: flags.dataDir});
        const {dataDir} = settings;
        await ensureDataDir(dataDir);
        const progress = (phase: string) => {
            if (!flags.json)
                process.stderr.write(`… ${phase}\n`);
        };

        let modelPath: string;
        if (flags.model === undefined) {
            modelPath = join(modelsDir(dataDir), BENCHMARK_MODEL.name);
            // Deterministic weights: a file already there is the same model.
            if (!existsSync(modelPath)) {
                progress(`writing the benchmark model ${modelPath}`);
                await writeDemoModel(modelPath, BENCHMARK_MODEL.options);
            }
        } else {
            const logger = createLogger({level: 'warn', format: 'human', output: process.stderr});
            const [spec] = await resolveModelRefs([flags.model], dataDir, {logger, showProgressBar: process.stderr.isTTY});
            modelPath = spec!.path;
        }

        const gpu = settings.gpu === 'off' ? false : 'auto';
        const llama = await getLlama({gpu, build: 'never'});
        const device = deviceKey(llama.gpu, llama.gpu === false ? [] : await llama.getGpuDeviceNames());
        const modelKey = await sha256OfFile(modelPath);
        const cache = new BenchmarkCache(benchmarkCachePath(dataDir));
        const cached = flags.force ? undefined : await cache.find(device, modelKey);
        const result = cached ?? await runDeviceBenchmark({modelPath, threads: settings.threads, gpu, onProgress: progress});
        if (cached === undefined)
            await cache.store(device, modelKey, result);
        if (flags.json)
            process.stdout.write(JSON.stringify({deviceKey: device, cached: cached !== undefined, ...result}, null, 2) + '\n');
        else
            report(result, cached !== undefined);
    });
}
