import test from 'ava';
import {getLlama} from 'node-llama-cpp';
import {contextFlashAttention} from '../engine/worker/flash-attention.js';
import {ModelRuntime} from '../engine/worker/model-runtime.js';
import {createDataDirWithDemoModel} from './helpers/demo-model-fixture.js';
import {greedyCompletion} from './helpers/generation-requests.js';

test('auto: off for a model wholly on the CPU, llama.cpp\'s choice with GPU layers or a pipeline', (t) => {
    t.false(contextFlashAttention('auto', {gpuLayers: 0, sharded: false}));
    t.is(contextFlashAttention('auto', {gpuLayers: 1, sharded: false}), 'auto');
    t.is(contextFlashAttention('auto', {gpuLayers: 13, sharded: false}), 'auto');
    t.is(contextFlashAttention('auto', {gpuLayers: 13, sharded: true}), 'auto');
});

test('on and off are what they say wherever the layers are', (t) => {
    for (const placement of [{gpuLayers: 0, sharded: false}, {gpuLayers: 13, sharded: false}, {gpuLayers: 13, sharded: true}]) {
        t.true(contextFlashAttention('on', placement));
        t.false(contextFlashAttention('off', placement));
    }
});

test('a model loaded on the CPU: flash attention off by default, on when asked, and the model answers either way', async (t) => {
    const {modelPath, cleanup} = await createDataDirWithDemoModel({endsText: false});
    t.teardown(cleanup);
    const llama = await getLlama({gpu: false, build: 'never'});
    const base = {models: [], threads: 1, parallelSequences: 1, contextSize: 512, gpu: false as const};
    for (const [setting, expected] of [[undefined, 'off'], ['auto', 'off'], ['on', 'on'], ['off', 'off']] as const) {
        const runtime = await ModelRuntime.load(llama, {id: 'demo', path: modelPath},
            {...base, ...(setting && {flashAttention: setting})}, () => undefined);
        try {
            t.is(runtime.info.flashAttention, expected, String(setting));
            const result = await runtime.generate(greedyCompletion('Such wow', 8), {signal: new AbortController().signal, onText: () => undefined});
            t.is(result.usage.completionTokens, 8);
        } finally {
            await runtime.dispose();
        }
    }
});
