import {rename} from 'node:fs/promises';
import {join} from 'node:path';
import test from 'ava';
import type {Testnet} from 'hyperdht/testnet.js';
import type Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import {waitFor, type DaemonHandle} from '../harness/cli-process.js';
import {schemaValidator} from '../harness/ajv-validator.js';
import {anthropicClient, greedy, readMessageStream, textOf} from '../harness/anthropic-client.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {moreCallsBias, weatherParameters} from '../harness/demo-tool-calls.js';
import {seamReport} from '../harness/generation-requests.js';
import {fetchStatus} from '../harness/node-status.js';
import {nodeIdOf, peersOf, startSwarmDaemon, startTestnet, waitForPeers} from '../harness/swarm-fixture.js';

/** A serving peer silent this long is replaced: short, so freezing tests stay quick. */
const PEER_TIMEOUT_S = 2;
const MAX_JOB_TOKENS = 3000;
const SECRET_PROMPT = 'walrus-confidential-prompt';

interface Node {
    daemon: DaemonHandle,
    id: string,
    dataDir: string,
    client: OpenAI
}

let testnet: Testnet;
let bootstrap: string;
let requester: Node;
const providers: Node[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

async function startNode(dataDir: string, serving: boolean): Promise<Node> {
    const daemon = await startSwarmDaemon(bootstrap, dataDir, [
        '--peer-timeout', String(PEER_TIMEOUT_S),
        ...(serving ? ['--model', 'demo', '--max-job-tokens', String(MAX_JOB_TOKENS)] : [])
    ]);
    cleanups.push(() => daemon.stop());
    return {daemon, dataDir, id: await nodeIdOf(daemon), client: new OpenAI({baseURL: daemon.baseUrl, apiKey: 'x', maxRetries: 0})};
}

async function servingDataDir() {
    // A model that never ends by itself and is wide enough to stream for seconds: generations to interrupt.
    const fixture = await createDataDirWithDemoModel({width: 512, feedForwardLength: 1024, endsText: false});
    cleanups.push(fixture.cleanup);
    return fixture.dataDir;
}

/** The requester sees every provider with the model loaded. */
async function providersReady() {
    try {
        await waitForPeers(requester.daemon, providers.map((provider) => provider.id), 30_000,
            (peers) => peers.every((peer) => peer.capabilities.models.some((model) => model.id === 'demo' && model.loaded)));
    } catch (error) {
        const {peers} = await peersOf(requester.daemon);
        throw new Error(`${(error as Error).message}: expected ${providers.map((p) => p.id.slice(0, 8))}, requester sees ${JSON.stringify(peers.map((p) => [p.id.slice(0, 8), JSON.stringify(p.capabilities).slice(0, 300)]))}; logs ${JSON.stringify(requester.daemon.logs.filter((r) => String(r.msg).includes('peer')).slice(-8))}`);
    }
}

function node(daemon: DaemonHandle) {
    return fetchStatus(daemon, '/api/node');
}

async function servingProvider() {
    let serving: Node | undefined;
    await waitFor(async () => {
        for (const provider of providers)
            if ((await node(provider.daemon)).peerJobs.active > 0)
                serving = provider;
        return serving !== undefined;
    }, 10_000, 5);
    return serving!;
}

test.before(async () => {
    ({testnet, bootstrap} = await startTestnet());
    const empty = await createDataDirWithDemoModel({layers: 1, width: 64, headCount: 4, feedForwardLength: 64});
    cleanups.push(empty.cleanup);
    requester = await startNode(empty.dataDir, false);
    providers.push(...await Promise.all([servingDataDir().then((dir) => startNode(dir, true)), servingDataDir().then((dir) => startNode(dir, true))]));
    await providersReady();
});

test.after.always(async () => {
    for (const cleanup of cleanups.reverse())
        await cleanup().catch(() => undefined);
    await testnet?.destroy();
});

const chatRequest = {model: 'demo', messages: [{role: 'user' as const, content: `${SECRET_PROMPT}: what is a swarm?`}], max_tokens: 40, temperature: 0};

test.serial('a node without the model serves chats through a peer; text equals a local run there', async (t) => {
    const local = await providers[0]!.client.chat.completions.create(chatRequest);
    const remote = await requester.client.chat.completions.create(chatRequest);
    t.is(remote.choices[0]!.message.content, local.choices[0]!.message.content);
    t.is(remote.usage!.completion_tokens, 40, JSON.stringify([remote.usage, local.usage]));
    t.is(remote.usage!.prompt_tokens, local.usage!.prompt_tokens);

    let streamed = '';
    let chunks = 0;
    for await (const chunk of await requester.client.chat.completions.create({...chatRequest, stream: true})) {
        streamed += chunk.choices[0]?.delta.content ?? '';
        chunks++;
    }
    t.true(chunks > 5);
    t.is(streamed, local.choices[0]!.message.content ?? '');

    const completion = await requester.client.completions.create({model: 'demo', prompt: 'Such wow', max_tokens: 20, temperature: 0});
    const localCompletion = await providers[1]!.client.completions.create({model: 'demo', prompt: 'Such wow', max_tokens: 20, temperature: 0});
    t.is(completion.choices[0]!.text, localCompletion.choices[0]!.text);

    const embedding = await requester.client.embeddings.create({model: 'demo', input: 'remote vectors', encoding_format: 'float'});
    const localEmbedding = await providers[0]!.client.embeddings.create({model: 'demo', input: 'remote vectors', encoding_format: 'float'});
    t.deepEqual(embedding.data[0]!.embedding, localEmbedding.data[0]!.embedding);

    const requestLog = requester.daemon.logs.filter((record) => record.msg === 'request').map((record) => (record.request as {route: string}).route);
    t.true(requestLog.every((route) => route.startsWith('peers:')), requestLog.join());
    // Receipts: both sides end up with countersigned receipts.
    await waitFor(async () => (await node(requester.daemon)).receipts >= 3, 10_000);
    const providerReceipts = (await Promise.all(providers.map((provider) => node(provider.daemon)))).reduce((sum, info) => sum + info.receipts, 0);
    t.true(providerReceipts >= 3);
});

test.serial('Anthropic\'s Messages API through a peer: the chat route\'s text, streamed or not; stop sequences, a tool call and count_tokens', async (t) => {
    const anthropic = anthropicClient(requester.daemon.origin);
    const body = greedy({model: 'demo', messages: chatRequest.messages, max_tokens: 40});
    const chat = await requester.client.chat.completions.create(chatRequest);
    const text = chat.choices[0]!.message.content!;
    const message = await anthropic.messages.create(body);
    t.is(textOf(message), text);
    t.is(message.stop_reason, 'max_tokens');
    t.deepEqual(message.usage, {input_tokens: chat.usage!.prompt_tokens, output_tokens: 40});
    const streamed = await readMessageStream(anthropic.messages.stream(body));
    t.is(streamed.text, text);
    t.like(streamed.final, {stop_reason: 'max_tokens', usage: message.usage});

    // The peer says which stop sequence ended its reply.
    const stop = text.slice(Math.floor(text.length / 2)).trim().slice(0, 3);
    t.true(stop.length > 0, JSON.stringify(text));
    const stopped = await anthropic.messages.create({...body, stop_sequences: ['never-in-this-reply', stop]});
    t.like(stopped, {stop_reason: 'stop_sequence', stop_sequence: stop});
    t.true(text.startsWith(textOf(stopped)));

    const counted = await anthropic.messages.countTokens({model: 'demo', messages: body.messages});
    t.is(counted.input_tokens, message.usage.input_tokens);

    const call = await anthropic.messages.create(greedy({
        model: 'demo', messages: [{role: 'user', content: 'The weather in Paris?'}], max_tokens: 200,
        tools: [{name: 'get_weather', input_schema: weatherParameters as Anthropic.Tool.InputSchema}],
        tool_choice: {type: 'tool', name: 'get_weather', disable_parallel_tool_use: true}
    }));
    const uses = call.content.filter((block) => block.type === 'tool_use');
    t.is(call.stop_reason, 'tool_use');
    t.is(uses.length, 1);
    t.true(validWeather(uses[0]!.input), JSON.stringify(uses[0]));

    const messageRoutes = () => requester.daemon.logs.filter((record) => record.msg === 'request')
        .map((record) => record.request as {endpoint: string, route: string}).filter((record) => record.endpoint.startsWith('/v1/messages'));
    await waitFor(() => messageRoutes().length === 5, 5_000, 20).catch(() => t.fail(JSON.stringify(messageRoutes())));
    const routes = messageRoutes();
    t.true(routes.every((record) => record.route.startsWith('peers:')), JSON.stringify(routes));
});

test.serial('logprobs come through a peer: the tokens and alternatives a local run gives', async (t) => {
    const body = {...chatRequest, max_tokens: 12, logprobs: true, top_logprobs: 2};
    const entries = (completion: OpenAI.ChatCompletion) =>
        completion.choices[0]!.logprobs!.content!.map((entry) => ({token: entry.token, top: entry.top_logprobs.map((top) => top.token)}));
    const local = await providers[0]!.client.chat.completions.create(body);
    const remote = await requester.client.chat.completions.create(body);
    t.is(entries(remote).length, 12);
    t.deepEqual(entries(remote), entries(local));
    let streamed = 0;
    for await (const chunk of await requester.client.chat.completions.create({...body, stream: true}))
        streamed += chunk.choices[0]?.logprobs?.content?.length ?? 0;
    t.is(streamed, 12);
});

test.serial('with --prefer remote, a node that holds the model still has a peer serve it', async (t) => {
    const daemon = await startSwarmDaemon(bootstrap, await servingDataDir(), ['--model', 'demo', '--prefer', 'remote']);
    t.teardown(async () => {
        await daemon.stop();
        await providersReady(); // the requester sees exactly the two providers again
    });
    await waitForPeers(daemon, [requester.id, ...providers.map((provider) => provider.id)], 30_000,
        (peers) => peers.filter((peer) => peer.capabilities.models.some((model) => model.loaded)).length === 2);
    const client = new OpenAI({baseURL: daemon.baseUrl, apiKey: 'x', maxRetries: 0});
    const viaPeer = await client.completions.create({model: 'demo', prompt: 'prefer others', max_tokens: 12, temperature: 0});
    const local = await providers[0]!.client.completions.create({model: 'demo', prompt: 'prefer others', max_tokens: 12, temperature: 0});
    t.is(viaPeer.choices[0]!.text, local.choices[0]!.text);
    const routes = daemon.logs.filter((record) => record.msg === 'request').map((record) => (record.request as {route: string}).route);
    t.deepEqual(routes.map((route) => route.startsWith('peers:')), [true]);
});

async function streamThroughRequester(prompt: string, maxTokens: number, onChunk: (chunks: number, text: string) => void) {
    let text = '';
    let chunks = 0;
    let finishReason: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of await requester.client.completions.create({
        model: 'demo', prompt, max_tokens: maxTokens, temperature: 0, stream: true, stream_options: {include_usage: true}
    })) {
        text += chunk.choices[0]?.text ?? '';
        finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
        usage = chunk.usage ?? usage;
        onChunk(++chunks, text);
    }
    return {text, finishReason, usage};
}

