import Anthropic from '@anthropic-ai/sdk';
import test from 'ava';
import {agenticRequest, agenticTools} from '../harness/agentic-request.js';
import {schemaValidator} from '../harness/ajv-validator.js';
import {anthropicClient, greedy, readMessageStream, textOf, type AnthropicApiError as ApiError} from '../harness/anthropic-client.js';
import {waitFor} from '../harness/cli-process.js';
import {demoDaemonForFile, startDemoDaemon} from '../harness/demo-daemon.js';
import {weatherParameters} from '../harness/demo-tool-calls.js';
import {fetchStatus} from '../harness/node-status.js';

/**
 * Anthropic's Messages API through the official @anthropic-ai/sdk, on a daemon serving the demo model whole (README,
 * "Endpoints"); through a peer and a pipeline in remote-inference and sharding.
 */

/** Room for a prompt as long as agentic tools send (harness/agentic-request.ts). */
const CONTEXT = 16_384;
const demo = demoDaemonForFile(['--context-size', String(CONTEXT)], {contextLength: CONTEXT});
const anthropic = () => anthropicClient(demo().daemon.origin);

const system = 'Be brief.';
const question = 'What is a swarm of dogs called?';
const base = {model: 'demo', system, messages: [{role: 'user' as const, content: question}], max_tokens: 20};
const tools: Anthropic.Tool[] = [
    {name: 'get_weather', description: 'The weather in a city', input_schema: weatherParameters as Anthropic.Tool.InputSchema, cache_control: {type: 'ephemeral'}},
    {name: 'get_time', description: 'The time now', input_schema: {type: 'object', properties: {}}}
];

test('a message says what chat completions say for the same greedy conversation, with usage', async (t) => {
    const chat = await demo().client.chat.completions.create({model: 'demo', messages: [{role: 'system', content: system}, {role: 'user', content: question}],
        temperature: 0, max_tokens: 20});
    const message = await anthropic().messages.create(greedy({...base, system: [{type: 'text', text: system, cache_control: {type: 'ephemeral'}}],
        metadata: {user_id: 'someone'}}));
    t.regex(message.id, /^msg_/);
    t.is(message.type, 'message');
    t.is(message.role, 'assistant');
    t.is(message.model, 'demo');
    t.is(textOf(message), chat.choices[0]!.message.content!);
    t.is(message.stop_reason, chat.choices[0]!.finish_reason === 'length' ? 'max_tokens' : 'end_turn');
    t.is(message.usage.input_tokens, chat.usage!.prompt_tokens);
    t.is(message.usage.output_tokens, chat.usage!.completion_tokens);
    const blocks = await anthropic().messages.create(greedy({...base, messages: [{role: 'user', content: [{type: 'text', text: question}]}]}));
    t.is(textOf(blocks), textOf(message));
});

test('streamed, the events arrive in order and the deltas spell the same text', async (t) => {
    const whole = await anthropic().messages.create(greedy(base));
    const {types, text, final} = await readMessageStream(anthropic().messages.stream(greedy(base)));
    t.is(text, textOf(whole));
    t.is(textOf(final), textOf(whole));
    t.is(final.stop_reason, whole.stop_reason);
    t.is(final.usage.output_tokens, whole.usage.output_tokens);
    t.is(final.usage.input_tokens, whole.usage.input_tokens);
    t.is(types[0], 'message_start');
    t.is(types[1], 'content_block_start');
    t.deepEqual(types.slice(-3), ['content_block_stop', 'message_delta', 'message_stop']);
    t.true(types.slice(2, -3).every((type) => type === 'content_block_delta'));
});

test('a stop sequence ends the reply with stop_reason stop_sequence; the budget with max_tokens', async (t) => {
    const whole = await anthropic().messages.create(greedy({...base, max_tokens: 30}));
    const text = textOf(whole);
    // A piece of the greedy reply past its start: the reply stops there.
    const stop = text.slice(Math.floor(text.length / 2)).trim().slice(0, 3);
    t.true(stop.length > 0, `the reply has text to stop at: ${JSON.stringify(text)}`);
    const stopped = await anthropic().messages.create(greedy({...base, max_tokens: 30, stop_sequences: ['never-in-this-reply', stop]}));
    t.is(stopped.stop_reason, 'stop_sequence');
    t.is(stopped.stop_sequence, stop);
    t.true(text.startsWith(textOf(stopped)) && textOf(stopped).length <= text.indexOf(stop), 'the reply ends before the stop sequence');
    const short = await anthropic().messages.create(greedy({...base, max_tokens: 3}));
    t.is(short.stop_reason, 'max_tokens');
    t.is(short.stop_sequence, null);
    t.is(short.usage.output_tokens, 3);
});

