import {readFile} from 'node:fs/promises';
import test from 'ava';
import type {Testnet} from 'hyperdht/testnet.js';
import OpenAI from 'openai';
import {waitFor, type DaemonHandle} from '../harness/cli-process.js';
import {singleProcessTexts} from '../harness/generation-requests.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {serveFile} from '../harness/file-server.js';
import {fetchStatus} from '../harness/node-status.js';
import {testRpcBinaries} from '../harness/rpc-binaries.js';
import {nodeIdOf, startSwarmDaemon, startTestnet} from '../harness/swarm-fixture.js';
import {largeTensors} from '../engine/rpc/tensor-cache-seed.js';
import {recordModelSource} from '../engine/model-source.js';
import {modelLayoutOf} from '../engine/model-files.js';

/**
 * Hosts fetch their layers from the model's source (docs/architecture.md, "Hosts that fetch their layers"): real
 * daemons on a loopback testnet, a local HTTP server with Range support standing in for Hugging Face (`HF_ENDPOINT`)
 * or a plain URL, real rpc servers in their sandboxes. The coordinator downloads the model from that source at start,
 * so it knows the source the way a user's node would.
 */

const MiB = 2 ** 20;
/** Feed-forward matrices of 2048 × 2816 F16 (11.5 MB) are over ggml-rpc's 10 MiB hash threshold; attention ones are not. */
const WIDE = {layers: 2, width: 2048, headCount: 16, feedForwardLength: 2816, endsText: false};
const CONTEXT = 256;
const PROMPT = 'Once upon a time';
const TOKENS = 24;
const HF_FILE = 'strongdoge/wide/resolve/main/wide.gguf';
const COORDINATOR_READY_MS = 180_000;

let testnet: Testnet;
let bootstrap: string;
let modelBytes: Buffer;
let expectedText: string;
/** The big tensors of each layer, as the hosts should fetch them. */
let bigTensors: Awaited<ReturnType<typeof largeTensors>>;
/** Bytes of each layer's weights. */
let layerBytes: readonly number[];
const cleanups: (() => Promise<unknown>)[] = [];

interface Node {
    daemon: DaemonHandle,
    id: string
}

test.before(async () => {
    await testRpcBinaries();
    ({testnet, bootstrap} = await startTestnet());
    const fixture = await createDataDirWithDemoModel(WIDE);
    cleanups.push(fixture.cleanup);
    modelBytes = await readFile(fixture.modelPath);
    bigTensors = await largeTensors(fixture.modelPath);
    ({layerBytes} = await modelLayoutOf(fixture.modelPath));
    // The same model whole, in one process: the text every pipeline must reproduce.
    [expectedText] = await singleProcessTexts(fixture.dataDir, [PROMPT], {maxTokens: TOKENS, contextSize: CONTEXT}) as [string];
});

test.after.always(async () => {
    for (const cleanup of cleanups.reverse())
        await cleanup().catch(() => undefined);
    await testnet?.destroy();
});

async function startNode(network: string, extra: string[], env: Record<string, string>, readyTimeoutMs?: number): Promise<Node> {
    // An empty data dir: a host holds no copy of the model, and the coordinator downloads it.
    const fixture = await createDataDirWithDemoModel({layers: 1, width: 64});
    cleanups.push(fixture.cleanup);
    const daemon = await startSwarmDaemon(bootstrap, fixture.dataDir, ['--network', network, '--context-size', String(CONTEXT), ...extra],
        {env, ...(readyTimeoutMs !== undefined && {readyTimeoutMs})});
    cleanups.push(() => daemon.stop('SIGKILL'));
    return {daemon, id: await nodeIdOf(daemon)};
}

/** Two hosts with room for one layer each, and a coordinator with room for the embeddings and output only. */
async function startPipeline(network: string, model: string, env: Record<string, string>, extra: string[] = []) {
    const hosts = await startHosts(network, env, extra);
    // A coordinator answers /health once its pipeline serves: the hosts are there first.
    const coordinator = await startNode(network, ['--model', model, '--shard', 'always', '--max-stages', '3', '--memory-limit', String(12 * MiB),
        '--max-shard-memory', '0', ...extra], env, COORDINATOR_READY_MS);
    return {coordinator, hosts};
}

/**
 * A coordinator whose copy of the model was pulled earlier from `source` (its record beside the file, as `models
 * pull` leaves it): its bytes are the true ones whatever the source serves now.
 */
async function startPulledCoordinator(network: string, source: string, env: Record<string, string>, extra: string[] = []) {
    const fixture = await createDataDirWithDemoModel(WIDE);
    cleanups.push(fixture.cleanup);
    if (!await recordModelSource(fixture.modelPath, source))
        throw new Error(`the model's source was not recorded: ${source}`);
    const daemon = await startSwarmDaemon(bootstrap, fixture.dataDir, ['--network', network, '--context-size', String(CONTEXT), '--model', 'demo',
        '--shard', 'always', '--max-stages', '3', '--memory-limit', String(12 * MiB), '--max-shard-memory', '0', ...extra], {env, readyTimeoutMs: COORDINATOR_READY_MS});
    cleanups.push(() => daemon.stop('SIGKILL'));
    return {daemon, id: await nodeIdOf(daemon)};
}

