import test from 'ava';
import {Ollama} from 'ollama';
import {buildDemoVocab} from '../engine/demo/demo-vocab.js';
import {schemaValidator} from '../harness/ajv-validator.js';
import {byteTokenBan} from '../harness/byte-token-ban.js';
import {demoDaemonForFile} from '../harness/demo-daemon.js';

/** The Ollama API on strongdoge's port, through the official `ollama` JavaScript library (docs/architecture.md, "Ollama API"). */

const demo = demoDaemonForFile();
const openai = () => demo().client;
const ollama = () => new Ollama({host: demo().daemon.origin});

const messages = [{role: 'user' as const, content: 'What is a swarm of dogs called?'}];

test('tags, show, ps and version describe the served model as Ollama names it', async (t) => {
    const {models} = await ollama().list();
    t.deepEqual(models.map((model) => model.name), ['demo:latest']);
    t.true(models[0]!.size > 0);
    t.is(models[0]!.details.format, 'gguf');
    for (const name of ['demo', 'demo:latest']) {
        const shown = await ollama().show({model: name});
        t.is(shown.details.format, 'gguf');
        t.true(shown.capabilities.includes('completion'));
    }
    const running = await ollama().ps();
    t.deepEqual(running.models.map((model) => model.name), ['demo:latest']);
    t.regex((await ollama().version()).version, /^\d+\.\d+\.\d+/);
});

test('chat, streamed and not, says what the OpenAI API says for the same request', async (t) => {
    const expected = await openai().chat.completions.create({model: 'demo', messages, temperature: 0, max_tokens: 24});
    const whole = await ollama().chat({model: 'demo:latest', messages, stream: false, options: {temperature: 0, num_predict: 24}});
    t.is(whole.message.content, expected.choices[0]!.message.content!);
    t.is(whole.message.role, 'assistant');
    t.true(whole.done);
    t.is(whole.done_reason, 'length');
    t.is(whole.eval_count, 24);
    t.is(whole.prompt_eval_count, expected.usage!.prompt_tokens);
    t.true(whole.eval_duration > 0 && whole.total_duration >= whole.eval_duration, 'durations in nanoseconds');

    let streamed = '';
    let chunks = 0;
    let last: {done: boolean, eval_count?: number} | undefined;
    for await (const part of await ollama().chat({model: 'demo', messages, stream: true, options: {temperature: 0, num_predict: 24}})) {
        streamed += part.message.content;
        chunks++;
        last = part;
    }
    t.is(streamed, whole.message.content);
    t.true(chunks > 2, 'streamed in pieces');
    t.like(last, {done: true, eval_count: 24});
});

test('generate applies the chat template unless raw; raw generate is a plain completion', async (t) => {
    const templated = await ollama().generate({model: 'demo', prompt: messages[0]!.content, stream: false, options: {temperature: 0, num_predict: 16}});
    const chat = await ollama().chat({model: 'demo', messages, stream: false, options: {temperature: 0, num_predict: 16}});
    t.is(templated.response, chat.message.content);
    const raw = await ollama().generate({model: 'demo', prompt: 'Once upon a time', raw: true, stream: false, options: {temperature: 0, num_predict: 16, stop: ['\n\n']}});
    const completion = await openai().completions.create({model: 'demo', prompt: 'Once upon a time', temperature: 0, max_tokens: 16, stop: ['\n\n']});
    t.is(raw.response, completion.choices[0]!.text);
    let streamed = '';
    for await (const part of await ollama().generate({model: 'demo', prompt: 'Once upon a time', raw: true, stream: true, options: {temperature: 0, num_predict: 16, stop: ['\n\n']}}))
        streamed += part.response;
    t.is(streamed, raw.response!);
    const loaded = await ollama().generate({model: 'demo', prompt: '', stream: false});
    t.like(loaded, {done: true, done_reason: 'load', response: ''});
});