test('a tool round trip: the named tool is called with input matching its schema, its result goes back, the answer is text', async (t) => {
    const messages: Anthropic.MessageParam[] = [{role: 'user', content: 'What is the weather in Paris?'}];
    const call = await anthropic().messages.create(greedy({model: 'demo', messages, tools, tool_choice: {type: 'tool', name: 'get_weather'}, max_tokens: 200}));
    t.is(call.stop_reason, 'tool_use');
    const uses = call.content.filter((block) => block.type === 'tool_use');
    t.is(uses.length, 1);
    const [use] = uses;
    t.regex(use!.id, /^toolu_/);
    t.is(use!.name, 'get_weather');
    t.true(schemaValidator(weatherParameters)(use!.input), JSON.stringify(use!.input));

    const streamed = anthropic().messages.stream(greedy({model: 'demo', messages, tools, tool_choice: {type: 'tool', name: 'get_weather'}, max_tokens: 200}));
    const streamedUse = (await streamed.finalMessage()).content.find((block) => block.type === 'tool_use');
    t.deepEqual(streamedUse?.type === 'tool_use' ? streamedUse.input : undefined, use!.input, 'the streamed input_json_delta spells the same input');

    const answer = await anthropic().messages.create(greedy({
        model: 'demo', tools, tool_choice: {type: 'none'}, max_tokens: 20,
        messages: [...messages, {role: 'assistant', content: call.content},
            {role: 'user', content: [{type: 'tool_result', tool_use_id: use!.id, content: [{type: 'text', text: 'Sunny, 21°C'}]}]}]
    }));
    t.true(answer.content.every((block) => block.type === 'text'));
    t.not(answer.stop_reason, 'tool_use');
});

test('tool_choice none: no tool_use blocks; any: a call of one of the tools, its input held to its schema', async (t) => {
    const messages: Anthropic.MessageParam[] = [{role: 'user', content: 'What is the weather in Paris?'}];
    const message = await anthropic().messages.create(greedy({model: 'demo', messages, tools, tool_choice: {type: 'none'}, max_tokens: 30}));
    t.false(message.content.some((block) => block.type === 'tool_use'));
    t.not(message.stop_reason, 'tool_use');
    const any = await anthropic().messages.create(greedy({model: 'demo', messages, tools, tool_choice: {type: 'any', disable_parallel_tool_use: true}, max_tokens: 200}));
    t.is(any.stop_reason, 'tool_use');
    const uses = any.content.filter((block) => block.type === 'tool_use');
    t.is(uses.length, 1);
    const spec = tools.find((tool) => tool.name === uses[0]!.name);
    t.truthy(spec, uses[0]!.name);
    t.true(schemaValidator(spec!.input_schema)(uses[0]!.input), JSON.stringify(uses[0]!.input));
});

test('count_tokens says what the reply\'s usage says, tools included; a prompt beyond the context is counted, and refused for a reply', async (t) => {
    const {system: _system, ...plain} = base;
    for (const body of [base, {...plain, tools}]) {
        const count = await anthropic().messages.countTokens({model: body.model, messages: body.messages, ...('system' in body && {system: body.system}),
            ...('tools' in body && {tools: body.tools})});
        const message = await anthropic().messages.create(greedy(body));
        t.is(count.input_tokens, message.usage.input_tokens);
    }
    const long = {...base, messages: [{role: 'user' as const, content: 'such wow '.repeat(CONTEXT)}]};
    const count = await anthropic().messages.countTokens({model: long.model, system: long.system, messages: long.messages});
    t.true(count.input_tokens > CONTEXT, String(count.input_tokens));
    const refused = await anthropic().messages.create(greedy(long)).catch((error: unknown) => error);
    t.true(refused instanceof Anthropic.BadRequestError);
    t.regex((refused as ApiError).message, new RegExp(`prompt of ${count.input_tokens} tokens does not fit`));
});

