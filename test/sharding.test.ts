import {execFileSync} from 'node:child_process';
import test from 'ava';
import type {Testnet} from 'hyperdht/testnet.js';
import OpenAI from 'openai';
import {schemaValidator} from '../harness/ajv-validator.js';
import {anthropicClient, greedy, readMessageStream, textOf} from '../harness/anthropic-client.js';
import {waitFor, type DaemonHandle} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {seamReport, singleProcessTexts, streamGreedyCompletion} from '../harness/generation-requests.js';
import {fetchStatus} from '../harness/node-status.js';
import type {ShardReceipt} from '../ledger/records.js';
import {verifyShardReceipt} from '../ledger/shard-receipt.js';
import type {LedgerStatus} from '../node/node-status.js';
import {testRpcBinaries} from '../harness/rpc-binaries.js';
import {nodeIdOf, startSwarmDaemon, startTestnet, waitForPeers} from '../harness/swarm-fixture.js';

/**
 * Layer shards over real peers: separate daemons on a loopback testnet, real rpc servers, llama.cpp's RPC backend
 * in the coordinator's engine child, tunnels over Hyperswarm (docs/architecture.md, "Sharding").
 */

const MiB = 2 ** 20;
/** A model that never ends by itself and streams for a while: generations to interrupt. */
const MODEL = {layers: 8, width: 256, feedForwardLength: 512, endsText: false};
const CONTEXT = 512;
const PROMPT = 'Once upon a time';
const TOKENS = 400;

interface Node {
    daemon: DaemonHandle,
    id: string,
    client: OpenAI
}

let testnet: Testnet;
let bootstrap: string;
let expectedText: string;
const cleanups: (() => Promise<unknown>)[] = [];

/** Each test's nodes meet on a network of their own on the shared testnet. */
let network = 'sharding-0';

/** A coordinator answers /health with 200 only once its pipeline serves: formed over its hosts and loaded. */
const COORDINATOR_READY_MS = 150_000;

async function startNode(extra: string[], withModel: boolean): Promise<Node> {
    const fixture = await createDataDirWithDemoModel(MODEL);
    cleanups.push(fixture.cleanup);
    const daemon = await startSwarmDaemon(bootstrap, fixture.dataDir, [
        '--network', network, '--context-size', String(CONTEXT), '--parallel', '2', ...(withModel ? ['--model', 'demo'] : []), ...extra
    ], withModel ? {readyTimeoutMs: COORDINATOR_READY_MS} : {});
    cleanups.push(() => daemon.stop('SIGKILL'));
    return {daemon, id: await nodeIdOf(daemon), client: new OpenAI({baseURL: daemon.baseUrl, apiKey: 'x', maxRetries: 0})};
}

function cluster(node: Node) {
    return fetchStatus(node.daemon, '/api/cluster');
}

async function pipelineReady(node: Node, timeoutMs = 90_000) {
    await waitFor(async () => (await cluster(node)).pipelines[0]?.state === 'ready', timeoutMs, 200).catch(async (error: Error) => {
        throw new Error(`${error.message}: ${JSON.stringify(await cluster(node))}; logs ${JSON.stringify(node.daemon.logs.filter((line) => Number(line.level) >= 40 || String(line.msg).includes("pipeline")).slice(-25))}`);
    });
    return (await cluster(node)).pipelines[0]!;
}

function complete(node: Node, maxTokens = TOKENS) {
    return node.client.completions.create({model: 'demo', prompt: PROMPT, max_tokens: maxTokens, temperature: 0});
}

test.before(async () => {
    await testRpcBinaries(); // every daemon uses this build (harness/cli-process.ts)
    ({testnet, bootstrap} = await startTestnet());
    // The same model whole, in one process: what every split must reproduce token for token.
    const fixture = await createDataDirWithDemoModel(MODEL);
    cleanups.push(fixture.cleanup);
    [expectedText] = await singleProcessTexts(fixture.dataDir, [PROMPT], {maxTokens: TOKENS, contextSize: CONTEXT}) as [string];
});

