import {mkdtemp, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import test from 'ava';
import {type DemoModelOptions, writeDemoModel} from '../engine/demo/demo-model.js';
import {modelLayoutOf} from '../engine/model-files.js';
import {allocationLimit} from '../inference/sharded/shard-host.js';
import {stageComputeBytes} from '../inference/sharded/shard-planner.js';
import {RpcCommand} from '../inference/sharded/tunnel/rpc-stream.js';
import {captureStageSession} from '../harness/rpc-capture.js';

/**
 * What a stage asks a host for (weights, every sequence's KV cache, the compute buffer: inference/sharded/
 * shard-planner.ts) against what llama.cpp's client then allocates on the host's server, for a few model widths,
 * contexts and attention paths. A host holds a session to what it asked for, so the asked-for bytes must cover it.
 */

const MiB = 2 ** 20;

const cases: {name: string, model: DemoModelOptions, contextSize: number, parallel: number, flashAttention: 'on' | 'off'}[] = [
    {name: '256 wide, 256 tokens, 1 sequence, flash attention', model: {layers: 4, width: 256, headCount: 8, feedForwardLength: 512}, contextSize: 256, parallel: 1, flashAttention: 'on'},
    {name: '256 wide, 512 tokens, 4 sequences, no flash attention', model: {layers: 4, width: 256, headCount: 8, feedForwardLength: 512}, contextSize: 512, parallel: 4, flashAttention: 'off'},
    {name: '512 wide, 1,024 tokens, 2 sequences, flash attention', model: {layers: 4, width: 512, headCount: 8, feedForwardLength: 1408}, contextSize: 1024, parallel: 2, flashAttention: 'on'}
];

for (const {name, model, contextSize, parallel, flashAttention} of cases)
    test.serial(`the bytes a stage asks for cover what llama.cpp allocates on its server: ${name}`, async (t) => {
        const stageLayers = 3;
        const session = await captureStageSession({model, coordinatorLayers: 1, stageLayers, parallel, contextSize, flashAttention, tokens: 2});
        const allocated = session.filter((request) => request.command === RpcCommand.ALLOC_BUFFER)
            .reduce((sum, request) => sum + Number(request.payload.readBigUInt64LE(4)), 0);
        const dir = await mkdtemp(join(tmpdir(), 'strongdoge-budget-'));
        t.teardown(() => rm(dir, {recursive: true, force: true}));
        await writeDemoModel(join(dir, 'model.gguf'), model);
        const layout = await modelLayoutOf(join(dir, 'model.gguf'));
        const compute = stageComputeBytes({...layout, sequenceTokens: contextSize, contextTokens: contextSize * parallel, flashAttention: flashAttention === 'on'});
        // The stage holds layers 1–3 (the coordinator keeps layer 0, its own output device the output layer).
        const asked = layout.layerBytes.slice(1, 1 + stageLayers).reduce((sum, bytes) => sum + bytes, 0)
            + stageLayers * layout.kvBytesPerTokenPerLayer * contextSize * parallel + compute;
        t.log(`allocated ${(allocated / MiB).toFixed(2)} MiB of ${(asked / MiB).toFixed(2)} MiB asked (compute estimate ${(compute / MiB).toFixed(2)} MiB)`);
        t.true(allocated <= asked, 'within what the stage asked for, before any slack');
        t.true(BigInt(allocated) <= allocationLimit(asked));
        t.true(allocated >= asked * 0.5, 'and not wildly less: the estimate keeps hosts\' memory for others');
    });
