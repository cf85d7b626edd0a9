import test from 'ava';
import OpenAI from 'openai';
import type {ChatCompletionCreateParamsNonStreaming, ChatCompletionMessageParam, ChatCompletionTool} from 'openai/resources/chat/completions';
import {schemaValidator} from '../harness/ajv-validator.js';
import {byteTokenBan} from '../harness/byte-token-ban.js';
import {demoDaemonForFile} from '../harness/demo-daemon.js';
import {moreCallsBias, startCallBias, weatherParameters} from '../harness/demo-tool-calls.js';

/**
 * Tool calling through the OpenAI API with the official client, on the demo model's Qwen-style template: calls are
 * held to each function's schema, streamed as OpenAI streams them, and a tool's result goes back into the chat.
 */

const demo = demoDaemonForFile();
const client = () => demo().client;

const tools: ChatCompletionTool[] = [
    {type: 'function', function: {name: 'get_weather', description: 'The weather in a city', parameters: weatherParameters}},
    {type: 'function', function: {name: 'get_time', description: 'The time now'}}
];
const validators: Record<string, (value: unknown) => boolean> = {
    get_weather: schemaValidator(weatherParameters),
    get_time: schemaValidator({type: 'object', additionalProperties: false})
};
const messages: ChatCompletionMessageParam[] = [{role: 'user', content: 'What is the weather in Paris?'}];
const request = (overrides: Partial<ChatCompletionCreateParamsNonStreaming> = {}): ChatCompletionCreateParamsNonStreaming => ({
    model: 'demo', messages, tools, temperature: 0, max_tokens: 200, logit_bias: byteTokenBan(), ...overrides
});

function assertValidCall(t: import('ava').ExecutionContext, call: {name: string, arguments: string}) {
    const validate = validators[call.name];
    t.truthy(validate, `a call of ${call.name}, which was offered`);
    t.true(validate!(JSON.parse(call.arguments)), `arguments of ${call.name} match its schema: ${call.arguments}`);
}

test('tool_choice required: the reply is a call of an offered function, its arguments an instance of its schema', async (t) => {
    for (const seed of [1, 2, 3]) {
        const completion = await client().chat.completions.create(request({tool_choice: 'required', temperature: 1, seed}));
        const [choice] = completion.choices;
        t.is(choice!.finish_reason, 'tool_calls');
        t.is(choice!.message.content, null);
        const calls = choice!.message.tool_calls ?? [];
        t.true(calls.length >= 1);
        for (const call of calls) {
            t.is(call.type, 'function');
            t.regex(call.id, /^call_[0-9a-f]{24}$/);
            if (call.type === 'function')
                assertValidCall(t, call.function);
        }
    }
});

test('a named function is the one called, once', async (t) => {
    const completion = await client().chat.completions.create(request({tool_choice: {type: 'function', function: {name: 'get_time'}}}));
    const calls = completion.choices[0]!.message.tool_calls ?? [];
    t.is(calls.length, 1);
    const [call] = calls;
    t.is(call?.type === 'function' ? call.function.name : undefined, 'get_time');
    t.deepEqual(JSON.parse(call?.type === 'function' ? call.function.arguments : 'null'), {});
    t.is(completion.choices[0]!.finish_reason, 'tool_calls');
});

test('tool_choice auto: the model answers in text until it starts a call itself', async (t) => {
    const text = await client().chat.completions.create(request({max_tokens: 40}));
    t.is(text.choices[0]!.message.tool_calls, undefined);
    t.true((text.choices[0]!.message.content ?? '').length > 0);
    t.not(text.choices[0]!.finish_reason, 'tool_calls');

    const called = await client().chat.completions.create(request({logit_bias: startCallBias()}));
    t.is(called.choices[0]!.finish_reason, 'tool_calls');
    const calls = called.choices[0]!.message.tool_calls ?? [];
    t.true(calls.length >= 1);
    for (const call of calls)
        if (call.type === 'function')
            assertValidCall(t, call.function);
});

test('tool_choice none: no call, whatever the model would do', async (t) => {
    const completion = await client().chat.completions.create(request({tool_choice: 'none', logit_bias: startCallBias(), max_tokens: 30}));
    t.is(completion.choices[0]!.message.tool_calls, undefined);
    t.not(completion.choices[0]!.finish_reason, 'tool_calls');
});

test('the tools are in the prompt, as the template lists them', async (t) => {
    const without = await client().chat.completions.create(request({tools: undefined, max_tokens: 1}));
    const withTools = await client().chat.completions.create(request({max_tokens: 1}));
    t.true(withTools.usage!.prompt_tokens > without.usage!.prompt_tokens + 50);
});