test('errors in Anthropic\'s shape: missing max_tokens, unknown model, an image block, thinking, a server tool, a body too large', async (t) => {
    const post = (body: object | string) => fetch(`${demo().daemon.origin}/v1/messages`, {method: 'POST', headers: {'content-type': 'application/json'},
        body: typeof body === 'string' ? body : JSON.stringify(body)});
    const missing = await post({model: 'demo', messages: [{role: 'user', content: 'hi'}]});
    t.is(missing.status, 400);
    t.like(await missing.json(), {type: 'error', error: {type: 'invalid_request_error'}});

    const unknown = await anthropic().messages.create(greedy({...base, model: 'no-such-model'})).catch((error: unknown) => error);
    t.true(unknown instanceof Anthropic.NotFoundError);
    t.like((unknown as ApiError).error, {type: 'error', error: {type: 'not_found_error'}});

    const image = await anthropic().messages.create(greedy({...base, messages: [{role: 'user', content: [
        {type: 'image', source: {type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo='}}]}]})).catch((error: unknown) => error);
    t.true(image instanceof Anthropic.BadRequestError);
    const body = (image as ApiError).error as {error: {type: string, message: string}};
    t.is(body.error.type, 'invalid_request_error');
    t.regex(body.error.message, /image/);

    for (const [name, request] of [
        ['thinking', {...base, thinking: {type: 'enabled', budget_tokens: 1024}}],
        ['web_search', {...base, tools: [{type: 'web_search_20250305', name: 'web_search'}]}],
        ['document', {...base, messages: [{role: 'user', content: [{type: 'document', source: {type: 'text', media_type: 'text/plain', data: 'x'}}]}]}]
    ] as const) {
        const refused = await post(request);
        t.is(refused.status, 400, name);
        t.regex(((await refused.json()) as {error: {message: string}}).error.message, new RegExp(name, 'i'));
    }

    const huge = await post(JSON.stringify({...base, messages: [{role: 'user', content: 'x'.repeat(5 * 1024 * 1024)}]}));
    t.is(huge.status, 413);
    t.like(await huge.json(), {type: 'error', error: {type: 'request_too_large'}});
});

test('a request shaped like an agentic coding tool\'s (long system prompt, a dozen tools, cache_control, metadata, beta headers) is served', async (t) => {
    const request = greedy(agenticRequest(12, 40));
    const options = {headers: {'anthropic-beta': 'claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14'}};
    const count = await anthropic().messages.countTokens({model: request.model, system: request.system, tools: request.tools, messages: request.messages}, options);
    t.true(count.input_tokens > 1000, `a long prompt: ${count.input_tokens} tokens`);
    const {types, final} = await readMessageStream(anthropic().messages.stream(request, options));
    t.is(types[0], 'message_start');
    t.deepEqual(types.slice(-2), ['message_delta', 'message_stop']);
    t.is(final.usage.input_tokens, count.input_tokens);
    t.true(['end_turn', 'max_tokens', 'tool_use'].includes(final.stop_reason!), String(final.stop_reason));
    const whole = await anthropic().messages.create({...request, stream: false}, options) as Anthropic.Message;
    t.deepEqual(whole.content.map((block) => block.type), final.content.map((block) => block.type));
    // Any call the model makes is one of the tools, with input its schema allows.
    for (const block of [...whole.content, ...final.content])
        if (block.type === 'tool_use') {
            const spec = agenticTools.find((candidate) => candidate.name === block.name);
            t.truthy(spec, block.name);
            t.true(schemaValidator(spec!.input_schema)(block.input), JSON.stringify(block.input));
        }
});

test('with --api-key, the key is read from x-api-key or a bearer token; a wrong one is an authentication_error', async (t) => {
    const {daemon: secured, stop} = await startDemoDaemon(['--api-key', 'sekrit-key-123']);
    t.teardown(stop);
    const wrong = await anthropicClient(secured.origin, 'nope').messages.create(greedy({...base, max_tokens: 2})).catch((error: unknown) => error);
    t.true(wrong instanceof Anthropic.AuthenticationError);
    t.like((wrong as ApiError).error, {type: 'error', error: {type: 'authentication_error'}});
    const uncounted = await anthropicClient(secured.origin, 'nope').messages.countTokens(base).catch((error: unknown) => error);
    t.true(uncounted instanceof Anthropic.AuthenticationError);
    const right = await anthropicClient(secured.origin, 'sekrit-key-123').messages.create(greedy({...base, max_tokens: 2}));
    t.is(right.usage.output_tokens, 2);
    const bearer = await new Anthropic({baseURL: secured.origin, apiKey: null, authToken: 'sekrit-key-123', maxRetries: 0}).messages.create(greedy({...base, max_tokens: 2}));
    t.is(bearer.usage.output_tokens, 2);
});

test('one sequence, a queue of one: the next request is a rate_limit_error; a client that aborts frees its sequence; an engine lost mid-answer is overloaded_error', async (t) => {
    // A model that never ends by itself: answers as long as their budget, to interrupt.
    const small = await startDemoDaemon(['--parallel', '1', '--max-queue', '1'], {endsText: false});
    t.teardown(() => small.stop());
    const client = anthropicClient(small.daemon.origin);
    const engine = () => fetchStatus(small.daemon, '/api/node').then((node) => node.engine);
    const long = greedy({...base, max_tokens: 3000});

    const controller = new AbortController();
    const first = client.messages.stream(long, {signal: controller.signal});
    let deltas = 0;
    const aborted = (async () => {
        for await (const event of first)
            if (event.type === 'content_block_delta')
                deltas++;
    })().catch((error: unknown) => error);
    await waitFor(async () => deltas > 0 && (await engine()).running === 1, 10_000, 10);
    const queued = client.messages.create(greedy({...base, max_tokens: 3}));
    await waitFor(async () => (await engine()).queued === 1, 5_000, 10);
    const refused = await client.messages.create(greedy({...base, max_tokens: 3})).catch((error: unknown) => error);
    t.true(refused instanceof Anthropic.RateLimitError, String(refused));
    t.like((refused as ApiError).error, {type: 'error', error: {type: 'rate_limit_error'}});
    t.is((refused as ApiError).headers?.get('retry-after'), '1');

    controller.abort();
    t.true(await aborted instanceof Error, 'the client\'s own abort ends its stream');
    t.is((await queued).usage.output_tokens, 3, 'the aborted answer\'s sequence went to the queued request');
    await waitFor(async () => (await engine()).running === 0, 5_000, 10);
    // The request log says the client left, after the tokens it was sent.
    const log = small.daemon.logs.filter((record) => record.msg === 'request').map((record) => record.request as {endpoint: string, status: number, completionTokens: number});
    const left = log.find((record) => record.endpoint === '/v1/messages' && record.status === 499);
    t.true(left !== undefined && left.completionTokens > 0 && left.completionTokens < 3000, JSON.stringify(log));

    // The engine dies under a streamed answer: an error event of Anthropic's shape ends it; the node stays up.
    const streamed = await fetch(`${small.daemon.origin}/v1/messages`, {method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify({...long, stream: true})});
    const reader = streamed.body!.getReader();
    await reader.read();
    process.kill((await engine()).pid!, 'SIGKILL');
    let events = '';
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read())
        events += Buffer.from(chunk.value).toString('utf8');
    t.regex(events, /event: error\ndata: \{"type":"error","error":\{"type":"overloaded_error","message":"the engine process was killed/);
    t.false(events.includes('message_stop'));

    // And under an answer not streamed: a 529.
    const before = (await engine()).restarts;
    await waitFor(async () => (await engine()).state === 'ready', 30_000, 50);
    const whole = client.messages.create(long).catch((error: unknown) => error);
    await waitFor(async () => (await engine()).running === 1, 10_000, 10);
    process.kill((await engine()).pid!, 'SIGKILL');
    const lost = await whole;
    t.true(lost instanceof Anthropic.APIError && lost.status === 529, String(lost));
    t.like((lost as ApiError).error, {type: 'error', error: {type: 'overloaded_error'}});
    await waitFor(async () => (await engine()).restarts === before + 1, 30_000, 50);
    t.is(small.daemon.process.exitCode, null);
});
