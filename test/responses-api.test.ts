import test from 'ava';
import OpenAI from 'openai';
import {demoDaemonForFile} from './helpers/demo-daemon.js';

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

test('text.format json_schema holds; tools and stored conversations are a 400 naming them', async (t) => {
    const schema = {type: 'object', properties: {verdict: {enum: ['yes', 'no']}, score: {type: 'integer', minimum: 1, maximum: 3}}, required: ['verdict', 'score'],
        additionalProperties: false};
    const response = await client().responses.create({model: 'demo', input: 'judge', temperature: 0, max_output_tokens: 100,
        text: {format: {type: 'json_schema', name: 'verdict', schema, strict: true}}});
    if (response.status === 'completed') {
        const value = JSON.parse(response.output_text) as {verdict: string, score: number};
        t.true(['yes', 'no'].includes(value.verdict) && value.score >= 1 && value.score <= 3);
    }
    for (const [body, param] of [
        [{tools: [{type: 'function', name: 'f', parameters: {type: 'object', properties: {}}, strict: true}]}, 'tools'],
        [{previous_response_id: 'resp_x'}, 'previous_response_id']
    ] as const) {
        const error = await t.throwsAsync(client().responses.create({model: 'demo', input, ...body} as OpenAI.Responses.ResponseCreateParamsNonStreaming),
            {instanceOf: OpenAI.BadRequestError});
        t.is((error as InstanceType<typeof OpenAI.BadRequestError>).param, param);
    }
});
