import test from 'ava';
import {chooseStrategy, type StrategyName} from '../inference/choose-strategy.js';

// Every situation: local model, on the swarm, a peer can serve, preference → strategy.
const table: [boolean, boolean, boolean, 'local' | 'remote', StrategyName][] = [
    // Offline: always this node's engine (which answers 404 for models it does not have).
    [false, false, false, 'local', 'local'],
    [false, false, false, 'remote', 'local'],
    [false, false, true, 'local', 'local'],
    [false, false, true, 'remote', 'local'],
    [true, false, false, 'local', 'local'],
    [true, false, false, 'remote', 'local'],
    [true, false, true, 'local', 'local'],
    [true, false, true, 'remote', 'local'],
    // A model only peers hold goes to peers, whether one can take it now or not (then the client hears why).
    [false, true, false, 'local', 'remote'],
    [false, true, false, 'remote', 'remote'],
    [false, true, true, 'local', 'remote'],
    [false, true, true, 'remote', 'remote'],
    // A model this node holds: here, unless peers are preferred and one can take it.
    [true, true, false, 'local', 'local'],
    [true, true, false, 'remote', 'local'],
    [true, true, true, 'local', 'local'],
    [true, true, true, 'remote', 'remote']
];

for (const [local, networked, peerCanServe, prefer, expected] of table)
    test(`local ${local}, networked ${networked}, peer can serve ${peerCanServe}, prefer ${prefer} → ${expected}`, (t) => {
        t.is(chooseStrategy({local, networked, peerCanServe, prefer}), expected);
    });

test('a model this node coordinates as a pipeline goes to the pipeline whatever else holds', (t) => {
    for (const local of [false, true])
        for (const peerCanServe of [false, true])
            for (const prefer of ['local', 'remote'] as const)
                t.is(chooseStrategy({sharded: true, local, networked: true, peerCanServe, prefer}), 'sharded');
});

test('offline there is no pipeline: the local engine answers', (t) => {
    t.is(chooseStrategy({sharded: true, local: false, networked: false, peerCanServe: false, prefer: 'local'}), 'local');
});
