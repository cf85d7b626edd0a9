import type {AIMessageChunk} from '@langchain/core/messages';
import {ChatOpenAI, type ChatOpenAIFields} from '@langchain/openai';
import test, {type ExecutionContext} from 'ava';
import {z} from 'zod';
import {schemaValidator} from '../harness/ajv-validator.js';
import {byteTokenBan} from '../harness/byte-token-ban.js';
import {waitFor} from '../harness/cli-process.js';
import {demoDaemonForFile} from '../harness/demo-daemon.js';
import {fetchStatus} from '../harness/node-status.js';

/**
 * LangChain's ChatOpenAI (@langchain/openai, the chat completions API) against the proxy, as an app would use it:
 * the daemon's /v1 as its base URL and any API key. Its replies are compared with what the endpoint itself answers.
 */

const demo = demoDaemonForFile();

/** ChatOpenAI pointed at the daemon; each test adds its settings (or binds tools to it with `bindTools`). */
const chat = (fields: ChatOpenAIFields = {}) =>
    new ChatOpenAI({model: 'demo', apiKey: 'unused', configuration: {baseURL: demo().daemon.baseUrl}, maxRetries: 0, ...fields});

interface RawCompletion {
    choices: {message: {content: string}, finish_reason: string}[],
    usage: {prompt_tokens: number, completion_tokens: number, total_tokens: number}
}

/** The endpoint's own answer to a chat completion request, with no client library in between. */
async function rawCompletion(body: Record<string, unknown>): Promise<RawCompletion> {
    const response = await fetch(`${demo().daemon.baseUrl}/chat/completions`, {
        method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify({model: 'demo', ...body})
    });
    if (!response.ok)
        throw new Error(`${response.status}: ${await response.text()}`);
    return await response.json() as RawCompletion;
}

const messages = [{role: 'system', content: 'You are a good dog.'}, {role: 'user', content: 'Such wow'}];

test('invoke gets the text, the finish reason and the usage the endpoint answers', async (t) => {
    const reply = await chat({temperature: 0, maxTokens: 12}).invoke(messages);
    const raw = await rawCompletion({messages, temperature: 0, max_tokens: 12});
    t.true(raw.choices[0]!.message.content.length > 0);
    t.is(reply.text, raw.choices[0]!.message.content);
    t.is(reply.response_metadata.finish_reason, raw.choices[0]!.finish_reason);
    t.is(reply.usage_metadata?.input_tokens, raw.usage.prompt_tokens);
    t.is(reply.usage_metadata?.output_tokens, raw.usage.completion_tokens);
    t.is(reply.usage_metadata?.total_tokens, raw.usage.total_tokens);
    t.is(reply.usage_metadata?.output_tokens, 12);
});

test('stream: the chunks add up to the text and the usage of invoke', async (t) => {
    const model = chat({temperature: 0, maxTokens: 12});
    const whole = await model.invoke(messages);
    let streamed: AIMessageChunk | undefined;
    let chunks = 0;
    for await (const chunk of await model.stream(messages)) {
        streamed = streamed ? streamed.concat(chunk) : chunk;
        if (chunk.text.length > 0)
            chunks++;
    }
    t.true(chunks > 1, 'the text came in several chunks');
    t.is(streamed?.text, whole.text);
    t.is(streamed?.response_metadata.finish_reason, whole.response_metadata.finish_reason);
    // ChatOpenAI asks for the usage chunk (stream_options.include_usage) and reports it on the stream.
    t.is(streamed?.usage_metadata?.input_tokens, whole.usage_metadata?.input_tokens);
    t.is(streamed?.usage_metadata?.output_tokens, whole.usage_metadata?.output_tokens);
});

/** A small schema with bounds a grammar must hold to: an integer range, a string length and an enum. */
const boundsSchema = {
    type: 'object',
    properties: {
        count: {type: 'integer', minimum: 0, maximum: 9},
        label: {type: 'string', maxLength: 12},
        mood: {enum: ['happy', 'sad']}
    },
    required: ['count', 'label', 'mood'],
    additionalProperties: false
};
const boundsZod = z.object({count: z.number().int().min(0).max(9), label: z.string().max(12), mood: z.enum(['happy', 'sad'])});

/**
 * `withStructuredOutput` in json_schema mode over a few seeds: every reply that finishes parses, and the object
 * validates with ajv against `jsonSchema`. Byte tokens are banned (random weights string them into malformed UTF-8,
 * whose U+FFFD a grammar cannot count); a reply cut by the token budget is not an object.
 */
