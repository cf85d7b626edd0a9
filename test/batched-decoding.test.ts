import {setTimeout as sleep} from 'node:timers/promises';
import test from 'ava';
import {getLlama, LlamaCompletion, type Llama} from 'node-llama-cpp';
import type {GenerationRequest, GenerationResult} from '../core/inference-types.js';
import {ModelRuntime} from '../engine/worker/model-runtime.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {greedyCompletion, repeatedPrompt} from '../harness/generation-requests.js';

/** The engine's model runtime in this process, with the real node-llama-cpp and the demo model (never ends by itself). */
let llama: Llama;
let runtime: ModelRuntime;
let modelPath: string;
let cleanup: () => Promise<void>;

test.before(async () => {
    ({modelPath, cleanup} = await createDataDirWithDemoModel({endsText: false}));
    llama = await getLlama({gpu: false, build: 'never'});
    runtime = await ModelRuntime.load(llama, {id: 'demo', path: modelPath},
        {models: [], threads: 1, parallelSequences: 4, contextSize: 4 * 1024, gpu: false}, () => undefined);
});

test.after.always(async () => {
    await runtime?.dispose();
    await cleanup?.();
});

async function generate(request: GenerationRequest, signal = new AbortController().signal) {
    const chunks: {text: string, tokens: number[]}[] = [];
    const result: GenerationResult = await runtime.generate(request, {signal, onText: (text, tokens) => chunks.push({text, tokens})});
    return {result, chunks};
}

const PROMPTS = ['Such wow', 'The doge said', 'Many peers make light work', 'Layers and tokens'];

test.serial('concurrent requests are decoded together: about one step per token for all of them', async (t) => {
    const before = runtime.batching;
    const results = await Promise.all(PROMPTS.map((prompt) => generate(greedyCompletion(prompt, 48))));
    const steps = runtime.batching.steps - before.steps;
    const tokens = runtime.batching.tokens - before.tokens;
    let passes = 0;
    for (const {result} of results) {
        t.is(result.usage.completionTokens, 48);
        t.is(result.finishReason, 'length');
        // Lookup drafting (the default): a pass may yield several tokens.
        passes += result.speculation!.passes;
    }
    t.is(tokens, passes - 4, 'each pass after the prompt\'s is one request\'s decode in a step');
    t.true(tokens <= 4 * 47, 'at most 47 decodes after the prompt (the 48th token is sampled, never decoded)');
    // Four requests in lockstep: at most 47 steps, plus a few while requests that arrived a decode apart catch up;
    // one request at a time would take up to 188.
    t.true(steps <= 60, `${steps} steps for ${tokens} tokens`);
});

test.serial('a request alone says exactly what node-llama-cpp\'s own LlamaCompletion says, before and after concurrent work', async (t) => {
    const model = await llama.loadModel({modelPath});
    t.teardown(() => model.dispose());
    const context = await model.createContext({contextSize: 1024, threads: 1});
    const sequence = context.getSequence();
    for (const prompt of PROMPTS) {
        const direct = await new LlamaCompletion({contextSequence: sequence})
            .generateCompletion(prompt, {temperature: 0, maxTokens: 40, repeatPenalty: false});
        t.is((await generate(greedyCompletion(prompt, 40))).result.text, direct, prompt);
    }
    await Promise.all(PROMPTS.map((prompt) => generate(greedyCompletion(`${prompt}!`, 30))));
    const direct = await new LlamaCompletion({contextSequence: sequence})
        .generateCompletion(PROMPTS[0]!, {temperature: 0, maxTokens: 40, repeatPenalty: false});
    t.is((await generate(greedyCompletion(PROMPTS[0]!, 40))).result.text, direct);
});

test.serial('concurrent answers equal the same requests alone (no sequence sees another\'s tokens)', async (t) => {
    const alone = [];
    for (const prompt of PROMPTS)
        alone.push((await generate(greedyCompletion(prompt, 32))).result.text);
    const together = await Promise.all(PROMPTS.map((prompt) => generate(greedyCompletion(prompt, 32))));
    // The demo model damps its residual stream so that batched rounding does not change greedy picks (engine/demo).
    t.deepEqual(together.map(({result}) => result.text), alone);
});

test.serial('the streamed chunks spell the answer, and their tokens are the answer\'s tokens', async (t) => {
    const {result, chunks} = await generate(greedyCompletion('Such wow', 40, {stop: ['e']}));
    t.is(chunks.map((chunk) => chunk.text).join(''), result.text);
    t.false(result.text.includes('e'));
    t.is(result.finishReason, 'stop');
    t.true(result.usage.completionTokens >= chunks.flatMap((chunk) => chunk.tokens).length);
});

test.serial('a cancelled request ends at once; the others keep their tokens and their text', async (t) => {
    const controller = new AbortController();
    const alone = (await generate(greedyCompletion(PROMPTS[1]!, 40))).result.text;
    const cancelled = generate(greedyCompletion(PROMPTS[0]!, 2000), controller.signal);
    const kept = generate(greedyCompletion(PROMPTS[1]!, 40));
    setTimeout(() => controller.abort(), 50);
    const [cancelledResult, keptResult] = await Promise.all([cancelled, kept]);
    t.true(cancelledResult.result.usage.completionTokens < 2000);
    t.is(keptResult.result.text, alone);
});

test.serial('a budget of zero tokens left (a continuation that used it up) generates nothing', async (t) => {
    const {result} = await generate({...greedyCompletion('Such wow', 3), continuation: {tokens: [300, 301, 302]}});
    t.is(result.usage.completionTokens, 0);
    t.is(result.finishReason, 'length');
});

test.serial('a long prompt is evaluated in chunks between the running streams\' tokens, not all at once', async (t) => {
    let runningTokens = 0;
    let atLongFirstToken: number | undefined;
    const controller = new AbortController();
    const running = generate(greedyCompletion(PROMPTS[0]!, 3000), controller.signal);
    // A second running stream, whose tokens are counted.
    const counted = runtime.generate(greedyCompletion(PROMPTS[1]!, 3000), {
        signal: controller.signal,
        onText: (_text, tokens) => runningTokens += tokens.length
    });
    while (runningTokens < 8)
        await sleep(1);
    const longPrompt = repeatedPrompt(150);
    const atLongStart = runningTokens;
    const long = await runtime.generate(greedyCompletion(longPrompt, 2), {
        signal: new AbortController().signal,
        onText: () => atLongFirstToken ??= runningTokens
    });
    controller.abort();
    await Promise.all([running, counted]);
    const chunks = Math.ceil(long.usage.promptTokens / 128);
    t.true(long.usage.promptTokens > 1500, `${long.usage.promptTokens} prompt tokens`);
    // One token per chunk (a few may be held back a step as incomplete UTF-8); all at once would give one or two.
    t.true(atLongFirstToken! - atLongStart >= chunks - 4, `${atLongFirstToken! - atLongStart} tokens during ${chunks} chunks`);
});