test.after.always(async () => {
    for (const cleanup of cleanups.reverse())
        await cleanup().catch(() => undefined);
    await testnet?.destroy();
});

test.serial('a model split over three nodes is placed as planned and answers token for token as one process does', async (t) => {
    // Room for three layers each (weights, a KV cache of 2 × 512 tokens, the compute buffer): the plan needs all three nodes.
    const hosts = await Promise.all([0, 1].map(() => startNode(['--max-shard-memory', String(15 * MiB)], false)));
    // It serves peers (the pipeline's model, below) but offers them no memory for layers.
    const coordinator = await startNode(['--shard', 'always', '--max-stages', '3', '--memory-limit', String(15 * MiB), '--max-shard-memory', '0'], true);
    t.is((await cluster(coordinator)).pipelines[0]?.state, 'ready', '/health said ready: the pipeline serves');
    await waitForPeers(coordinator.daemon, hosts.map((host) => host.id), 30_000);
    const pipeline = await pipelineReady(coordinator);

    t.is(pipeline.stages.length, 3);
    t.deepEqual(pipeline.stages.map((stage) => stage.self), [true, false, false]);
    t.deepEqual(pipeline.stages.slice(1).map((stage) => stage.peer).sort(), hosts.map((host) => host.id).sort());
    // Contiguous ranges covering every layer, in order, as llama.cpp's own load report confirms.
    const ranges = pipeline.stages.map((stage) => stage.layers!);
    t.is(ranges[0]![0], 0);
    t.is(ranges.at(-1)![1], MODEL.layers - 1);
    for (let index = 1; index < ranges.length; index++)
        t.is(ranges[index]![0], ranges[index - 1]![1] + 1);
    t.true(pipeline.placementMatches, 'llama.cpp placed the layers as planned');
    // Each host serves one session (one rpc server) for the coordinator.
    t.like((await cluster(coordinator)).hosting, {available: true, sessions: 0, freeBytes: 0});
    for (const host of hosts)
        t.like((await cluster(host)).hosting, {available: true, sessions: 1});

    const reply = await complete(coordinator);
    t.is(reply.choices[0]!.text, expectedText);
    const after = (await cluster(coordinator)).pipelines[0]!;
    // Activations crossed every remote stage's tunnel both ways; each stage served the request.
    for (const stage of after.stages.slice(1)) {
        t.true(stage.bytesSent > 0 && stage.bytesReceived > 0, JSON.stringify(stage));
        t.is(stage.successRate, 1, 'every request through the stage succeeded');
    }
    // The request log says the pipeline served it, stage by stage.
    const stageRoute = `pipeline:self,${pipeline.stages.slice(1).map((stage) => stage.peer.slice(0, 16)).join(',')}`;
    await waitFor(() => coordinator.daemon.logs.some((record) => record.msg === 'request'), 5_000, 20);
    t.deepEqual(coordinator.daemon.logs.filter((record) => record.msg === 'request').map((record) => (record.request as {route: string}).route), [stageRoute]);
    t.is(after.failovers, 0);
    // The coordinator drafted by lookup (`--speculative auto`, no draft model); a pass is a round trip through every stage.
    t.like(after.speculation, {drafter: 'lookup'});
    t.true(after.speculation!.passes > 0 && after.speculation!.tokens >= after.speculation!.passes, JSON.stringify(after.speculation));
    t.is(after.speculation!.tokensPerPass, after.speculation!.tokens / after.speculation!.passes);
    // A node without the model reaches the pipeline through the coordinator, like any peer's model.
    const requester = await startNode(['--serve-peers', 'off'], false);
    const hosting = (await cluster(requester)).hosting;
    t.false(hosting.available, '--serve-peers off hosts no layers');
    t.regex(hosting.reason ?? '', /--serve-peers off/);
    await waitForPeers(requester.daemon, [coordinator.id, ...hosts.map((host) => host.id)], 30_000,
        (peers) => peers.some((peer) => peer.capabilities.models.some((model) => model.id === 'demo' && model.loaded)));
    const routed = await complete(requester);
    t.is(routed.choices[0]!.text, expectedText);
    // Each host keeps the receipts for the tokens its layers helped generate, signed by the coordinator and
    // countersigned by the host, numbered in the session; the coordinator keeps the same receipts as what it consumed.
    const shardReceipts = (ledger: LedgerStatus, type: 'shard' | 'shard-consumed') => ledger.recent
        .flatMap((entry) => entry.type === type ? [entry.receipt] : []).sort((a, b) => a.body.sequence - b.body.sequence);
    const hostReceipts: ShardReceipt[] = [];
    for (const host of hosts) {
        const stage = after.stages.find((candidate) => candidate.peer === host.id)!;
        await waitFor(async () => (await fetchStatus(host.daemon, '/api/ledger')).tally.shardSessions === 2, 10_000, 100);
        const ledger = await fetchStatus(host.daemon, '/api/ledger');
        t.is(ledger.tally.shardTokens, 2 * TOKENS, 'one receipt per request: the client\'s and the peer\'s');
        t.true(ledger.points > 0);
        const receipts = shardReceipts(ledger, 'shard');
        t.deepEqual(receipts.map((receipt) => receipt.body.sequence), [1, 2]);
        t.is(new Set(receipts.map((receipt) => receipt.body.session)).size, 1, 'one session, one id');
        for (const receipt of receipts) {
            const {body, hostSignature} = verifyShardReceipt(structuredClone(receipt));
            t.true(hostSignature !== null, 'both signatures');
            t.like(body, {coordinator: coordinator.id, host: host.id, firstLayer: stage.layers![0], lastLayer: stage.layers![1], tokens: TOKENS,
                layerCount: MODEL.layers, network});
        }
        hostReceipts.push(...receipts);
    }
    await waitFor(async () => shardReceipts(await fetchStatus(coordinator.daemon, '/api/ledger'), 'shard-consumed').length === 4, 10_000, 100);
    const consumed = shardReceipts(await fetchStatus(coordinator.daemon, '/api/ledger'), 'shard-consumed');
    const byKey = (receipts: ShardReceipt[]) => [...receipts].sort((a, b) => `${a.body.session}${a.body.sequence}`.localeCompare(`${b.body.session}${b.body.sequence}`));
    t.deepEqual(byKey(consumed), byKey(hostReceipts), 'the coordinator logged the same countersigned receipts');
    // Tools go through the pipeline, and through a peer to it: a call of the function, its arguments held to its schema.
    const parameters = {type: 'object', properties: {n: {type: 'integer', minimum: 1, maximum: 9}}, required: ['n'], additionalProperties: false};
    for (const node of [coordinator, requester]) {
        const called = await node.client.chat.completions.create({
            model: 'demo', messages: [{role: 'user', content: 'pick'}], temperature: 0, max_tokens: 100,
            tools: [{type: 'function', function: {name: 'pick', parameters}}], tool_choice: {type: 'function', function: {name: 'pick'}}
        });
        const [call] = called.choices[0]!.message.tool_calls ?? [];
        t.is(called.choices[0]!.finish_reason, 'tool_calls');
        t.true(call?.type === 'function' && call.function.name === 'pick' && schemaValidator(parameters)(JSON.parse(call.function.arguments)),
            JSON.stringify(call));
    }
    // Anthropic's Messages API through the pipeline, and through a peer to it: the chat route's text, and the stop sequence that ended it.
    for (const node of [coordinator, requester]) {
        const anthropic = anthropicClient(node.daemon.origin);
        const body = greedy({model: 'demo', messages: [{role: 'user' as const, content: PROMPT}], max_tokens: 40});
        const chat = await node.client.chat.completions.create({...body, temperature: 0});
        const text = chat.choices[0]!.message.content!;
        const message = await anthropic.messages.create(body);
        t.is(textOf(message), text);
        t.deepEqual(message.usage, {input_tokens: chat.usage!.prompt_tokens, output_tokens: 40});
        t.is((await readMessageStream(anthropic.messages.stream(body))).text, text);
        const stop = text.slice(Math.floor(text.length / 2)).trim().slice(0, 3);
        t.like(await anthropic.messages.create({...body, stop_sequences: [stop]}), {stop_reason: 'stop_sequence', stop_sequence: stop});
        t.is((await anthropic.messages.countTokens({model: 'demo', messages: body.messages})).input_tokens, message.usage.input_tokens);
    }
});

