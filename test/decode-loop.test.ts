import test from 'ava';
import {DecodeLoop, type SteppedGeneration} from '../engine/worker/decode-loop.js';

/**
 * A stand-in for one sequence's decode, as node-llama-cpp's context sees it: each advance queues a decode in the
 * shared `queue`, and a decode resolves when the fake context "dispatches" (next macrotask, like its nextCycle
 * schedule). The queue at dispatch time is the batch llama.cpp would get.
 */
class FakeContext {
    readonly batches: number[][] = [];
    private queue: {id: number, resolve: () => void}[] = [];
    private scheduled = false;

    decode(id: number) {
        return new Promise<void>((resolve) => {
            this.queue.push({id, resolve});
            if (!this.scheduled) {
                this.scheduled = true;
                setImmediate(() => this.dispatch());
            }
        });
    }

    private dispatch() {
        this.scheduled = false;
        const batch = this.queue;
        this.queue = [];
        this.batches.push(batch.map((item) => item.id));
        // Sampling finishes on worker threads in no particular order.
        for (const item of [...batch].reverse())
            setTimeout(item.resolve, Math.random() * 2);
    }
}

class FakeGeneration implements SteppedGeneration {
    prefilling = true;
    tokens = 0;

    constructor(readonly sequenceId: number, private readonly context: FakeContext, private readonly length: number,
        private readonly prefill: () => Promise<void> = () => context.decode(sequenceId), private readonly failAt?: number) {}

    advance(): Promise<boolean> {
        const decoded = this.prefilling ? this.prefill() : this.context.decode(this.sequenceId);
        return decoded.then(() => {
            this.prefilling = false;
            this.tokens++;
            if (this.tokens === this.failAt)
                throw new Error(`sequence ${this.sequenceId} failed`);
            return this.tokens < this.length;
        });
    }
}

const isAscending = (ids: number[]) => ids.every((id, index) => index === 0 || ids[index - 1]! < id);

test('every step decodes all running sequences in one batch, in ascending sequence id, whatever order they came in', async (t) => {
    const context = new FakeContext();
    const loop = new DecodeLoop<FakeGeneration>();
    const generations = [3, 0, 2, 1].map((id) => new FakeGeneration(id, context, 20));
    await Promise.all(generations.map((generation) => loop.run(generation)));
    t.deepEqual(context.batches[0], [0, 1, 2, 3], 'the prompts, queued together in order');
    t.true(context.batches.every(isAscending), JSON.stringify(context.batches));
    // Prompts end at different moments, so the first step after them may be partial; from then on, lockstep.
    const full = context.batches.filter((batch) => batch.length === 4).length;
    t.true(full >= 17, JSON.stringify(context.batches));
    t.deepEqual(generations.map((generation) => generation.tokens), [20, 20, 20, 20]);
    t.is(loop.stats.tokens, 76);
    t.true(loop.stats.tokens / loop.stats.steps > 3.5);
});

test('a generation that arrives mid-step joins at the next step, in its place by id; finished ones leave', async (t) => {
    const context = new FakeContext();
    const loop = new DecodeLoop<FakeGeneration>();
    const first = loop.run(new FakeGeneration(2, context, 30));
    const short = loop.run(new FakeGeneration(0, context, 5));
    await new Promise((resolve) => setTimeout(resolve, 15));
    const late = loop.run(new FakeGeneration(1, context, 10));
    await Promise.all([first, short, late]);
    t.true(context.batches.every(isAscending), JSON.stringify(context.batches));
    t.true(context.batches.some((batch) => batch.length === 2 && batch.includes(1) && batch.includes(2)));
    t.is(context.batches.at(-1)!.join(), '2');
});

test('a long prompt does not hold back the others\' steps', async (t) => {
    const context = new FakeContext();
    const loop = new DecodeLoop<FakeGeneration>();
    const running = new FakeGeneration(0, context, 40);
    const runningDone = loop.run(running);
    await new Promise((resolve) => setTimeout(resolve, 10));
    let prefilled: () => void = () => undefined;
    const slowPrompt = new FakeGeneration(1, context, 3, () => new Promise<void>((resolve) => prefilled = resolve));
    const slowDone = loop.run(slowPrompt);
    const tokensBefore = running.tokens;
    // Were the steps waiting for the prompt, this would never end (ava's timeout fails the test).
    while (running.tokens < tokensBefore + 5)
        await new Promise((resolve) => setTimeout(resolve, 1));
    t.true(slowPrompt.prefilling, 'the running sequence kept stepping while the prompt was evaluated');
    prefilled();
    await Promise.all([runningDone, slowDone]);
    t.is(slowPrompt.tokens, 3);
    t.true(context.batches.some((batch) => batch.join() === '0,1'), 'it joined the steps once its prompt was in');
});

test('a generation that fails ends alone; the others finish', async (t) => {
    const context = new FakeContext();
    const loop = new DecodeLoop<FakeGeneration>();
    const failing = loop.run(new FakeGeneration(1, context, 10, undefined, 4));
    const fine = [0, 2].map((id) => new FakeGeneration(id, context, 10));
    const finished = fine.map((generation) => loop.run(generation));
    await t.throwsAsync(failing, {message: 'sequence 1 failed'});
    const batchesAtFailure = context.batches.length;
    await t.notThrowsAsync(Promise.all(finished));
    t.deepEqual(fine.map((generation) => generation.tokens), [10, 10]);
    t.false(context.batches.slice(batchesAtFailure).some((batch) => batch.includes(1)));
});

test('the loop stops when idle and starts again for the next generation', async (t) => {
    const context = new FakeContext();
    const loop = new DecodeLoop<FakeGeneration>();
    await loop.run(new FakeGeneration(0, context, 3));
    await new Promise((resolve) => setTimeout(resolve, 5));
    const batchesWhileIdle = context.batches.length;
    await new Promise((resolve) => setTimeout(resolve, 20));
    t.is(context.batches.length, batchesWhileIdle);
    await loop.run(new FakeGeneration(1, context, 3));
    t.is(context.batches.length, batchesWhileIdle + 3);
});
