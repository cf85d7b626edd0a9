import test from 'ava';
import {EngineSupervisor} from '../engine/engine-supervisor.js';
import type {GenerationRequest} from '../core/inference-types.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';

let engine: EngineSupervisor;
let cleanup: () => Promise<void>;

test.before(async () => {
    const fixture = await createDataDirWithDemoModel();
    cleanup = fixture.cleanup;
    engine = new EngineSupervisor({models: [{id: 'demo', path: fixture.modelPath}], threads: 1, parallelSequences: 2, contextSize: 2048, gpu: false});
    await engine.start();
});

test.after.always(async () => {
    await engine?.dispose();
    await cleanup?.();
});

const sampling = {temperature: 0, stop: [], maxTokens: 60, responseFormat: {type: 'text'} as const};
const requests: [string, GenerationRequest][] = [
    ['completion', {kind: 'completion', model: 'demo', prompt: 'The doge said', sampling}],
    ['chat', {kind: 'chat', model: 'demo', messages: [{role: 'system', content: 'Be a doge.'}, {role: 'user', content: 'What is a swarm?'}], sampling}]
];

for (const [name, request] of requests) {
    test.serial(`${name}: resuming from any streamed point continues with exactly the uninterrupted text`, async (t) => {
        const chunks: {text: string, tokens: number[]}[] = [];
        const whole = await engine.generate(request, {onText: (text, tokens) => chunks.push({text, tokens})});
        t.is(chunks.map((chunk) => chunk.text).join(''), whole.text, 'streamed text is the whole text');
        t.is(chunks.flatMap((chunk) => chunk.tokens).length, whole.usage.completionTokens);

        for (const cut of [1, 7, Math.floor(chunks.length / 2), chunks.length - 1]) {
            const before = chunks.slice(0, cut);
            const tokens = before.flatMap((chunk) => chunk.tokens);
            let resumedText = '';
            const resumed = await engine.generate({...request, continuation: {tokens}}, {onText: (text) => resumedText += text});
            t.is(before.map((chunk) => chunk.text).join('') + resumedText, whole.text, `cut after chunk ${cut}`);
            t.is(resumed.text, resumedText);
            t.is(tokens.length + resumed.usage.completionTokens, whole.usage.completionTokens, 'the budget counts the continuation');
            t.is(resumed.usage.promptTokens, whole.usage.promptTokens);
        }
    });
}

test.serial('a request the engine process cannot even receive fails alone and gives its slot back', async (t) => {
    // Past the proxy's bounds (a caller inside the node could still build one): too deep for the IPC's structured clone.
    let schema: Record<string, unknown> = {type: 'string'};
    for (let level = 0; level < 20_000; level++)
        schema = {type: 'object', properties: {a: schema}};
    const pid = engine.getStatus().pid;
    const error = await t.throwsAsync(engine.generate({kind: 'completion', model: 'demo', prompt: 'x', sampling: {...sampling, responseFormat: {type: 'json_schema', schema}}}));
    t.regex(error!.message, /cannot pass the request to the engine/);
    t.is(engine.getStatus().running, 0, 'the slot is free again');
    const after = await engine.generate(requests[0]![1]);
    t.is(after.usage.completionTokens, 60);
    t.is(engine.getStatus().pid, pid, 'the engine process was never disturbed');
});
