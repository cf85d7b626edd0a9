import test from 'ava';
import OpenAI from 'openai';
import {schemaValidator} from '../harness/ajv-validator.js';
import {demoDaemonForFile} from '../harness/demo-daemon.js';

/** OpenAI's Responses API through the official openai client (docs/architecture.md, "Responses API"). */

const demo = demoDaemonForFile();
const client = () => demo().client;

const input = 'What is a swarm of dogs called?';

test('a response says what chat completions say for the same conversation, with usage and an incomplete status at the budget', async (t) => {
    const chat = await client().chat.completions.create({model: 'demo', messages: [{role: 'system', content: 'Be brief.'}, {role: 'user', content: input}],
        temperature: 0, max_tokens: 20});
    const response = await client().responses.create({model: 'demo', instructions: 'Be brief.', input, temperature: 0, max_output_tokens: 20});
    t.is(response.object, 'response');
    t.is(response.output_text, chat.choices[0]!.message.content!);
    t.is(response.status, 'incomplete');
    t.deepEqual(response.incomplete_details, {reason: 'max_output_tokens'});
    t.is(response.usage!.output_tokens, 20);
    t.is(response.usage!.input_tokens, chat.usage!.prompt_tokens);
    const asMessages = await client().responses.create({model: 'demo', input: [{role: 'developer', content: 'Be brief.'},
        {role: 'user', content: [{type: 'input_text', text: input}]}], temperature: 0, max_output_tokens: 20});
    t.is(asMessages.output_text, response.output_text);
});

test('streamed, the typed events arrive in order and the deltas spell the text', async (t) => {
    const whole = await client().responses.create({model: 'demo', input, temperature: 0, max_output_tokens: 16});
    const types: string[] = [];
    let text = '';
    let final: OpenAI.Responses.Response | undefined;
    for await (const event of await client().responses.create({model: 'demo', input, temperature: 0, max_output_tokens: 16, stream: true})) {
        types.push(event.type);
        if (event.type === 'response.output_text.delta')
            text += event.delta;
        if (event.type === 'response.incomplete' || event.type === 'response.completed')
            final = event.response;
    }
    t.is(text, whole.output_text);
    t.deepEqual(types.filter((type) => type !== 'response.output_text.delta'), ['response.created', 'response.in_progress', 'response.output_item.added',
        'response.content_part.added', 'response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.incomplete']);
    t.is(final!.usage!.output_tokens, 16);
});

test('text.format json_schema holds; tools other than functions and stored conversations are a 400 naming them', async (t) => {
    const schema = {type: 'object', properties: {verdict: {enum: ['yes', 'no']}, score: {type: 'integer', minimum: 1, maximum: 3}}, required: ['verdict', 'score'],
        additionalProperties: false};
    const response = await client().responses.create({model: 'demo', input: 'judge', temperature: 0, max_output_tokens: 100,
        text: {format: {type: 'json_schema', name: 'verdict', schema, strict: true}}});
    if (response.status === 'completed') {
        const value = JSON.parse(response.output_text) as {verdict: string, score: number};
        t.true(['yes', 'no'].includes(value.verdict) && value.score >= 1 && value.score <= 3);
    }
    for (const [body, param] of [
        [{tools: [{type: 'web_search_preview'}]}, 'tools.0.type'],
        [{tools: [{type: 'function', name: 'f', parameters: {type: 'object', properties: {s: {type: 'string', pattern: 'a'}}}, strict: false}]},
            'tools.0.function.parameters'],
        [{input: [{type: 'function_call_output', call_id: 'call_x', output: '1'}]}, 'input.0.call_id'],
        [{previous_response_id: 'resp_x'}, 'previous_response_id']
    ] as const) {
        const error = await t.throwsAsync(client().responses.create({model: 'demo', input, ...body} as OpenAI.Responses.ResponseCreateParamsNonStreaming),
            {instanceOf: OpenAI.BadRequestError});
        t.is((error as InstanceType<typeof OpenAI.BadRequestError>).param, param);
    }
});

const weather = {
    type: 'object',
    properties: {city: {enum: ['Paris', 'Rome', 'Oslo']}, days: {type: 'integer', minimum: 1, maximum: 7}},
    required: ['city', 'days'],
    additionalProperties: false
};
const tools: OpenAI.Responses.FunctionTool[] = [{type: 'function', name: 'get_weather', description: 'The weather in a city', parameters: weather, strict: true}];

test('function calls: output items with call ids, streamed as their events, answered by function_call_output', async (t) => {
    const validate = schemaValidator(weather);
    const body = {model: 'demo', input, tools, tool_choice: 'required', parallel_tool_calls: false, temperature: 0, max_output_tokens: 200} as OpenAI.Responses.ResponseCreateParamsNonStreaming;
    const whole = await client().responses.create(body);
    t.is(whole.status, 'completed');
    const calls = whole.output.filter((item) => item.type === 'function_call');
    t.is(calls.length, 1);
    t.is(whole.output.length, 1, 'only the call: no empty message');
    const [call] = calls;
    t.is(call!.name, 'get_weather');
    t.regex(call!.call_id, /^call_/);
    t.true(validate(JSON.parse(call!.arguments)), call!.arguments);

    const types: string[] = [];
    let streamedArguments = '';
    for await (const event of await client().responses.create({...body, stream: true})) {
        types.push(event.type);
        if (event.type === 'response.function_call_arguments.done')
            streamedArguments = event.arguments;
    }
    t.deepEqual(types, ['response.created', 'response.in_progress', 'response.output_item.added', 'response.function_call_arguments.delta',
        'response.function_call_arguments.done', 'response.output_item.done', 'response.completed']);
    t.is(streamedArguments, call!.arguments);

    const answer = await client().responses.create({
        model: 'demo', tools, temperature: 0, max_output_tokens: 8,
        input: [{role: 'user', content: input}, call!, {type: 'function_call_output', call_id: call!.call_id, output: '{"sky": "clear"}'}]
    });
    t.is(answer.output.filter((item) => item.type === 'function_call').length, 0);
    t.true(answer.output_text.length > 0);
    t.true(answer.usage!.input_tokens > whole.usage!.input_tokens);
});