for (const signal of ['SIGKILL', 'SIGSTOP'] as const) {
    test.serial(`a serving peer that gets ${signal} mid-stream is replaced: the client's text is whole, nothing repeated or missing`, async (t) => {
        const prompt = `The long tale number ${signal}`;
        const maxTokens = 400;
        const expected = await providers[0]!.client.completions.create({model: 'demo', prompt, max_tokens: maxTokens, temperature: 0});

        let victim: Promise<Node | undefined> | undefined;
        let seamText = '';
        try {
            const result = await streamThroughRequester(prompt, maxTokens, (chunks, text) => {
                if (chunks === 20) {
                    seamText = text;
                    victim = servingProvider().then((serving) => {
                        serving.daemon.process.kill(signal);
                        return serving;
                    }, () => undefined);
                }
            });
            const interrupted = await victim;
            t.truthy(interrupted, 'a provider was serving, and was interrupted');
            // Whole and continuing from the text streamed before the failure; past the seam a near-tie may part it
            // from the uninterrupted run (README), so that is logged, not asserted.
            t.true(expected.choices[0]!.text.startsWith(seamText), 'before the failure: the uninterrupted text');
            t.true(result.text.startsWith(seamText));
            t.log(seamReport(result.text, expected.choices[0]!.text, seamText));
            t.is(result.finishReason, 'length');
            t.is(result.usage?.completion_tokens, maxTokens);
            const survivor = providers.find((provider) => provider !== interrupted)!;
            t.true((await node(survivor.daemon)).peerJobs.served > 0);
        } finally {
            // Bring the victim back for the tests that follow.
            const interrupted = await victim;
            if (interrupted !== undefined) {
                if (signal === 'SIGSTOP') {
                    interrupted.daemon.process.kill('SIGCONT');
                } else {
                    await interrupted.daemon.stop('SIGKILL');
                    providers[providers.indexOf(interrupted)] = await startNode(interrupted.dataDir, true);
                }
                await providersReady();
            }
        }
    });
}

