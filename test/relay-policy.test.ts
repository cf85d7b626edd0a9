import test from 'ava';
import {natStatus, offersRelay, pickRelay, RelayMeter, wantsRelay, type RelayCandidate} from '../swarm/relay-policy.js';

test('the NAT as HyperDHT sees it: open when not firewalled, else random or consistent once sampled', (t) => {
    t.deepEqual(natStatus({firewalled: false, randomized: false, host: '100.64.0.2', port: 49737}),
        {type: 'open', reachable: true, host: '100.64.0.2', port: 49737});
    t.deepEqual(natStatus({firewalled: true, randomized: false, host: null, port: 0}), {type: 'unknown', reachable: false, host: null, port: null});
    t.deepEqual(natStatus({firewalled: true, randomized: false, host: '100.64.1.2', port: 40000}),
        {type: 'consistent', reachable: false, host: '100.64.1.2', port: 40000});
    // a random NAT has no one port: HyperDHT reports port 0
    t.deepEqual(natStatus({firewalled: true, randomized: true, host: '100.64.1.2', port: 0}),
        {type: 'random', reachable: false, host: '100.64.1.2', port: null});
});

test('a node offers to relay: auto once reachable, on regardless, off never, and never over its cap', (t) => {
    const table: [Parameters<typeof offersRelay>, boolean][] = [
        [['auto', true, false], true], [['auto', false, false], false],
        [['on', false, false], true], [['on', true, false], true],
        [['off', true, false], false], [['off', false, false], false],
        [['auto', true, true], false], [['on', false, true], false]
    ];
    for (const [args, expected] of table)
        t.is(offersRelay(...args), expected, args.join(' '));
});

test('a connection goes through a relay when forced by a punch failure, from a random NAT, or after a failed attempt', (t) => {
    for (const forced of [false, true])
        for (const randomized of [false, true])
            for (const failedBefore of [false, true])
                t.is(wantsRelay({forced, randomized, failedBefore}), forced || randomized || failedBefore);
});

test('relays named with --relay-through come first, then the nearest; never the peer being connected to', (t) => {
    const relay = (nodeId: string, rttMs: number | null, explicit = false): RelayCandidate => ({nodeId, relayKey: `${nodeId}-relay`, explicit, rttMs});
    t.is(pickRelay([], 'b'), null);
    t.is(pickRelay([relay('a', 5)], 'a'), null, 'the only relay is the target');
    t.is(pickRelay([relay('a', 50), relay('c', 5), relay('d', null)], 'b')?.nodeId, 'c');
    t.is(pickRelay([relay('a', 50, true), relay('c', 5)], 'b')?.nodeId, 'a');
    t.is(pickRelay([relay('a', 50, true), relay('c', 5)], 'a')?.nodeId, 'c');
    t.is(pickRelay([relay('d', null), relay('c', null)], 'b')?.nodeId, 'c', 'unmeasured: by id, so the choice is stable');
    t.is(pickRelay([relay('d', null), relay('c', 80)], 'b')?.nodeId, 'c', 'measured before unmeasured');
});

test('the relay meter averages megabits per second over its window', (t) => {
    const meter = new RelayMeter(10_000);
    t.is(meter.sample(0, 0), 0);
    t.is(meter.sample(125_000, 1_000), 1, '125 kB in 1 s = 1 Mbit/s');
    let total = 125_000;
    for (let second = 2; second <= 20; second++) {
        total += 250_000;
        meter.sample(total, second * 1_000);
    }
    t.is(meter.sample(total, 20_000), 2, 'only the last 10 s count');
    t.is(meter.sample(total, 30_000), 0, 'idle for a window');
});
