import {copyFile, mkdir, mkdtemp, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import test from 'ava';
import type {Testnet} from 'hyperdht/testnet.js';
import {getLlama, LlamaCompletion, type Token} from 'node-llama-cpp';
import OpenAI from 'openai';
import {waitFor, type DaemonHandle} from '../harness/cli-process.js';
import {seamReport, streamGreedyCompletion} from '../harness/generation-requests.js';
import {fetchStatus} from '../harness/node-status.js';
import {testRpcBinaries} from '../harness/rpc-binaries.js';
import {writeSpeculationModels} from '../harness/speculation-models.js';
import {nodeIdOf, startSwarmDaemon, startTestnet, waitForPeers} from '../harness/swarm-fixture.js';

/**
 * Speculative decoding through real daemons on a loopback testnet (docs/architecture.md, "Speculative decoding"):
 * a coordinator drafting for a 3-stage pipeline, across a stage's failure, and a provider drafting for a routed job.
 * At temperature 0 the text is the target model's own greedy text, whatever the draft: node-llama-cpp's in this
 * process, without speculation.
 */

const MiB = 2 ** 20;
/** The shape test/sharding.test.ts splits over three nodes; the speculation models never end by themselves. */
const MODEL = {layers: 8, width: 256, feedForwardLength: 512};
const CONTEXT = 512;
/**
 * The target's greedy text for this prompt never picks between two tokens closer than NEAR_TIE (the least margin is
 * about 0.04): a batched pass (drafts verified, a resumed prompt, a cached prefix) rounds differently from one token's,
 * and flipped a tie of 0.0007 that 'Once upon a time' meets at its 164th token, with speculation and without.
 */
const PROMPT = 'Hello world';
const TOKENS = 400;
/** Log-probability margins between the greedy token and the next below this are near-ties that rounding may flip. */
const NEAR_TIE = 0.01;
/** A coordinator answers /health with 200 only once its pipeline serves: formed over its hosts and loaded. */
const COORDINATOR_READY_MS = 150_000;
const PIPELINE_NETWORK = 'speculative-pipeline';

interface Node {
    daemon: DaemonHandle,
    id: string,
    client: OpenAI
}

let testnet: Testnet;
let bootstrap: string;
let models: Awaited<ReturnType<typeof writeSpeculationModels>>;
let expectedText: string;
/** Hosts for the pipelines' layers: room for one session each, so a plan needs two of them; the third is a spare. */
let hosts: Node[];
const cleanups: (() => Promise<unknown>)[] = [];

/** A data dir of its own, holding the target as `models/demo.gguf` when the node serves it. */
async function dataDir(withTarget: boolean) {
    const dir = await mkdtemp(join(tmpdir(), 'strongdoge-test-'));
    cleanups.push(() => rm(dir, {recursive: true, force: true}));
    if (withTarget) {
        await mkdir(join(dir, 'models'));
        await copyFile(models.target, join(dir, 'models', 'demo.gguf'));
    }
    return dir;
}

async function startNode(network: string, extra: string[], withTarget: boolean): Promise<Node> {
    const daemon = await startSwarmDaemon(bootstrap, await dataDir(withTarget), [
        '--network', network, '--context-size', String(CONTEXT), '--parallel', '2', ...(withTarget ? ['--model', 'demo'] : []), ...extra
    ], withTarget ? {readyTimeoutMs: COORDINATOR_READY_MS} : {});
    cleanups.push(() => daemon.stop('SIGKILL'));
    return {daemon, id: await nodeIdOf(daemon), client: new OpenAI({baseURL: daemon.baseUrl, apiKey: 'x', maxRetries: 0})};
}

/** A coordinator whose plan needs three stages (test/sharding.test.ts), drafting with `draft`. */
async function startCoordinator(draft: string, extra: string[] = []) {
    const coordinator = await startNode(PIPELINE_NETWORK, [
        '--shard', 'always', '--max-stages', '3', '--memory-limit', String(15 * MiB), '--serve-peers', 'off', '--draft-model', draft, ...extra
    ], true);
    const pipeline = (await cluster(coordinator)).pipelines[0];
    if (pipeline?.state !== 'ready')
        throw new Error(`/health said ready, the pipeline is not: ${JSON.stringify(pipeline)}`);
    return {coordinator, pipeline};
}

/** Stops a coordinator the way a user does; its hosts end its sessions and have room for the next one. */
async function stopCoordinator(coordinator: Node) {
    await coordinator.daemon.stop();
    await waitFor(async () => (await Promise.all(hosts.map((host) => cluster(host)))).every((status) => status.hosting.sessions === 0), 30_000, 100);
}

function cluster(node: Node) {
    return fetchStatus(node.daemon, '/api/cluster');
}

function complete(node: Node) {
    return node.client.completions.create({model: 'demo', prompt: PROMPT, max_tokens: TOKENS, temperature: 0});
}

/** Streams the greedy completion of PROMPT, calling `onText` with the text so far after each chunk. */
function streamCompletion(node: Node, onText: (text: string) => void = () => undefined) {
    return streamGreedyCompletion(node.client, PROMPT, TOKENS, onText);
}

test.before(async () => {
    await testRpcBinaries(); // every daemon uses this build (harness/cli-process.ts)
    models = await writeSpeculationModels({model: MODEL});
    cleanups.push(models.cleanup);
    // The target alone, by node-llama-cpp itself: no engine of ours, no speculation.
    const llama = await getLlama({gpu: false, build: 'never'});
    const target = await llama.loadModel({modelPath: models.target});
    try {
        const context = await target.createContext({contextSize: CONTEXT, threads: 1, sequences: 2});
        const sequence = context.getSequence();
        const generated: Token[] = [];
        expectedText = await new LlamaCompletion({contextSequence: sequence}).generateCompletion(PROMPT,
            {temperature: 0, maxTokens: TOKENS, repeatPenalty: false, onToken: (chunk) => generated.push(...chunk)});
        // The same path again, each token with its probabilities: it must hold no near-tie. (The last token sampled
        // was never evaluated, so the sequence holds the prompt and all but it.)
        const prompt = sequence.contextTokens.slice(0, sequence.contextTokens.length - generated.length + 1);
        const margins: number[] = [];
        for await (const {token, probabilities} of context.getSequence().evaluateWithMetadata(prompt, {probabilities: true}, {temperature: 0})) {
            const [first, second] = [...probabilities!.values()].sort((a, b) => b - a);
            margins.push(token === generated[margins.length] ? Math.log(first!) - Math.log(second!) : Number.NaN);
            if (margins.length === generated.length)
                break;
        }
        const least = Math.min(...margins);
        if (!(least >= NEAR_TIE))
            throw new Error(`the target's greedy text for '${PROMPT}' holds a near-tie (least margin ${least}; NaN: another path)`);
    } finally {
        await target.dispose();
    }
    ({testnet, bootstrap} = await startTestnet());
    hosts = await Promise.all([0, 1, 2].map(() => startNode(PIPELINE_NETWORK, ['--max-shard-memory', String(15 * MiB)], false)));
});

test.after.always(async () => {
    for (const cleanup of cleanups.reverse())
        await cleanup().catch(() => undefined);
    await testnet?.destroy();
});

test.serial('a 3-stage pipeline drafting with the target itself: every draft kept, the text the target\'s alone', async (t) => {
    // At least 4 drafts a pass: on loopback drafting seldom pays, and passes of several tokens are what this checks
    // (the hosts' receipt bound counts each pass's tokens).
    const {coordinator, pipeline} = await startCoordinator(models.selfDraft, ['--draft-min', '4']);
    t.teardown(() => stopCoordinator(coordinator));
    t.is(pipeline.stages.length, 3);
    t.deepEqual(pipeline.stages.map((stage) => stage.self), [true, false, false]);
    t.true(pipeline.placementMatches, 'llama.cpp placed the target as planned (the draft model\'s CPU layers are not the target\'s)');
    t.is((await complete(coordinator)).choices[0]!.text, expectedText);
    const {speculation} = (await cluster(coordinator)).pipelines[0]!;
    t.like(speculation, {drafter: 'draft', tokens: TOKENS});
    t.true(speculation!.drafted > 0, JSON.stringify(speculation));
    t.is(speculation!.accepted, speculation!.drafted, 'the target agrees with itself');
    t.true(speculation!.tokensPerPass! > 3, `${speculation!.tokensPerPass} tokens per pass`);
    // How many it drafts follows what drafting saves against what a pass costs, timings of this busy machine: logged.
    t.log(`self draft: ${speculation!.passes} passes for ${speculation!.tokens} tokens, ${speculation!.tokensPerPass!.toFixed(2)} tokens/pass`);
    // Two at once: their passes, drafts and all, are decoded together.
    const together = await Promise.all([streamCompletion(coordinator), complete(coordinator)]);
    t.is(together[0].text, expectedText);
    t.is(together[1].choices[0]!.text, expectedText);
    const after = (await cluster(coordinator)).pipelines[0]!;
    t.like(after.speculation, {tokens: 3 * TOKENS});
    t.is(after.speculation!.accepted, after.speculation!.drafted);
    // Each host countersigned every request's receipt, though a pass made several tokens: no stage failed.
    t.is(after.failovers, 0, JSON.stringify(after.failures));
    for (const stage of pipeline.stages.slice(1)) {
        const host = hosts.find((candidate) => candidate.id === stage.peer)!;
        const shardTokens = async () => (await fetchStatus(host.daemon, '/api/ledger')).tally.shardTokens;
        await waitFor(async () => await shardTokens() === 3 * TOKENS, 10_000, 100).catch(() => undefined);
        t.is(await shardTokens(), 3 * TOKENS);
    }
});

for (const [name, draft] of [['another model\'s draft, which never agrees', 'otherDraft'], ['a draft that mostly agrees', 'draft']] as const)
    test.serial(`a 3-stage pipeline drafting with ${name}: the text the target's alone`, async (t) => {
        const {coordinator, pipeline} = await startCoordinator(models[draft]);
        t.teardown(() => stopCoordinator(coordinator));
        t.is(pipeline.stages.length, 3);
        t.is((await streamCompletion(coordinator)).text, expectedText);
        const {speculation} = (await cluster(coordinator)).pipelines[0]!;
        t.like(speculation, {drafter: 'draft', tokens: TOKENS});
        t.true(speculation!.drafted > 0, JSON.stringify(speculation));
        // Measured: none of 11 to 23 kept (drafting stops but for probes) against 40% to 75% of 20 to 275.
        if (draft === 'otherDraft')
            t.true(speculation!.accepted <= 0.2 * speculation!.drafted, JSON.stringify(speculation));
        else
            t.true(speculation!.accepted > 0, JSON.stringify(speculation));
        t.log(`${draft}: acceptance ${speculation!.acceptance!.toFixed(2)} of ${speculation!.drafted} drafted, ${speculation!.tokensPerPass!.toFixed(2)} tokens/pass`);
    });

test.serial('a stage killed mid-answer while the coordinator drafts: the answer completes with an exact seam', async (t) => {
    const {coordinator, pipeline} = await startCoordinator(models.draft);
    t.teardown(() => coordinator.daemon.stop());
    const victim = hosts.find((host) => host.id === pipeline.stages[1]!.peer)!;
    let seamText = '';
    const answer = await streamCompletion(coordinator, (text) => {
        // Kill the stage once a good part of the answer has streamed.
        if (seamText === '' && text.length > expectedText.length / 4) {
            seamText = text;
            victim.daemon.process.kill('SIGKILL');
        }
    });
    t.not(seamText, '', 'the stage was killed mid-answer');
    // Whole, continuing from exactly the text streamed before the failure (test/sharding.test.ts's seam). Past the
    // seam the resumed prompt is evaluated in one batch, which may flip a near-tie (README); this text holds none
    // (PROMPT), so it is the uninterrupted text to the end.
    t.is(answer.finishReason, 'length');
    t.is(answer.completionTokens, TOKENS);
    t.true(answer.text.startsWith(seamText));
    t.true(expectedText.startsWith(seamText), 'before the failure: the uninterrupted text');
    t.is(answer.text, expectedText, seamReport(answer.text, expectedText, seamText));
    const after = (await cluster(coordinator)).pipelines[0]!;
    t.is(after.failovers, 1, JSON.stringify(after.failures));
    t.is(after.failures[0]!.peer, victim.id);
    t.false(after.stages.some((stage) => stage.peer === victim.id));
    t.is(after.state, 'ready');
    // The engine restarted with its draft model: the resumed answer drafted too.
    t.like(after.speculation, {drafter: 'draft'});
    t.true(after.speculation!.accepted > 0, JSON.stringify(after.speculation));
    t.is(coordinator.daemon.process.exitCode, null, 'the coordinator never died');
});

test.serial('a routed job: the provider drafts with its own draft model, and the requester gets the target\'s text', async (t) => {
    const network = 'speculative-routed';
    const provider = await startNode(network, ['--draft-model', models.draft], true);
    const requester = await startNode(network, [], false);
    await waitForPeers(requester.daemon, [provider.id], 30_000,
        (peers) => peers.some((peer) => peer.capabilities.models.some((model) => model.id === 'demo' && model.loaded)));
    // Streamed: a pass's tokens come as a burst of frames, and none was taken for a stall (one job served, no failover).
    const routed = await streamCompletion(requester);
    t.is(routed.text, expectedText);
    t.is(routed.finishReason, 'length');
    t.is(routed.completionTokens, TOKENS);
    t.is((await complete(provider)).choices[0]!.text, expectedText, 'the direct answer');
    const routes = requester.daemon.logs.filter((record) => record.msg === 'request').map((record) => (record.request as {route: string}).route);
    t.true(routes.length === 1 && routes[0]!.startsWith('peers:'), JSON.stringify(routes));
    const served = await fetchStatus(provider.daemon, '/api/node');
    t.is(served.peerJobs.served, 1);
    const [model] = served.models;
    t.like(model, {id: 'demo', speculative: 'draft'});
    t.is(model!.draft?.path, models.draft);
    t.like(model!.speculation, {drafter: 'draft', tokens: 2 * TOKENS});
    t.true(model!.speculation!.accepted > 0 && model!.speculation!.tokensPerPass! > 1, JSON.stringify(model!.speculation));
    t.like((await fetchStatus(requester.daemon, '/api/node')).requests, {succeeded: 1, failed: 0});
    t.log(`provider: acceptance ${model!.speculation!.acceptance!.toFixed(2)}, ${model!.speculation!.tokensPerPass!.toFixed(2)} tokens/pass`);
});