/** Starts `count` hosts and a coordinator whose plan needs three stages, with spare hosts to replace a failed one. */
async function pipelineWithSpare(hostCount: number, name: string) {
    network = name;
    const hosts = await Promise.all(Array.from({length: hostCount}, () => startNode(['--max-shard-memory', String(15 * MiB)], false)));
    const coordinator = await startNode(['--shard', 'always', '--max-stages', '3', '--memory-limit', String(15 * MiB), '--serve-peers', 'off'], true);
    await waitForPeers(coordinator.daemon, hosts.map((host) => host.id), 30_000);
    const pipeline = await pipelineReady(coordinator);
    return {hosts, coordinator, pipeline};
}

/** Streams the greedy completion of PROMPT, calling `onText` with the text so far after each chunk. */
function streamCompletion(node: Node, onText: (text: string) => void) {
    return streamGreedyCompletion(node.client, PROMPT, TOKENS, onText);
}

for (const signal of ['SIGKILL', 'SIGSTOP'] as const)
    test.serial(`a stage's peer ${signal === 'SIGKILL' ? 'killed' : 'frozen'} mid-answer: both requests in flight complete with an exact seam`, async (t) => {
        const {hosts, coordinator, pipeline} = await pipelineWithSpare(3, `sharding-${signal}`);
        const victim = hosts.find((host) => host.id === pipeline.stages[1]!.peer)!;
        const victimServers = childrenOf(victim.daemon.process.pid!).filter((pid) => commandOf(pid).includes('ggml-rpc-server'));
        t.is(victimServers.length, 1, 'the host runs one rpc server for the session');
        let failedAt: number | undefined;
        let seamText = '';
        const started = Date.now();
        const failure = new Promise<void>((resolve) => {
            const watch = (text: string) => {
                // Fail the stage once a good part of the answer has streamed.
                if (failedAt === undefined && text.length > expectedText.length / 4) {
                    failedAt = Date.now();
                    seamText = text;
                    victim.daemon.process.kill(signal);
                    resolve();
                }
            };
            t.context = watch;
        });
        const [first, second] = await Promise.all([
            streamCompletion(coordinator, (text) => (t.context as (text: string) => void)(text)),
            streamCompletion(coordinator, () => undefined)
        ]);
        await failure;
        // One whole answer each, no error, continuing from exactly the text streamed before the failure. Past the
        // seam the resumed prefill is batched (the original decoded one token at a time) and the two requests are
        // decoded together, so a floating-point near-tie may part the text from the uninterrupted run's (README).
        for (const answer of [first, second]) {
            t.is(answer.finishReason, 'length');
            t.is(answer.completionTokens, TOKENS);
        }
        t.true(first.text.startsWith(seamText));
        t.true(expectedText.startsWith(seamText), 'before the failure: the uninterrupted single-process text');
        for (const answer of [first, second])
            t.log(seamReport(answer.text, expectedText, seamText));
        const after = (await cluster(coordinator)).pipelines[0]!;
        t.is(after.failovers, 1, JSON.stringify(after.failures));
        t.is(after.failures[0]!.peer, victim.id);
        t.false(after.stages.some((stage) => stage.peer === victim.id));
        // The repair keeps the surviving stage (its layers may shift by the planner's rules): a spare joins.
        t.is(after.stages[2]!.peer, pipeline.stages[2]!.peer, after.plan?.reason);
        t.false(pipeline.stages.some((stage) => stage.peer === after.stages[1]!.peer), 'a spare host, not a stage of the old plan');
        t.is(after.state, 'ready');
        t.log(`${signal}: ${TOKENS} tokens in ${Date.now() - started} ms, failure after ${failedAt! - started} ms; ${after.failures[0]!.reason}`);
        // The coordinator never died.
        t.is(coordinator.daemon.process.exitCode, null);
        if (signal === 'SIGSTOP')
            victim.daemon.process.kill('SIGKILL');
        // A host killed outright takes its rpc server with it: nothing stays listening.
        await waitFor(async () => victimServers.every((pid) => commandOf(pid) === ''), 5_000, 50);
    });