const weatherTool = {type: 'function' as const, function: {name: 'get_weather', parameters: weatherParameters}};
const validWeather = schemaValidator(weatherParameters);
const callsOf = (completion: OpenAI.ChatCompletion) =>
    (completion.choices[0]!.message.tool_calls ?? []).flatMap((call) => call.type === 'function' ? [{name: call.function.name, arguments: call.function.arguments}] : []);

test.serial('tool calls through a peer are a local run\'s; a peer killed between calls is replaced, and the turn goes on after the calls sent', async (t) => {
    const body = {
        model: 'demo', messages: chatRequest.messages, tools: [weatherTool], tool_choice: 'required' as const, temperature: 0, max_tokens: 600,
        logit_bias: moreCallsBias()
    };
    const local = callsOf(await providers[0]!.client.chat.completions.create(body));
    t.true(local.length >= 3, `${local.length} calls`);
    t.deepEqual(callsOf(await requester.client.chat.completions.create(body)), local);

    let victim: Promise<Node | undefined> | undefined;
    try {
        const streamed: {name: string, arguments: string}[] = [];
        let finishReason: string | null = null;
        let usage: OpenAI.CompletionUsage | null | undefined;
        for await (const chunk of await requester.client.chat.completions.create({...body, stream: true, stream_options: {include_usage: true}})) {
            for (const delta of chunk.choices[0]?.delta.tool_calls ?? []) {
                t.is(delta.index, streamed.length);
                streamed.push({name: delta.function!.name!, arguments: delta.function!.arguments!});
                if (streamed.length === 2)
                    victim = servingProvider().then((serving) => {
                        serving.daemon.process.kill('SIGKILL');
                        return serving;
                    }, () => undefined);
            }
            finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
            usage = chunk.usage ?? usage;
        }
        t.truthy(await victim, 'a provider was serving, and was killed');
        // Calls are sent whole: the two before the failure are the uninterrupted run's, and every call is whole and valid.
        t.deepEqual(streamed.slice(0, 2), local.slice(0, 2));
        t.true(streamed.length >= 3);
        for (const call of streamed)
            t.true(validWeather(JSON.parse(call.arguments)), call.arguments);
        t.is(finishReason, 'length');
        t.is(usage?.completion_tokens, 600);
        t.log(JSON.stringify(streamed.slice(2)) === JSON.stringify(local.slice(2, streamed.length)) ? 'identical to the uninterrupted run' : 'parted after the seam');
    } finally {
        const interrupted = await victim;
        if (interrupted !== undefined) {
            await interrupted.daemon.stop('SIGKILL');
            providers[providers.indexOf(interrupted)] = await startNode(interrupted.dataDir, true);
            await providersReady();
        }
    }
});