function startHosts(network: string, env: Record<string, string>, extra: string[] = []) {
    return Promise.all([0, 1].map(() => startNode(network, ['--max-shard-memory', String(130 * MiB), ...extra], env)));
}

async function readyPipeline(node: Node) {
    await waitFor(async () => (await fetchStatus(node.daemon, '/api/cluster')).pipelines[0]?.state === 'ready', 150_000, 200).catch(async (error: Error) => {
        throw new Error(`${error.message}: ${JSON.stringify(await fetchStatus(node.daemon, '/api/cluster'))}`);
    });
    return (await fetchStatus(node.daemon, '/api/cluster')).pipelines[0]!;
}

async function completion(node: Node) {
    const client = new OpenAI({baseURL: node.daemon.baseUrl, apiKey: 'x', maxRetries: 0});
    const [model] = (await client.models.list()).data.filter((entry) => entry.owned_by === 'strongdoge:pipeline');
    const reply = await client.completions.create({model: model!.id, prompt: PROMPT, max_tokens: TOKENS, temperature: 0});
    return reply.choices[0]!.text;
}

/** The big tensors of a stage's layers. */
function bigTensorsOf(layers: [number, number]) {
    return bigTensors.filter((tensor) => {
        const block = Number(/^blk\.(\d+)\./.exec(tensor.name)?.[1]);
        return block >= layers[0] && block <= layers[1];
    });
}

function bigBytesOf(layers: [number, number]) {
    return bigTensorsOf(layers).reduce((sum, tensor) => sum + tensor.bytes, 0);
}

test.serial('both hosts fetch their layers from the hf: source: the coordinator sends none of the big tensors, and the text is one process\'s', async (t) => {
    const source = await serveFile(HF_FILE, modelBytes);
    cleanups.push(() => source.close());
    const env = {HF_ENDPOINT: source.origin};
    const {coordinator} = await startPipeline('fetch-hf', `hf:${HF_FILE.replace('/resolve/main', '')}`, env);
    const pipeline = await readyPipeline(coordinator);
    const remote = pipeline.stages.filter((stage) => !stage.self);
    t.is(remote.length, 2, JSON.stringify(pipeline.stages));
    for (const stage of remote) {
        const big = bigBytesOf(stage.layers!);
        t.true(big > 0, 'each host\'s layers have tensors over the hash threshold');
        t.like(stage.weights, {from: 'source', fetch: {state: 'done', failed: 0, totalBytes: big}});
        t.is(stage.weights.fetch!.stored, bigTensorsOf(stage.layers!).length);
        // The tunnel carried the small tensors and the activations, never a big tensor's bytes.
        t.true(stage.bytesSent < stage.transferBytes - big + 8 * MiB, `${stage.bytesSent} bytes sent, ${stage.transferBytes} to transfer, ${big} of them fetched`);
    }
    // The hosts asked the source for exactly their tensors' ranges, each once.
    const ranges = source.requests.filter((request) => request.method === 'GET' && request.range !== undefined && request.status === 206)
        .map((request) => request.range!);
    for (const tensor of bigTensors)
        t.true(ranges.includes(`bytes=${tensor.start}-${tensor.start + tensor.bytes - 1}`), `${tensor.name} was fetched by range`);
    t.is(await completion(coordinator), expectedText);
    t.is(pipeline.failovers, 0);
});

test.serial('a range the source corrupts fails its SHA-256 check: that tensor comes through the coordinator, and the text is still one process\'s', async (t) => {
    const source = await serveFile('models/wide.gguf', modelBytes);
    cleanups.push(() => source.close());
    // One feed-forward tensor of the last layer is served with its bytes inverted.
    const victim = bigTensors.at(-1)!;
    source.corrupt(victim.start + 1000, victim.start + 2000);
    // A plain URL on loopback: fetched only on a private network, whose peers are trusted with its addresses.
    const extra = ['--network-secret', 'fetch-corrupt-secret'];
    await startHosts('fetch-corrupt', {}, extra);
    const coordinator = await startPulledCoordinator('fetch-corrupt', source.url, {}, extra);
    const pipeline = await readyPipeline(coordinator);
    const remote = pipeline.stages.filter((stage) => !stage.self);
    const last = remote.find((stage) => stage.layers![1] === WIDE.layers - 1)!;
    const first = remote.find((stage) => stage !== last)!;
    t.like(first.weights, {from: 'source', fetch: {state: 'done', failed: 0}});
    t.like(last.weights, {from: 'source', fetch: {state: 'done', failed: 1}});
    t.regex(last.weights.fetch!.reason ?? '', new RegExp(`${victim.name.replace(/\./g, '\\.')}.*SHA-256|sha256|checksum`, 'i'));
    // The corrupted tensor crossed the tunnel; the others of that stage did not.
    t.true(last.bytesSent >= victim.bytes, `${last.bytesSent} bytes sent; the corrupted tensor has ${victim.bytes}`);
    t.true(last.bytesSent < last.transferBytes - bigBytesOf(last.layers!) + victim.bytes + 8 * MiB);
    t.is(await completion(coordinator), expectedText);
});

