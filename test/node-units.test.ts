import type {AddressInfo} from 'node:net';
import test from 'ava';
import express from 'express';
import type {InferenceService, ModelReadiness} from '../inference/inference-service.js';
import {nodeReadiness} from '../node/node-readiness.js';
import {healthHandler} from '../proxy/routes/status-routes.js';

/** The node's pure parts (node/): readiness; and /health as it reports them (the shard-receipt rules: test/shard-receipts.test.ts). */

const engineReady = {ready: true, state: 'ready'};
const forming = {model: 'demo', readiness: {ready: false, waiting: 'pipeline forming: 1 of 3 stages'}};

test('ready only when the engine is, the node has started, and every pipeline serves', (t) => {
    t.deepEqual(nodeReadiness({engine: engineReady, engineModels: ['small'], started: true, pipelines: [forming]}), {
        ready: false, state: 'forming pipelines',
        models: {small: {ready: true}, demo: {ready: false, waiting: 'pipeline forming: 1 of 3 stages'}}
    });
    t.like(nodeReadiness({engine: engineReady, engineModels: ['small'], started: true, pipelines: [{model: 'demo', readiness: {ready: true}}]}),
        {ready: true, state: 'ready', models: {small: {ready: true}, demo: {ready: true}}});
    t.like(nodeReadiness({engine: engineReady, engineModels: ['small'], started: false, pipelines: []}),
        {ready: false, state: 'starting', models: {small: {ready: false, waiting: 'the node is starting'}}});
    t.like(nodeReadiness({engine: {ready: false, state: 'loading', loadProgress: {small: 0.5}}, engineModels: ['small'], started: false, pipelines: []}),
        {ready: false, state: 'loading', loadProgress: {small: 0.5}, models: {small: {ready: false, waiting: 'engine loading: 50% loaded'}}});
});

test('/health answers 503 while a pipeline forms, saying what each model waits for, and 200 once all serve', async (t) => {
    let pipelines: {model: string, readiness: ModelReadiness}[] = [forming];
    const inference = {readiness: () => nodeReadiness({engine: engineReady, engineModels: [], started: true, pipelines})} as unknown as InferenceService;
    const server = express().get('/health', healthHandler(inference)).listen(0, '127.0.0.1');
    t.teardown(() => server.close());
    await new Promise((resolve) => server.once('listening', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/health`;
    const waiting = await fetch(url);
    t.is(waiting.status, 503);
    t.deepEqual(await waiting.json(), {status: 'loading', state: 'forming pipelines', models: {demo: {ready: false, waiting: 'pipeline forming: 1 of 3 stages'}}});
    pipelines = [{model: 'demo', readiness: {ready: true}}];
    const ready = await fetch(url);
    t.is(ready.status, 200);
    t.like(await ready.json(), {status: 'ok', state: 'ready'});
});