test('format: json gives JSON, a schema gives an instance of it', async (t) => {
    const schema = {type: 'object', properties: {mood: {enum: ['happy', 'sad']}, level: {type: 'integer', minimum: 1, maximum: 5}}, required: ['mood', 'level']};
    const validate = schemaValidator(schema);
    for (const seed of [1, 2, 3]) {
        const reply = await ollama().chat({model: 'demo', messages, stream: false, format: schema, options: {temperature: 1, seed, num_predict: 200}});
        if (reply.done_reason === 'stop')
            t.true(validate(JSON.parse(reply.message.content)), reply.message.content);
    }
    const json = await ollama().generate({model: 'demo', prompt: 'json', format: 'json', stream: false, options: {temperature: 0, num_predict: 300}});
    if (json.done_reason === 'stop')
        t.is(typeof JSON.parse(json.response!), 'object');
    else
        t.regex(json.response!, /^\s*[[{]/);
});

test('embed and embeddings give the vectors the OpenAI API gives', async (t) => {
    const expected = await openai().embeddings.create({model: 'demo', input: ['such embedding', 'very vector'], encoding_format: 'float'});
    const embedded = await ollama().embed({model: 'demo', input: ['such embedding', 'very vector']});
    t.deepEqual(embedded.embeddings, expected.data.map((item) => item.embedding));
    t.true(embedded.prompt_eval_count! > 0);
    const single = await ollama().embeddings({model: 'demo:latest', prompt: 'such embedding'});
    t.deepEqual(single.embedding, expected.data[0]!.embedding);
});

test('errors take Ollama\'s shape and status: an unknown model is a 404, what is not supported a 400', async (t) => {
    const missing = await t.throwsAsync(ollama().chat({model: 'llama3:8b', messages, stream: false}));
    t.is((missing as Error & {status_code?: number}).status_code, 404);
    t.regex(missing!.message, /llama3:8b/);
    const images = await t.throwsAsync(ollama().chat({model: 'demo', messages: [{...messages[0]!, images: ['aGk=']}], stream: false}));
    t.is((images as Error & {status_code?: number}).status_code, 400);
    const badSchema = await t.throwsAsync(ollama().chat({model: 'demo', messages, stream: false,
        tools: [{type: 'function', function: {name: 'f', description: 'd', parameters: {type: 'object', properties: {a: {type: 'string', pattern: 'x'} as {type: string}}}}}]}));
    t.is((badSchema as Error & {status_code?: number}).status_code, 400);
    t.regex(badSchema!.message, /pattern/);
    const response = await fetch(`${demo().daemon.origin}/api/chat`, {method: 'POST', body: '{"model": '});
    t.is(response.status, 400);
    t.deepEqual(Object.keys(await response.json() as object), ['error']);
});

const weather = {
    type: 'function',
    function: {
        name: 'get_weather',
        description: 'The weather in a city',
        parameters: {type: 'object', properties: {city: {type: 'string', maxLength: 12}, days: {type: 'integer', minimum: 1, maximum: 7}}, required: ['city', 'days']}
    }
};
/** The demo model never starts a call by itself; this bias (a strongdoge option, as llama-server has it) makes it. */
const startCall = {logit_bias: {...byteTokenBan(), [buildDemoVocab().tokens.indexOf('<tool_call>')]: 30}, temperature: 0, num_predict: 200};

test('tools: calls come back as Ollama writes them (arguments an object), streamed and not; a tool message answers them', async (t) => {
    const whole = await ollama().chat({model: 'demo', messages, tools: [weather], options: startCall, stream: false});
    const calls = whole.message.tool_calls ?? [];
    t.true(calls.length >= 1);
    const validate = schemaValidator(weather.function.parameters);
    for (const call of calls) {
        t.is(call.function.name, 'get_weather');
        t.is(typeof call.function.arguments, 'object');
        t.true(validate(call.function.arguments), JSON.stringify(call.function.arguments));
    }
    t.is(whole.done_reason, 'stop');

    const streamed = [];
    for await (const part of await ollama().chat({model: 'demo', messages, tools: [weather], options: startCall, stream: true}))
        streamed.push(...part.message.tool_calls ?? []);
    t.deepEqual(streamed, calls);

    // The call and its result go back: the model answers in text, with both in its prompt.
    const history = [...messages, {role: 'assistant', content: '', tool_calls: calls}, {role: 'tool', content: '{"sky": "clear"}', tool_name: 'get_weather'}];
    const answer = await ollama().chat({model: 'demo', messages: history, tools: [weather], options: {temperature: 0, num_predict: 8}, stream: false});
    t.is(answer.message.tool_calls, undefined);
    t.true(answer.message.content.length > 0);
    t.true(answer.prompt_eval_count > whole.prompt_eval_count);
    // A result with no call to answer is the client's mistake.
    const orphan = await t.throwsAsync(ollama().chat({model: 'demo', messages: [...messages, {role: 'tool', content: '1'}], stream: false}));
    t.is((orphan as Error & {status_code?: number}).status_code, 400);
});