test.serial('a source that is down: every weight comes through the coordinator, as before', async (t) => {
    // The coordinator pulled the model earlier; its source is gone now (nothing listens on that port any more).
    const source = await serveFile(HF_FILE, modelBytes);
    await source.close();
    const env = {HF_ENDPOINT: source.origin};
    const network = 'fetch-down';
    await startHosts(network, env);
    const coordinator = await startPulledCoordinator(network, `hf:${HF_FILE.replace('/resolve/main', '')}`, env);
    const pipeline = await readyPipeline(coordinator);
    for (const stage of pipeline.stages.filter((candidate) => !candidate.self)) {
        t.like(stage.weights, {from: 'coordinator', fetch: {state: 'failed', stored: 0}});
        t.truthy(stage.weights.fetch!.reason);
        t.true(stage.bytesSent >= stage.transferBytes * 0.9, `${stage.bytesSent} of ${stage.transferBytes} bytes sent by the coordinator`);
    }
    t.is(await completion(coordinator), expectedText);
});

test.serial('a ready spare takes over a SIGKILLed stage with no weight transfer: the source is not asked again, and the text is one process\'s', async (t) => {
    const source = await serveFile(HF_FILE, modelBytes);
    cleanups.push(() => source.close());
    const env = {HF_ENDPOINT: source.origin};
    const network = 'fetch-spare';
    const hosts = [...await startHosts(network, env), await startNode(network, ['--max-shard-memory', String(130 * MiB)], env)];
    const coordinator = await startNode(network, ['--model', `hf:${HF_FILE.replace('/resolve/main', '')}`, '--shard', 'always', '--max-stages', '3',
        '--memory-limit', String(12 * MiB), '--max-shard-memory', '0', '--spare-stages', '1'], env, COORDINATOR_READY_MS);
    await waitFor(async () => (await fetchStatus(coordinator.daemon, '/api/cluster')).pipelines[0]?.spares.some((spare) => spare.state === 'ready') ?? false, 60_000, 200)
        .catch(async (error: Error) => {
            throw new Error(`${error.message}: ${JSON.stringify((await fetchStatus(coordinator.daemon, '/api/cluster')).pipelines[0])}`);
        });
    const before = (await fetchStatus(coordinator.daemon, '/api/cluster')).pipelines[0]!;
    const spare = before.spares.find((candidate) => candidate.state === 'ready')!;
    t.false(before.stages.some((stage) => stage.peer === spare.peer), 'the spare is not in the plan');
    const replaced = before.stages.find((stage) => stage.peer === spare.replaces)!;
    t.deepEqual(spare.layers, replaced.layers, 'the spare holds the layers of the stage it would replace');
    t.is(spare.doneBytes, bigBytesOf(spare.layers));
    const rangesBefore = source.requests.filter((request) => request.range !== undefined).length;

    // The host dies while a request streams through it: the stall detector sees it at once (a SIGKILLed peer says nothing).
    const victim = hosts.find((host) => host.id === spare.replaces)!;
    const client = new OpenAI({baseURL: coordinator.daemon.baseUrl, apiKey: 'x', maxRetries: 0});
    const model = (await client.models.list()).data.find((entry) => entry.owned_by === 'strongdoge:pipeline')!.id;
    let streamed = 0;
    const stream = await client.completions.create({model, prompt: PROMPT, max_tokens: 400, temperature: 0, stream: true});
    let killed: Promise<unknown> | undefined;
    for await (const chunk of stream) {
        streamed += chunk.choices[0]?.text.length ?? 0;
        if (streamed > 0 && killed === undefined)
            killed = victim.daemon.stop('SIGKILL');
    }
    await killed;
    const after = (await fetchStatus(coordinator.daemon, '/api/cluster')).pipelines[0]!;
    t.true(after.failovers >= 1, 'the stream went on over a new plan');
    t.is(after.state, 'ready');
    const taken = after.stages.find((stage) => stage.peer === spare.peer);
    t.truthy(taken, 'the spare replaced the dead stage');
    t.deepEqual(taken!.layers, spare.layers);
    // Its big tensors were in its store already: none crossed the tunnel, and the source was not asked again.
    t.like(taken!.weights, {from: 'source', fetch: {state: 'done', failed: 0, stored: bigTensorsOf(spare.layers).length}});
    const weights = layerBytes.slice(spare.layers[0], spare.layers[1] + 1).reduce((sum, bytes) => sum + bytes, 0);
    t.is(taken!.transferBytes, 0, 'the planner counted the spare as holding the layers');
    t.true(taken!.bytesSent < weights - bigBytesOf(spare.layers) + 8 * MiB, `${taken!.bytesSent} bytes sent for ${weights} bytes of weights`);
    t.is(source.requests.filter((request) => request.range !== undefined).length, rangesBefore, 'no download after the failure');
    t.is(await completion(coordinator), expectedText);
});
