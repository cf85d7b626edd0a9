import test from 'ava';
import {chooseStrategy, type StrategyName} from '../inference/choose-strategy.js';
import {shardedModelIds} from '../node/strongdoge-node.js';

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

test('which models a node shards: auto only those larger than its memory, always all, never none, offline none', (t) => {
    const models = [{id: 'small', sizeBytes: 4 * 2 ** 20}, {id: 'large', sizeBytes: 40 * 2 ** 20}];
    const free = 16 * 2 ** 20;
    const ids = (settings: Parameters<typeof shardedModelIds>[0], freeBytes = free) => [...shardedModelIds(settings, models, freeBytes)].sort();
    t.deepEqual(ids({shard: 'auto', offline: false}), ['large']);
    t.deepEqual(ids({shard: 'auto', offline: false}, 2 ** 40), []);
    // --memory-limit pretends this node has less memory than is free
    t.deepEqual(ids({shard: 'auto', offline: false, memoryLimit: 2 ** 20}), ['large', 'small']);
    t.deepEqual(ids({shard: 'auto', offline: false, memoryLimit: 4 * 2 ** 20}), ['large'], 'a model exactly as large as the memory fits');
    t.deepEqual(ids({shard: 'always', offline: false}, 2 ** 40), ['large', 'small']);
    t.deepEqual(ids({shard: 'never', offline: false}, 0), []);
    t.deepEqual(ids({shard: 'always', offline: true}), []);
});
