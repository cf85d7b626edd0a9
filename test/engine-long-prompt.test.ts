import test from 'ava';
import {EngineSupervisor} from '../engine/engine-supervisor.js';
import {byteTokenBan} from '../harness/byte-token-ban.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {greedyCompletion, repeatedPrompt} from '../harness/generation-requests.js';

/**
 * A job that sends nothing for longer than the stall limit, yet advances, is not a stall: a long prompt (each
 * evaluated chunk reports progress) and a long tool call (sent whole at its end; each token reports progress).
 */

/**
 * Well above a prompt chunk's time even on a loaded machine (a request alone takes 512 tokens a step: about 4 s on
 * this model on one thread, and twice that under a busy CI run), well below the whole job's.
 */
const STALL_MS = 10_000;

let engine: EngineSupervisor;
let cleanup: () => Promise<void>;

test.before(async () => {
    // The benchmark's medium model: a long prompt or a long call takes many seconds on one thread.
    const fixture = await createDataDirWithDemoModel({layers: 12, width: 768, headCount: 12, feedForwardLength: 2048, endsText: false});
    cleanup = fixture.cleanup;
    engine = new EngineSupervisor({
        models: [{id: 'demo', path: fixture.modelPath}], threads: 1, parallelSequences: 2, contextSize: 4096, gpu: false,
        tokenStallMs: STALL_MS, pingIntervalMs: 100
    });
    await engine.start();
});

test.after.always(async () => {
    await engine?.dispose();
    await cleanup?.();
});

test.serial('a prompt that takes longer than the stall limit is not a stall: each evaluated chunk shows the job alive', async (t) => {
    const pid = engine.getStatus().pid;
    // Another stream runs meanwhile, so the prompt goes in shared 128-token chunks.
    const controller = new AbortController();
    const running = engine.generate(greedyCompletion('Such wow', 3000), {signal: controller.signal, onText: () => undefined}).catch(() => undefined);
    const long = await engine.generate(greedyCompletion(repeatedPrompt(270), 2), {onText: () => undefined});
    controller.abort();
    await running;

    t.log(`${long.usage.promptTokens} prompt tokens in ${Math.round(long.timings.promptMs)} ms`);
    t.true(long.timings.promptMs > STALL_MS, 'the prompt took longer than the stall limit (else this proves nothing)');
    t.is(long.usage.completionTokens, 2);
    t.is(engine.getStatus().restarts, 0);
    t.is(engine.getStatus().pid, pid);
});

test.serial('a tool call that takes longer than the stall limit is not a stall: each token written shows the job alive', async (t) => {
    const pid = engine.getStatus().pid;
    // Two strings: llama.cpp's grammars repeat an item at most 2,000 times.
    const text = {type: 'string', minLength: 1500, maxLength: 1500};
    const parameters = {type: 'object', properties: {first: text, second: text}, required: ['first', 'second'], additionalProperties: false};
    const sent: number[] = [];
    const progress: number[] = [];
    const result = await engine.generate({
        kind: 'chat', model: 'demo', messages: [{role: 'user', content: 'Write'}],
        // Byte tokens banned: random weights write malformed UTF-8 with them, which decodes to more characters than the grammar counted.
        sampling: {temperature: 0, stop: [], maxTokens: 2000, responseFormat: {type: 'text'}, logitBias: byteTokenBan()},
        tools: {tools: [{name: 'write', parameters}], choice: 'required', parallel: false}
    }, {onText: (_text, tokens) => sent.push(tokens.length), onProgress: (tokens) => progress.push(tokens)});

    t.log(`a call of ${result.usage.completionTokens} tokens in ${Math.round(result.timings.generationMs)} ms`);
    t.true(result.timings.generationMs > STALL_MS, 'the call took longer than the stall limit (else this proves nothing)');
    t.is(result.finishReason, 'tool_calls');
    const written = JSON.parse(result.toolCalls![0]!.arguments) as {first: string, second: string};
    t.deepEqual([[...written.first].length, [...written.second].length], [1500, 1500]);
    t.deepEqual(sent, [result.usage.completionTokens], 'the call came whole, in one chunk');
    t.true(progress.length > 100);
    t.deepEqual(progress, [...progress].sort((a, b) => a - b), 'the call grows');
    t.is(engine.getStatus().restarts, 0);
    t.is(engine.getStatus().pid, pid);
});
