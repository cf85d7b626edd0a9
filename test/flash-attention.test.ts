import test from 'ava';
import {getLlama} from 'node-llama-cpp';
import {ModelRuntime} from '../engine/worker/model-runtime.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {greedyCompletion} from '../harness/generation-requests.js';

test('flash attention as set: llama.cpp\'s choice by default, on or off when asked, and the model answers each way', async (t) => {
    const {modelPath, cleanup} = await createDataDirWithDemoModel({endsText: false});
    t.teardown(cleanup);
    const llama = await getLlama({gpu: false, build: 'never'});
    const base = {models: [], threads: 1, parallelSequences: 1, contextSize: 512, gpu: false as const};
    for (const [setting, expected] of [[undefined, 'auto'], ['auto', 'auto'], ['on', 'on'], ['off', 'off']] as const) {
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
