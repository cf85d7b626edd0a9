import test from 'ava';
import {Backoff} from '../core/backoff.js';

test('delays double from the first up to the longest', (t) => {
    const backoff = new Backoff({initialMs: 250, maxMs: 1_500});
    t.deepEqual([1, 2, 3, 4, 5].map(() => backoff.failed()), [250, 500, 1_000, 1_500, 1_500]);
});

test('a success starts the delays over; with stableAfterMs, only one that lasted', (t) => {
    const anyone = new Backoff({initialMs: 15, maxMs: 100});
    anyone.failed();
    anyone.failed();
    anyone.succeeded();
    t.is(anyone.failed(), 15);

    const backoff = new Backoff({initialMs: 250, maxMs: 30_000, stableAfterMs: 60_000});
    t.is(backoff.failed(0), 250);
    backoff.succeeded(1_000);
    t.is(backoff.failed(2_000), 500, 'up 1 s: not recovered');
    backoff.succeeded(3_000);
    t.is(backoff.failed(63_000), 250, 'up 60 s: recovered');
    t.is(backoff.failed(64_000), 500);
    t.is(backoff.failed(200_000), 1_000, 'failing again without a success in between keeps backing off');
});