test('parallel calls: several whole calls in one turn, streamed one delta each, as the non-streamed reply has them', async (t) => {
    const body = request({tool_choice: 'required', logit_bias: moreCallsBias(), max_tokens: 400});
    const whole = await client().chat.completions.create(body);
    const wholeCalls = (whole.choices[0]!.message.tool_calls ?? []).flatMap((call) => call.type === 'function' ? [call.function] : []);
    t.true(wholeCalls.length >= 2, `${wholeCalls.length} calls`);
    for (const call of wholeCalls)
        assertValidCall(t, call);

    const stream = await client().chat.completions.create({...body, stream: true});
    const streamed: {id: string, name: string, arguments: string}[] = [];
    let finishReason: string | null = null;
    let roleSeen = false;
    for await (const chunk of stream) {
        const [choice] = chunk.choices;
        if (choice === undefined)
            continue;
        roleSeen ||= choice.delta.role === 'assistant';
        for (const delta of choice.delta.tool_calls ?? []) {
            t.is(delta.index, streamed.length, 'calls arrive whole, in order');
            streamed.push({id: delta.id!, name: delta.function!.name!, arguments: delta.function!.arguments!});
        }
        finishReason = choice.finish_reason ?? finishReason;
    }
    t.true(roleSeen);
    t.deepEqual(streamed.map(({name, arguments: args}) => ({name, arguments: args})), wholeCalls);
    t.is(new Set(streamed.map((call) => call.id)).size, streamed.length);
    // The budget ended the turn: the call it cut is not sent.
    t.is(finishReason, whole.choices[0]!.finish_reason);
});

test('parallel_tool_calls false: one call, then the turn ends', async (t) => {
    const completion = await client().chat.completions.create(request({tool_choice: 'required', parallel_tool_calls: false}));
    t.is(completion.choices[0]!.message.tool_calls?.length, 1);
    t.is(completion.choices[0]!.finish_reason, 'tool_calls');
});

test('a full round trip: the call, the tool\'s result, then the model answers with the result in its prompt', async (t) => {
    const first = await client().chat.completions.create(request({tool_choice: 'required', parallel_tool_calls: false}));
    const message = first.choices[0]!.message;
    const [call] = message.tool_calls ?? [];
    t.truthy(call);
    const history: ChatCompletionMessageParam[] = [
        ...messages,
        {role: 'assistant', content: null, tool_calls: message.tool_calls!},
        {role: 'tool', tool_call_id: call!.id, content: JSON.stringify({temperature: 21, sky: 'clear'})}
    ];
    const answer = await client().chat.completions.create(request({messages: history, max_tokens: 20}));
    t.is(answer.choices[0]!.finish_reason, 'length');
    t.true((answer.choices[0]!.message.content ?? '').length > 0);
    // The call and the result are in the prompt.
    const shorter = await client().chat.completions.create(request({max_tokens: 1}));
    t.true(answer.usage!.prompt_tokens > shorter.usage!.prompt_tokens + 20);
    const longerResult = await client().chat.completions.create(request({
        messages: [...history.slice(0, 2), {role: 'tool', tool_call_id: call!.id, content: JSON.stringify({temperature: 21, sky: 'clear', wind: 'a light breeze from the west'})}],
        max_tokens: 1
    }));
    t.true(longerResult.usage!.prompt_tokens > answer.usage!.prompt_tokens);
});

test('a client\'s mistakes with tools are 400s that name the parameter', async (t) => {
    const cases: [Partial<ChatCompletionCreateParamsNonStreaming>, string, RegExp][] = [
        [{tool_choice: {type: 'function', function: {name: 'nope'}}}, 'tool_choice', /not among the tools/],
        [{tools: undefined, tool_choice: 'required'}, 'tool_choice', /no tools/],
        [{tools: [tools[0]!, tools[0]!]}, 'tools.1.function.name', /two tools/],
        [{tools: [{type: 'function', function: {name: 'bad name'}}]}, 'tools.0.function.name', /letters, digits/],
        [{tools: [{type: 'function', function: {name: 'f', parameters: {type: 'object', properties: {a: {type: 'string', pattern: 'x+'}}}}}]},
            'tools.0.function.parameters', /pattern/],
        [{tools: [{type: 'function', function: {name: 'f', parameters: {type: 'string'}}}]}, 'tools.0.function.parameters', /type 'object'/],
        [{messages: [...messages, {role: 'tool', tool_call_id: 'call_x', content: '1'}]}, 'messages.1.tool_call_id', /answer a tool call/],
        [{messages: [...messages, {role: 'assistant', content: null, tool_calls: [{id: 'c', type: 'function', function: {name: 'get_time', arguments: '{'}}]}]},
            'messages.1.tool_calls.0.function.arguments', /not JSON/]
    ];
    for (const [overrides, param, message] of cases) {
        const error = await t.throwsAsync(client().chat.completions.create(request(overrides)), {instanceOf: OpenAI.BadRequestError});
        t.is(error?.param, param);
        t.regex(error?.message ?? '', message);
    }
});