test.serial('a job over the peers\' limits is refused politely by each, then fails clearly', async (t) => {
    const requestCounts = async () => {
        const {peers} = await peersOf(requester.daemon);
        return Object.fromEntries(peers.map((peer) => [peer.id, peer.requests.sent]));
    };
    const before = await requestCounts();
    const error = await t.throwsAsync(requester.client.completions.create({model: 'demo', prompt: 'too much', max_tokens: MAX_JOB_TOKENS + 1, temperature: 0}),
        {instanceOf: OpenAI.APIError});
    t.is(error!.status, 503);
    t.regex(error!.message, /refused.*exceeds this node's 3000/);
    // Refusals are no failures: nothing was counted against the peers.
    t.deepEqual(await requestCounts(), before);
});

test.serial('a request that fails through its own fault gets the answer a local model gives: one peer tried, no failover, no penalty', async (t) => {
    const peerRequests = async () => {
        const {peers} = await peersOf(requester.daemon);
        return Object.fromEntries(peers.map((peer) => [peer.id, peer.requests]));
    };
    const peerJobsServed = async () => (await Promise.all(providers.map((provider) => node(provider.daemon)))).reduce((sum, info) => sum + info.peerJobs.served, 0);
    const post = async (origin: string, path: string, body: object) => {
        const response = await fetch(`${origin}/v1/${path}`, {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify(body)});
        return {status: response.status, error: ((await response.json()) as {error: {type: string, param: string | null, code: string | null}}).error};
    };
    const cases: [string, string, object][] = [
        ['a prompt longer than the context', 'completions', {model: 'demo', prompt: 'wow such '.repeat(3000), max_tokens: 4, temperature: 0}],
        // Valid JSON Schema, but its grammar is left-recursive: only llama.cpp's parser, on the serving node, finds out.
        ['a JSON schema the grammar cannot build', 'chat/completions', {...chatRequest, max_tokens: 4, response_format: {type: 'json_schema', json_schema: {
            name: 'loop', schema: {anyOf: [{$ref: '#'}, {type: 'null'}]}
        }}}]
    ];
    const before = await peerRequests();
    const servedBefore = await peerJobsServed();
    for (const [name, path, body] of cases) {
        const local = await post(providers[0]!.daemon.origin, path, body);
        const remote = await post(requester.daemon.origin, path, body);
        t.is(local.status, 400, name);
        t.is(remote.status, local.status, name);
        t.deepEqual({type: remote.error.type, param: remote.error.param, code: remote.error.code},
            {type: local.error.type, param: local.error.param, code: local.error.code}, name);
    }
    // Each request reached exactly one peer, and no peer's record changed.
    await waitFor(async () => await peerJobsServed() === servedBefore + cases.length, 5_000);
    t.is(await peerJobsServed(), servedBefore + cases.length);
    t.deepEqual(await peerRequests(), before);
});

test.serial('a request sent the moment a new peer appears is served by it, not refused while its announcement catches up', async (t) => {
    const fixture = await createDataDirWithDemoModel({layers: 1, width: 64, headCount: 4, feedForwardLength: 64});
    cleanups.push(fixture.cleanup);
    await rename(join(fixture.dataDir, 'models', 'demo.gguf'), join(fixture.dataDir, 'models', 'fresh.gguf'));
    const starting = startSwarmDaemon(bootstrap, fixture.dataDir, ['--model', 'fresh']);
    t.teardown(async () => {
        await (await starting).stop();
        await providersReady();
    });
    const announced = async () => (await peersOf(requester.daemon)).peers.some((peer) => peer.capabilities.models.some((model) => model.id === 'fresh'));
    await waitFor(announced, 60_000, 5);
    const reply = await requester.client.completions.create({model: 'fresh', prompt: 'just in time', max_tokens: 4, temperature: 0});
    t.is(reply.usage!.completion_tokens, 4);
    // The new peer served it (its own log of peer jobs), not one of the others.
    const fresh = await starting;
    await waitFor(async () => (await node(fresh)).peerJobs.served === 1, 10_000);
    t.is((await node(fresh)).peerJobs.served, 1);
});

test.serial('a model no peer holds is a clear 404', async (t) => {
    const error = await t.throwsAsync(requester.client.chat.completions.create({...chatRequest, model: 'nobody-has-this'}), {instanceOf: OpenAI.NotFoundError});
    t.regex(error!.message, /nobody-has-this/);
});

test.serial('a client that disconnects cancels the remote job', async (t) => {
    const controller = new AbortController();
    const stream = await requester.client.completions.create(
        {model: 'demo', prompt: 'cancel me', max_tokens: MAX_JOB_TOKENS, temperature: 0, stream: true}, {signal: controller.signal});
    let chunks = 0;
    try {
        for await (const _chunk of stream)
            if (++chunks === 5)
                controller.abort();
    } catch {
        // the client's own abort
    }
    await waitFor(async () => (await Promise.all(providers.map((provider) => node(provider.daemon)))).every((info) => info.peerJobs.active === 0), 3_000);
    t.pass();
});

test.serial('serving nodes never log prompt or output text', async (t) => {
    const output = (await providers[0]!.client.chat.completions.create(chatRequest)).choices[0]!.message.content!;
    const snippet = output.slice(5, 25);
    for (const provider of providers) {
        const logs = JSON.stringify(provider.daemon.logs);
        t.false(logs.includes(SECRET_PROMPT));
        t.true(snippet.length < 10 || !logs.includes(snippet));
    }
    t.true(providers.some((provider) => provider.daemon.logs.some((record) => record.msg === 'served a peer job')));
});
