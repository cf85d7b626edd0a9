import {setTimeout as sleep} from 'node:timers/promises';
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
    tokens = 0;
    private chunksLeft: number;

    /** `promptChunks`: steps its prompt takes; `failAt`: the token whose decode fails. */
    constructor(readonly sequenceId: number, private readonly context: FakeContext, private readonly length: number,
        {promptChunks = 1, failAt}: {promptChunks?: number, failAt?: number} = {}) {
        this.chunksLeft = promptChunks;
        this.failAt = failAt;
    }

    private readonly failAt: number | undefined;

    get prefilling() {
        return this.chunksLeft > 0;
    }

    /** Steps in which it was advanced with company. */
    sharedSteps = 0;

    advance(shared: boolean): Promise<boolean> {
        if (shared)
            this.sharedSteps++;
        const decoded = this.context.decode(this.sequenceId);
        if (this.chunksLeft > 1) {
            this.chunksLeft--;
            return decoded.then(() => true);
        }
        return decoded.then(() => {
            this.chunksLeft = 0;
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
    t.deepEqual(context.batches, Array.from({length: 20}, () => [0, 1, 2, 3]), 'the prompts, then 19 steps of all four, in order');
    t.deepEqual(generations.map((generation) => generation.tokens), [20, 20, 20, 20]);
    t.deepEqual(loop.stats, {steps: 19, tokens: 76}, 'the first step evaluated the prompts');
});

test('a generation that arrives mid-step joins at the next step, in its place by id; finished ones leave', async (t) => {
    const context = new FakeContext();
    const loop = new DecodeLoop<FakeGeneration>();
    const first = loop.run(new FakeGeneration(2, context, 30));
    const short = loop.run(new FakeGeneration(0, context, 5));
    await sleep(15);
    const late = loop.run(new FakeGeneration(1, context, 10));
    await Promise.all([first, short, late]);
    t.true(context.batches.every(isAscending), JSON.stringify(context.batches));
    t.true(context.batches.some((batch) => batch.length === 2 && batch.includes(1) && batch.includes(2)));
    t.is(context.batches.at(-1)!.join(), '2');
});

test('a long prompt is taken a chunk per step: the running sequences get a token in every one of those steps', async (t) => {
    const context = new FakeContext();
    const loop = new DecodeLoop<FakeGeneration>();
    const running = new FakeGeneration(0, context, 40);
    const runningDone = loop.run(running);
    while (running.tokens < 5)
        await sleep(1);
    const longPrompt = new FakeGeneration(1, context, 3, {promptChunks: 10});
    const tokensBefore = running.tokens;
    const batchesBefore = context.batches.length;
    await Promise.all([runningDone, loop.run(longPrompt)]);
    t.is(longPrompt.tokens, 3);
    const shared = context.batches.slice(batchesBefore).filter((batch) => batch.join() === '0,1');
    t.true(shared.length >= 12, '10 prompt chunks and 3 tokens, each in a step with sequence 0');
    t.is(running.tokens, 40);
    t.true(running.tokens - tokensBefore >= 13);
    t.is(longPrompt.sharedSteps, 12, 'each of its chunks and tokens was advanced with sequence 0');
});

test('a generation that fails ends alone; the others finish', async (t) => {
    const context = new FakeContext();
    const loop = new DecodeLoop<FakeGeneration>();
    const failing = loop.run(new FakeGeneration(1, context, 10, {failAt: 4}));
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
    await sleep(5);
    const batchesWhileIdle = context.batches.length;
    await sleep(20);
    t.is(context.batches.length, batchesWhileIdle);
    await loop.run(new FakeGeneration(1, context, 3));
    t.is(context.batches.length, batchesWhileIdle + 3);
});