async function checkStructuredOutput(t: ExecutionContext, schema: z.ZodType | Record<string, unknown>, jsonSchema: Record<string, unknown>) {
    const validate = schemaValidator(jsonSchema);
    let finished = 0;
    for (const seed of [1, 2, 3]) {
        const model = chat({temperature: 1, maxTokens: 300, logitBias: byteTokenBan(), modelKwargs: {seed}})
            .withStructuredOutput(schema, {method: 'jsonSchema', name: 'dog', includeRaw: true});
        try {
            const {raw, parsed} = await model.invoke('Describe a dog');
            if ((raw.response_metadata as {finish_reason?: string}).finish_reason !== 'stop')
                continue;
            finished++;
            t.deepEqual(parsed, JSON.parse(raw.text), `seed ${seed}: ${raw.text}`);
            t.true(validate(parsed), `seed ${seed}: ${raw.text} — ${JSON.stringify(validate.errors)}`);
        } catch (error) {
            // openai's parse (used for a zod schema) refuses a reply that hit the length limit.
            t.regex((error as Error).message, /length limit/i, (error as Error).message);
        }
    }
    t.true(finished > 0, 'at least one reply finished');
}

test('withStructuredOutput with a JSON Schema: the object holds to its bounds', (t) =>
    checkStructuredOutput(t, boundsSchema, boundsSchema));

// LangChain sends a zod schema converted to draft 2020-12 JSON Schema, with `strict: true`, and parses the reply with
// openai's `chat.completions.parse`.
test('withStructuredOutput with a zod schema: the object holds to its bounds', (t) =>
    checkStructuredOutput(t, boundsZod, z.toJSONSchema(boundsZod)));

// Serial, so that no other test's request runs while the counters are compared.
test.serial('an AbortSignal mid-stream ends the stream with an abort error, cancels the generation, and the daemon goes on', async (t) => {
    const before = (await fetchStatus(demo().daemon, '/api/node')).requests;
    const controller = new AbortController();
    let chunks = 0;
    // The abort error is the signal's DOMException, which is not a native Error to ava: hence `any`.
    await t.throwsAsync(async () => {
        for await (const _chunk of await chat({temperature: 0, maxTokens: 3800}).stream('a very long story', {signal: controller.signal})) {
            if (++chunks === 3)
                controller.abort();
        }
    }, {any: true, name: 'AbortError'});
    t.is(chunks, 3, 'no chunk after the abort');
    // 3800 tokens take seconds at this model's speed; a cancelled job frees its sequence at once.
    await waitFor(async () => (await fetchStatus(demo().daemon, '/api/node')).engine.running === 0, 1_500);
    const after = (await fetchStatus(demo().daemon, '/api/node')).requests;
    t.is(after.cancelled, before.cancelled + 1);
    t.is(after.failed, before.failed, 'a client leaving is not a failure');
    const next = await chat({temperature: 0, maxTokens: 4}).invoke('still there?');
    t.is(next.usage_metadata?.output_tokens, 4);
    t.is(next.response_metadata.finish_reason, 'length');
});

const weather = {
    type: 'object',
    properties: {city: {type: 'string', maxLength: 12}, days: {type: 'integer', minimum: 1, maximum: 7}},
    required: ['city', 'days'],
    additionalProperties: false
};
const weatherTool = {type: 'function' as const, function: {name: 'get_weather', description: 'The weather in a city', parameters: weather}};

test('bindTools: invoke and stream give the same tool calls, their args instances of the schema; a ToolMessage answers them', async (t) => {
    const model = chat({temperature: 0, maxTokens: 200, logitBias: byteTokenBan()}).bindTools([weatherTool], {tool_choice: 'required', parallel_tool_calls: false});
    const reply = await model.invoke(messages);
    t.is(reply.tool_calls?.length, 1);
    const [call] = reply.tool_calls!;
    t.is(call!.name, 'get_weather');
    t.true(schemaValidator(weather)(call!.args), JSON.stringify(call!.args));
    t.is(reply.response_metadata.finish_reason, 'tool_calls');

    let streamed: AIMessageChunk | undefined;
    for await (const chunk of await model.stream(messages))
        streamed = streamed ? streamed.concat(chunk) : chunk;
    t.deepEqual(streamed?.tool_calls?.map(({name, args}) => ({name, args})), [{name: call!.name, args: call!.args}]);

    const {ToolMessage} = await import('@langchain/core/messages');
    const answer = await chat({temperature: 0, maxTokens: 8}).bindTools([weatherTool])
        .invoke([...messages, reply, new ToolMessage({tool_call_id: call!.id!, content: '{"sky": "clear"}'})]);
    t.is(answer.tool_calls?.length ?? 0, 0);
    t.true(answer.text.length > 0);
    t.true(answer.usage_metadata!.input_tokens > reply.usage_metadata!.input_tokens);
});
