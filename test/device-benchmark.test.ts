import test from 'ava';
import {lookupGpuTflops} from '../engine/device-benchmark/gpu-lookup-table.js';
import {runCli, startDaemon} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';

test('the GPU lookup table knows common cards and not CPUs', (t) => {
    t.is(lookupGpuTflops('NVIDIA GeForce RTX 4090'), 165);
    t.is(lookupGpuTflops('NVIDIA H100 80GB HBM3'), 989);
    t.is(lookupGpuTflops('NVIDIA H100 PCIe'), 756);
    t.is(lookupGpuTflops('NVIDIA GeForce RTX 4070 Ti SUPER'), 80);
    t.is(lookupGpuTflops('AMD EPYC 7B13'), null);
});

test('strongdoge bench measures compute, generation and bandwidth, caches it, and the node announces it', async (t) => {
    const fixture = await createDataDirWithDemoModel();
    t.teardown(fixture.cleanup);
    const first = await runCli(['bench', '--model', 'demo', '--json', '--threads', '1', '--data-dir', fixture.dataDir]);
    t.is(first.code, 0, first.stderr);
    const measured = JSON.parse(first.stdout);
    t.false(measured.cached);
    t.true(measured.measuredTflops > 0);
    t.true(measured.promptTokensPerSecond > 0);
    t.true(measured.generationTokensPerSecond > 0);
    t.true(measured.memoryBandwidthGBs > 0);
    t.true(measured.model.parameters > 5_000_000 && measured.model.parameters < 6_000_000, String(measured.model.parameters));
    // 2 × parameters × tokens / time: the two speeds and the FLOP count must agree.
    t.true(Math.abs(measured.measuredTflops * 1e12 - 2 * measured.model.parameters * measured.promptTokensPerSecond) / (measured.measuredTflops * 1e12) < 1e-6);

    const again = await runCli(['bench', '--model', 'demo', '--json', '--threads', '1', '--data-dir', fixture.dataDir]);
    t.true(JSON.parse(again.stdout).cached);
    t.is(JSON.parse(again.stdout).measuredTflops, measured.measuredTflops);

    const human = await runCli(['bench', '--model', 'demo', '--threads', '1', '--data-dir', fixture.dataDir]);
    t.regex(human.stdout, /compute\s+[\d.]+ TFLOPS measured/);

    const daemon = await startDaemon(['--model', 'demo', '--data-dir', fixture.dataDir, '--threads', '1']);
    t.teardown(() => daemon.stop().then(() => undefined));
    const node = await (await fetch(`${daemon.origin}/api/node`)).json() as {compute: {measuredTflops: number}};
    t.is(node.compute.measuredTflops, measured.measuredTflops);
});
