import test from 'ava';
import {getLlama} from 'node-llama-cpp';
import {ModelRuntime} from '../engine/worker/model-runtime.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {greedyCompletion} from '../harness/generation-requests.js';

/**
 * Prompts of different lengths evaluated in one step: llama.cpp splits the batch and returns its outputs out of
 * order, then puts them back in order on the first read (engine/worker/output-order-guard.ts). The real
 * node-llama-cpp and the demo model, in this process.
 */

const SEQUENCES = 8;
const ROUNDS = 60;
const WORDS = 'such wow many peers much doge very layers so tokens amaze light work the said'.split(' ');

test('prompts evaluated together each get the first token of their own prompt, as alone', async (t) => {
    const {modelPath, cleanup} = await createDataDirWithDemoModel();
    t.teardown(cleanup);
    const llama = await getLlama({gpu: false, build: 'never'});
    const runtime = await ModelRuntime.load(llama, {id: 'demo', path: modelPath},
        {models: [], threads: 1, parallelSequences: SEQUENCES, contextSize: SEQUENCES * 256, gpu: false}, () => undefined);
    t.teardown(() => runtime.dispose());
    const first = async (prompt: string) =>
        (await runtime.generate(greedyCompletion(prompt, 1), {signal: new AbortController().signal, onText: () => undefined})).text;
    const wrong: string[] = [];
    const answers = new Set<string>();
    for (let round = 0; round < ROUNDS; round++) {
        // New prompts each round (nothing cached), each its own words, longest first: the step splits into
        // micro-batches, and the shorter prompts' outputs come first, in reverse order.
        const prompts = Array.from({length: SEQUENCES}, (_, i) =>
            `${round} ${Array.from({length: 2 * (SEQUENCES - i)}, (_, j) => WORDS[(round * 7 + i * 5 + j * 3) % WORDS.length]).join(' ')}`);
        const together = await Promise.all(prompts.map(first));
        for (const [i, prompt] of prompts.entries()) {
            const alone = await first(prompt);
            answers.add(alone);
            if (together[i] !== alone)
                wrong.push(`round ${round}, prompt ${i}: ${JSON.stringify(together[i])} instead of ${JSON.stringify(alone)}`);
        }
    }
    t.deepEqual(wrong, []);
    // Different prompts answer differently, so a request given another's output would show.
    t.true(answers.size >= 10, `${answers.size} different first tokens`);
});
