import Anthropic from '@anthropic-ai/sdk';
import test from 'ava';
import {schemaValidator} from '../harness/ajv-validator.js';
import {demoDaemonForFile, startDemoDaemon} from '../harness/demo-daemon.js';
import {weatherParameters} from '../harness/demo-tool-calls.js';

/** Anthropic's Messages API through the official @anthropic-ai/sdk, on a daemon serving the demo model whole (README, "Endpoints"). */

type ApiError = InstanceType<typeof Anthropic.APIError>;

const demo = demoDaemonForFile();
const anthropic = () => new Anthropic({baseURL: demo().daemon.origin, apiKey: 'x', maxRetries: 0});

/**
 * Greedy sampling, so that replies are deterministic: the API takes `temperature`, which @anthropic-ai/sdk 1.10's
 * types no longer list; the client sends the params as they are.
 */
function greedy<T extends object>(params: T): T {
    return {...params, temperature: 0};
}

const system = 'Be brief.';
const question = 'What is a swarm of dogs called?';
const base = {model: 'demo', system, messages: [{role: 'user' as const, content: question}], max_tokens: 20};
const tools: Anthropic.Tool[] = [
    {name: 'get_weather', description: 'The weather in a city', input_schema: weatherParameters as Anthropic.Tool.InputSchema, cache_control: {type: 'ephemeral'}},
    {name: 'get_time', description: 'The time now', input_schema: {type: 'object', properties: {}}}
];

function textOf(message: Anthropic.Message) {
    return message.content.map((block) => block.type === 'text' ? block.text : '').join('');
}

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
    const stream = anthropic().messages.stream(greedy(base));
    const types: string[] = [];
    let text = '';
    for await (const event of stream) {
        types.push(event.type);
        if (event.type === 'content_block_delta' && event.delta.type === 'text_delta')
            text += event.delta.text;
    }
    const final = await stream.finalMessage();
    t.is(text, textOf(whole));
    t.is(textOf(final), textOf(whole));
    t.is(final.stop_reason, whole.stop_reason);
    t.is(final.usage.output_tokens, whole.usage.output_tokens);
    const order = types.filter((type) => type !== 'ping');
    t.is(order[0], 'message_start');
    t.is(order[1], 'content_block_start');
    t.deepEqual(order.slice(-3), ['content_block_stop', 'message_delta', 'message_stop']);
    t.true(order.slice(2, -3).every((type) => type === 'content_block_delta'));
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

test('tool_choice none: no tool_use blocks', async (t) => {
    const message = await anthropic().messages.create(greedy({model: 'demo', messages: [{role: 'user', content: 'What is the weather in Paris?'}],
        tools, tool_choice: {type: 'none'}, max_tokens: 30}));
    t.false(message.content.some((block) => block.type === 'tool_use'));
    t.not(message.stop_reason, 'tool_use');
});

test('count_tokens says what the reply\'s usage says, tools included', async (t) => {
    const {system: _system, ...plain} = base;
    for (const body of [base, {...plain, tools}]) {
        const count = await anthropic().messages.countTokens({model: body.model, messages: body.messages, ...('system' in body && {system: body.system}),
            ...('tools' in body && {tools: body.tools})});
        const message = await anthropic().messages.create(greedy(body));
        t.is(count.input_tokens, message.usage.input_tokens);
    }
});

test('errors in Anthropic\'s shape: missing max_tokens, unknown model, an image block', async (t) => {
    const post = (body: object) => fetch(`${demo().daemon.origin}/v1/messages`, {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify(body)});
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

    const thinking = await post({...base, thinking: {type: 'enabled', budget_tokens: 1024}});
    t.is(thinking.status, 400);
    t.regex(((await thinking.json()) as {error: {message: string}}).error.message, /thinking/i);
});

test('with --api-key, the key is read from x-api-key; a wrong one is an authentication_error', async (t) => {
    const {daemon: secured, stop} = await startDemoDaemon(['--api-key', 'sekrit-key-123']);
    t.teardown(stop);
    const wrong = await new Anthropic({baseURL: secured.origin, apiKey: 'nope', maxRetries: 0}).messages.create(greedy({...base, max_tokens: 2}))
        .catch((error: unknown) => error);
    t.true(wrong instanceof Anthropic.AuthenticationError);
    t.like((wrong as ApiError).error, {type: 'error', error: {type: 'authentication_error'}});
    const right = await new Anthropic({baseURL: secured.origin, apiKey: 'sekrit-key-123', maxRetries: 0}).messages.create(greedy({...base, max_tokens: 2}));
    t.is(right.usage.output_tokens, 2);
});
