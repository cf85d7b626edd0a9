import test from 'ava';
import {AdmissionQueue} from '../engine/admission-queue.js';
import {InferenceError} from '../core/inference-error.js';

const tick = () => new Promise((resolve) => setImmediate(resolve));

test('runs up to slotsPerKey jobs per key and queues the rest in order', async (t) => {
    const queue = new AdmissionQueue({slotsPerKey: 2, maxWaiting: 10, retryAfterSeconds: 1});
    const first = await queue.acquire('m');
    const second = await queue.acquire('m');
    const order: number[] = [];
    const third = queue.acquire('m').then((release) => {
        order.push(3);
        return release;
    });
    const fourth = queue.acquire('m').then((release) => {
        order.push(4);
        return release;
    });
    await tick();
    t.deepEqual(order, []);
    t.is(queue.runningCount, 2);
    t.is(queue.waitingCount, 2);
    first();
    await tick();
    t.deepEqual(order, [3]);
    second();
    second(); // releasing twice frees one slot only
    await tick();
    t.deepEqual(order, [3, 4]);
    (await third)();
    (await fourth)();
    t.is(queue.runningCount, 0);
});

test('keys have their own slots', async (t) => {
    const queue = new AdmissionQueue({slotsPerKey: 1, maxWaiting: 10, retryAfterSeconds: 1});
    await queue.acquire('a');
    const other = await Promise.race([queue.acquire('b').then(() => 'granted'), tick().then(() => 'waiting')]);
    t.is(other, 'granted');
});

test('refuses with queue_full once maxWaiting jobs wait', async (t) => {
    const queue = new AdmissionQueue({slotsPerKey: 1, maxWaiting: 1, retryAfterSeconds: 3});
    await queue.acquire('m');
    void queue.acquire('m');
    const error = await t.throwsAsync(queue.acquire('m'), {instanceOf: InferenceError});
    t.is(error?.code, 'queue_full');
    t.is(error?.retryAfterSeconds, 3);
});

test('an aborted waiter leaves the queue without taking a slot', async (t) => {
    const queue = new AdmissionQueue({slotsPerKey: 1, maxWaiting: 5, retryAfterSeconds: 1});
    const release = await queue.acquire('m');
    const controller = new AbortController();
    const waiting = queue.acquire('m', controller.signal);
    controller.abort();
    const error = await t.throwsAsync(waiting, {instanceOf: InferenceError});
    t.is(error?.code, 'cancelled');
    t.is(queue.waitingCount, 0);
    release();
    t.is(queue.runningCount, 0);
    const again = await queue.acquire('m');
    t.is(queue.runningCount, 1);
    again();
});
