import test from 'ava';
import {EngineSupervisor} from '../engine/engine-supervisor.js';
import {createDataDirWithDemoModel} from './helpers/demo-model-fixture.js';
import {greedyCompletion, repeatedPrompt} from './helpers/generation-requests.js';

/** Well above a 128-token chunk's time even on a loaded machine, well below the whole prompt's. */
const STALL_MS = 2500;

test('a prompt that takes longer than the stall limit is not a stall: each evaluated chunk shows the job alive', async (t) => {
    // Wider than the default demo model, so that a long prompt takes seconds on one thread, in 128-token chunks.
    const fixture = await createDataDirWithDemoModel({layers: 8, width: 512, headCount: 8, feedForwardLength: 1024, endsText: false});
    t.teardown(fixture.cleanup);
    const engine = new EngineSupervisor({
        models: [{id: 'demo', path: fixture.modelPath}], threads: 1, parallelSequences: 2, contextSize: 4096, gpu: false,
        tokenStallMs: STALL_MS, pingIntervalMs: 100
    });
    t.teardown(() => engine.dispose());
    await engine.start();
    const pid = engine.getStatus().pid;

    // Another stream runs meanwhile, so the prompt goes in shared 128-token chunks.
    const controller = new AbortController();
    const running = engine.generate(greedyCompletion('Such wow', 3000), {signal: controller.signal, onText: () => undefined}).catch(() => undefined);
    const longPrompt = repeatedPrompt(270);
    const long = await engine.generate(greedyCompletion(longPrompt, 2), {onText: () => undefined});
    controller.abort();
    await running;

    t.log(`${long.usage.promptTokens} prompt tokens in ${Math.round(long.timings.promptMs)} ms`);
    t.true(long.timings.promptMs > STALL_MS, 'the prompt took longer than the stall limit (else this proves nothing)');
    t.is(long.usage.completionTokens, 2);
    t.is(engine.getStatus().restarts, 0);
    t.is(engine.getStatus().pid, pid);
});