function childrenOf(pid: number) {
    try {
        return execFileSync('pgrep', ['-P', String(pid)], {encoding: 'utf8'}).split('\n').filter(Boolean).map(Number);
    } catch {
        return [];
    }
}

/** The process's command line, '' once it is gone. */
function commandOf(pid: number) {
    try {
        return execFileSync('ps', ['-o', 'args=', '-p', String(pid)], {encoding: 'utf8'}).trim();
    } catch {
        return '';
    }
}

test.serial('a host that holds the model seeds its tensor cache from its own copy: its big tensors are not sent', async (t) => {
    network = 'sharding-holder';
    // Feed-forward matrices of 2048 × 2816 F16 (11.5 MB) are over ggml-rpc's 10 MiB hash threshold; attention ones are not.
    const wide = {layers: 2, width: 2048, headCount: 16, feedForwardLength: 2816};
    const start = async (extra: string[]) => {
        const fixture = await createDataDirWithDemoModel(wide);
        cleanups.push(fixture.cleanup);
        const daemon = await startSwarmDaemon(bootstrap, fixture.dataDir, ['--network', network, '--context-size', String(CONTEXT), '--model', 'demo', ...extra],
            {readyTimeoutMs: COORDINATOR_READY_MS});
        cleanups.push(() => daemon.stop('SIGKILL'));
        return {daemon, id: await nodeIdOf(daemon), client: new OpenAI({baseURL: daemon.baseUrl, apiKey: 'x', maxRetries: 0})};
    };
    const host = await start(['--max-shard-memory', String(400 * MiB)]);
    // The host announces the model's hash once it has read the file: only then is it known to hold it.
    await waitFor(async () => (await fetchStatus(host.daemon, '/api/network/models')).models.some((model) => model.sha256 !== null), 60_000, 100);
    // Room for the embeddings and the output layer only: every layer goes to the host.
    const coordinator = await start(['--shard', 'always', '--max-stages', '2', '--memory-limit', String(12 * MiB), '--max-shard-memory', '0']);
    const pipeline = await pipelineReady(coordinator);
    const stage = pipeline.stages.find((candidate) => !candidate.self)!;
    t.is(stage.peer, host.id);
    t.deepEqual(stage.layers, [0, wide.layers - 1]);
    t.is(stage.transferBytes, 0, 'the planner knows the host holds the layers');
    const layerBytes = (await fetchStatus(coordinator.daemon, '/api/network/models')).models[0]!.resources.perLayerBytes.reduce((sum, bytes) => sum + bytes, 0);
    // Only the attention matrices and small tensors crossed the tunnel: about half of the layers' bytes.
    t.true(stage.bytesSent < 0.6 * layerBytes, `${stage.bytesSent} bytes sent for ${layerBytes} bytes of layers`);
    t.true(stage.bytesSent > 0.3 * layerBytes, 'the tensors under the threshold were sent');
    t.log(`${stage.bytesSent} bytes sent to the host for ${layerBytes} bytes of layers`);
    const reply = await coordinator.client.completions.create({model: 'demo', prompt: PROMPT, max_tokens: 16, temperature: 0});
    t.is(reply.usage?.completion_tokens, 16);
});
