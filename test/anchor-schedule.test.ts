import {setTimeout as sleep} from 'node:timers/promises';
import test from 'ava';
import {AnchorSchedule} from '../ledger/anchor/anchor-schedule.js';
import {waitFor} from '../harness/cli-process.js';

test('attempts on the interval, failures retried and reported, none after stop()', async (t) => {
    // The first two fail, the others succeed.
    const failing = 2;
    const attempts: number[] = [];
    const failures: unknown[] = [];
    const schedule = new AnchorSchedule({
        // Retries back off from 15 s, at most the interval: every 30 ms here.
        intervalMs: 30,
        attempt: async () => {
            attempts.push(Date.now());
            if (attempts.length <= failing)
                throw new Error(`failure ${attempts.length}`);
        },
        onFailure: (error) => failures.push((error as Error).message)
    });
    t.is(schedule.nextAttemptAt, null);
    schedule.start(0);
    await waitFor(() => attempts.length >= 4, 5_000);
    schedule.stop();
    t.deepEqual(failures, ['failure 1', 'failure 2']);
    t.true(schedule.nextAttemptAt! > attempts[0]!);
    const count = attempts.length;
    await sleep(100);
    t.is(attempts.length, count, 'stopped');
});

test('stop() before the first attempt: none', async (t) => {
    let attempts = 0;
    const schedule = new AnchorSchedule({intervalMs: 10, attempt: async () => attempts++, onFailure: () => t.fail()});
    schedule.start(0);
    schedule.stop();
    await sleep(50);
    t.is(attempts, 0);
});
