import test from 'ava';
import {addSpeculation} from '../core/speculation-summary.js';
import {clusterStatusSchema} from '../node/node-status.js';
import {pipelineWait, describePipeline, servedRatio} from '../inference/sharded/coordinator/pipeline-status.js';
import type {ClusterModel, Formation} from '../inference/sharded/coordinator/pipeline-types.js';
import {KEPT_FAILURES, StageFailures} from '../inference/sharded/coordinator/stage-failures.js';
import {expectedPlacement} from '../inference/sharded/coordinator/pipeline-formation.js';
import {PeerState} from '../swarm/peer-state.js';
import type {Capabilities} from '../swarm/capabilities.js';

/** The coordinator's parts (inference/sharded/coordinator/), without peers or an engine. */

const SELF = 'a'.repeat(64);
const HOST = 'b'.repeat(64);

const model: ClusterModel = {
    id: 'demo', path: '/dev/null', sizeBytes: 1000, sha256: () => null,
    shape: {layerBytes: [100, 100, 100, 100], inputBytes: 10, outputBytes: 10, kvBytesPerTokenPerLayer: 1, contextTokens: 16}
};

/** A formation of this node's layers 0-1 and a host's 2-3, with endpoints that have seen no traffic. */
function formation(): Formation {
    const endpoint = {stall: {medianMs: null}, bytesToStage: 0, bytesFromStage: 0} as unknown as Formation['output'];
    return {
        generation: 1,
        plan: {
            reason: '2 stages', estimatedMsPerToken: 1,
            stages: [
                {peerId: SELF, self: true, firstLayer: 0, lastLayer: 1, bytes: 200, transferBytes: 0},
                {peerId: HOST, self: false, firstLayer: 2, lastLayer: 3, bytes: 200, transferBytes: 200}
            ]
        } as unknown as Formation['plan'],
        stages: [{peerId: HOST, firstLayer: 2, lastLayer: 3, transferBytes: 200, session: {} as never, endpoint, weights: {from: 'coordinator'}}],
        first: endpoint,
        output: endpoint,
        failure: undefined
    };
}

test('failures, this node\'s own included, keep the last 100; a mark still finds those recorded since', (t) => {
    const failures = new StageFailures();
    for (let index = 0; index < 150; index++)
        failures.record(SELF, `this node's output device exited (${index})`);
    t.is(failures.recent.length, KEPT_FAILURES);
    t.is(KEPT_FAILURES, 100);
    t.is(failures.count, 150);
    t.is(failures.recent[0]!.reason, 'this node\'s output device exited (50)', 'the oldest went first');
    const mark = failures.count;
    t.deepEqual(failures.since(mark), []);
    failures.record(HOST, 'the stage closed its stream');
    t.deepEqual(failures.since(mark).map((failure) => failure.peer), [HOST], 'the list is full, yet the new failure is found');
});

test('a stage\'s success ratio counts the requests sent through it: none yet is unknown, all served is 100%', (t) => {
    const peer = new PeerState(HOST, 'strongdoge/0.1.0', {} as Capabilities);
    const stageRate = () => describePipeline({
        model, state: 'ready', reason: undefined, formation: formation(), peer: (peerId) => peerId === HOST ? peer : undefined,
        placementMatches: true, failovers: 0, failures: [], spares: [], speculation: undefined
    }).stages.map((stage) => stage.successRate);
    t.deepEqual(stageRate(), [null, null], 'not 50% before its first request');
    peer.recordRequest(true);
    peer.recordRequest(true);
    t.deepEqual(stageRate(), [null, 1], 'every request succeeded: 100%, not the ranking\'s smoothed estimate');
    peer.recordRequest(false);
    t.is(servedRatio(peer), 2 / 3);
});

test('a pipeline shows its coordinator\'s speculation: acceptance and tokens per pass over its requests, null before the first', (t) => {
    const describe = (speculation: Parameters<typeof describePipeline>[0]['speculation']) => clusterStatusSchema.parse({
        pipelines: [describePipeline({model, state: 'ready', reason: undefined, formation: formation(), peer: () => undefined,
            placementMatches: true, failovers: 0, failures: [], spares: [], speculation})],
        hosting: {available: false, reason: null, sessions: 0, freeBytes: 0}
    }).pipelines[0]!.speculation;
    t.is(describe(undefined), null);
    // A draft that agreed on 3 of 4 tokens in each of 5 passes, then one that never agreed in 5 passes.
    const agreed = addSpeculation(undefined, {drafter: 'draft', passes: 5, tokens: 20, drafted: 20, accepted: 15});
    t.like(describe(agreed), {drafter: 'draft', passes: 5, tokens: 20, acceptance: 0.75, tokensPerPass: 4});
    t.like(describe(addSpeculation(agreed, {drafter: 'draft', passes: 5, tokens: 5, drafted: 20, accepted: 0})),
        {passes: 10, tokens: 25, drafted: 40, accepted: 15, acceptance: 0.375, tokensPerPass: 2.5});
    t.like(describe(addSpeculation(undefined, {drafter: 'lookup', passes: 3, tokens: 3, drafted: 0, accepted: 0})),
        {drafter: 'lookup', acceptance: null, tokensPerPass: 1}, 'lookup found nothing to draft: no acceptance yet, one token per pass');
});

test('a pipeline that does not serve says what it waits for', (t) => {
    t.is(pipelineWait({state: 'forming', reason: undefined, forming: {opened: 1, stages: 3}, loadProgress: undefined}), 'pipeline forming: 1 of 3 stages');
    t.is(pipelineWait({state: 'waiting', reason: 'demo is to be split over at least 2 stages, and there are 1', forming: undefined, loadProgress: undefined}),
        'no pipeline yet: demo is to be split over at least 2 stages, and there are 1');
    t.is(pipelineWait({state: 'loading', reason: undefined, forming: undefined, loadProgress: 0.42}), 'pipeline loading: 42%');
});

test('the placement expected of llama.cpp: this node\'s first device, the host\'s, the output layer on this node\'s last', (t) => {
    t.deepEqual(expectedPlacement(formation()), ['RPC0', 'RPC0', 'RPC1', 'RPC1', 'RPC2']);
});
