import {once} from 'node:events';
import {connect} from 'node:net';
import {setTimeout as sleep} from 'node:timers/promises';
import test from 'ava';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {startDaemon, type DaemonHandle} from '../harness/cli-process.js';

let daemon: DaemonHandle;
let cleanupDataDir: () => Promise<void>;
const MAX_BODY = 4 * 1024 * 1024;
const CONTEXT_SIZE = 512;

test.before(async () => {
    const fixture = await createDataDirWithDemoModel({layers: 2, width: 64, headCount: 4, feedForwardLength: 64});
    cleanupDataDir = fixture.cleanup;
    daemon = await startDaemon(['--model', 'demo', '--data-dir', fixture.dataDir, '--threads', '1', '--context-size', String(CONTEXT_SIZE)]);
});

test.after.always(async () => {
    await daemon?.stop();
    await cleanupDataDir?.();
});

const chat = (extra: Record<string, unknown>) => ({model: 'demo', messages: [{role: 'user', content: 'hi'}], max_tokens: 2, ...extra});
const completion = (extra: Record<string, unknown>) => ({model: 'demo', prompt: 'hi', max_tokens: 2, ...extra});

interface Case {
    name: string,
    method?: string,
    path: string,
    body?: unknown,
    /** Sent as is instead of JSON-encoding `body`. */
    raw?: string | Buffer,
    headers?: Record<string, string>,
    status: number,
    param?: string | null,
    code?: string
}

const CHAT = '/v1/chat/completions';
const COMPLETIONS = '/v1/completions';
const EMBEDDINGS = '/v1/embeddings';

const cases: Case[] = [
    {name: 'invalid JSON', path: CHAT, raw: '{"model": "demo", "messages": [', status: 400, code: 'invalid_json'},
    {name: 'empty body', path: CHAT, raw: '', status: 400},
    {name: 'JSON array body', path: CHAT, raw: '[1,2,3]', status: 400},
    {name: 'JSON string body', path: CHAT, raw: '"hello"', status: 400},
    {name: 'JSON null body', path: CHAT, raw: 'null', status: 400},
    {name: 'body too large', path: CHAT, raw: JSON.stringify(chat({messages: [{role: 'user', content: 'x'.repeat(MAX_BODY)}]})), status: 413, code: 'request_too_large'},
    {name: 'missing model', path: CHAT, body: {messages: [{role: 'user', content: 'hi'}]}, status: 400, param: 'model'},
    {name: 'model is a number', path: CHAT, body: chat({model: 42}), status: 400, param: 'model'},
    {name: 'unknown model', path: CHAT, body: chat({model: 'gpt-9'}), status: 404, param: 'model', code: 'model_not_found'},
    {name: 'messages missing', path: CHAT, body: {model: 'demo'}, status: 400, param: 'messages'},
    {name: 'messages empty', path: CHAT, body: chat({messages: []}), status: 400, param: 'messages'},
    {name: 'messages not an array', path: CHAT, body: chat({messages: 'hi'}), status: 400, param: 'messages'},
    {name: 'message without role', path: CHAT, body: chat({messages: [{content: 'hi'}]}), status: 400, param: 'messages.0.role'},
    {name: 'unknown role', path: CHAT, body: chat({messages: [{role: 'wizard', content: 'hi'}]}), status: 400, param: 'messages.0.role'},
    {name: 'content is a number', path: CHAT, body: chat({messages: [{role: 'user', content: 5}]}), status: 400, param: 'messages.0.content'},
    {name: 'image content part', path: CHAT, body: chat({messages: [{role: 'user', content: [{type: 'image_url', image_url: {url: 'http://127.0.0.1/x.png'}}]}]}), status: 400, param: 'messages.0.content.0'},
    {name: 'temperature is a string', path: CHAT, body: chat({temperature: 'hot'}), status: 400, param: 'temperature'},
    {name: 'temperature negative', path: CHAT, body: chat({temperature: -1}), status: 400, param: 'temperature'},
    {name: 'top_p above 1', path: CHAT, body: chat({top_p: 1.5}), status: 400, param: 'top_p'},
    {name: 'max_tokens zero', path: CHAT, body: chat({max_tokens: 0}), status: 400, param: 'max_tokens'},
    {name: 'max_tokens fractional', path: CHAT, body: chat({max_tokens: 2.5}), status: 400, param: 'max_tokens'},
    {name: 'n = 17', path: CHAT, body: chat({n: 17}), status: 400, param: 'n', code: 'invalid_value'},
    {name: 'stream not boolean', path: CHAT, body: chat({stream: 'yes'}), status: 400, param: 'stream'},
    {name: 'stop list too long', path: CHAT, body: chat({stop: Array.from({length: 40}, (_, i) => `s${i}`)}), status: 400, param: 'stop'},
    {name: 'presence_penalty out of range', path: CHAT, body: chat({presence_penalty: 9}), status: 400, param: 'presence_penalty'},
    {name: 'logit_bias key not a token id', path: CHAT, body: chat({logit_bias: {abc: 1}}), status: 400},
    {name: 'logit_bias token outside the vocabulary', path: CHAT, body: chat({logit_bias: {'999999': -100}}), status: 400, code: 'invalid_request'},
    {name: 'response_format unknown type', path: CHAT, body: chat({response_format: {type: 'xml'}}), status: 400, param: 'response_format.type'},
    {name: 'json_schema without schema', path: CHAT, body: chat({response_format: {type: 'json_schema', json_schema: {name: 'x'}}}), status: 400},
    {name: 'a tool chosen that is not offered', path: CHAT, body: chat({tools: [{type: 'function', function: {name: 'f'}}], tool_choice: {type: 'function', function: {name: 'g'}}}),
        status: 400, param: 'tool_choice'},
    {name: 'top_logprobs without logprobs', path: CHAT, body: chat({top_logprobs: 2}), status: 400, param: 'top_logprobs'},
    {name: 'tool role message', path: CHAT, body: chat({messages: [{role: 'tool', content: 'x', tool_call_id: '1'}]}), status: 400},
    {name: 'prompt too long for the context', path: COMPLETIONS, body: completion({prompt: 'wow such '.repeat(3000)}), status: 400, code: 'context_length_exceeded'},
    {name: 'completion without prompt', path: COMPLETIONS, body: {model: 'demo'}, status: 400, param: 'prompt'},
    {name: 'completion prompt of tokens', path: COMPLETIONS, body: completion({prompt: [1, 2, 3]}), status: 400, param: 'prompt'},
    {name: 'completion with two prompts', path: COMPLETIONS, body: completion({prompt: ['a', 'b']}), status: 400, param: 'prompt'},
    {name: 'completion echo', path: COMPLETIONS, body: completion({echo: true}), status: 400, param: 'echo'},
    {name: 'completion best_of 3', path: COMPLETIONS, body: completion({best_of: 3}), status: 400, param: 'best_of'},
    {name: 'embeddings without input', path: EMBEDDINGS, body: {model: 'demo'}, status: 400, param: 'input'},
    {name: 'embeddings empty list', path: EMBEDDINGS, body: {model: 'demo', input: []}, status: 400, param: 'input'},
    {name: 'embeddings bad encoding', path: EMBEDDINGS, body: {model: 'demo', input: 'x', encoding_format: 'hex'}, status: 400, param: 'encoding_format'},
    {name: 'embeddings unknown model', path: EMBEDDINGS, body: {model: 'nope', input: 'x'}, status: 404, code: 'model_not_found'},
    {name: 'embeddings other dimensions', path: EMBEDDINGS, body: {model: 'demo', input: 'x', dimensions: 3}, status: 400, param: 'dimensions'},
    {name: 'unknown endpoint', method: 'GET', path: '/v1/engines', status: 404, code: 'unknown_url'},
    {name: 'GET on a POST endpoint', method: 'GET', path: CHAT, status: 404},
    {name: 'retrieve an unknown model', method: 'GET', path: '/v1/models/nope', status: 404, code: 'model_not_found'},
    {name: 'unsupported charset', path: CHAT, raw: JSON.stringify(chat({})), headers: {'content-type': 'application/json; charset=koi8-r'}, status: 415},
    {name: 'binary garbage', path: CHAT, raw: Buffer.from([0xff, 0xfe, 0x00, 0x81, 0x7b]), status: 400},
    ...['gzip', 'deflate', 'br'].map((encoding): Case => ({
        name: `a body that is not ${encoding}`, path: CHAT, raw: JSON.stringify(chat({})), headers: {'content-encoding': encoding}, status: 400, code: 'malformed_request'
    })),
    {name: 'more embedding inputs than OpenAI allows', path: EMBEDDINGS, body: {model: 'demo', input: Array.from({length: 2049}, () => 'x')}, status: 400, param: 'input'},
    // Each input fits the context; together they would hold the embedding engine for long.
    {name: 'embedding inputs of too many tokens in all', path: EMBEDDINGS, status: 400, param: 'input', code: 'invalid_request',
        body: {model: 'demo', input: Array.from({length: 48}, () => 'wow such '.repeat(150))}},
    {name: 'a path that is not percent-encoding', method: 'GET', path: '/v1/models/%E0%A4%A', status: 400, code: 'malformed_request'},
    ...[65, 1_000, 10_000].map((depth): Case => ({
        name: `a json_schema nested ${depth} deep`, path: CHAT, status: 400, param: 'response_format', code: 'request_too_complex',
        raw: JSON.stringify(chat({response_format: {type: 'json_schema', json_schema: {name: 'deep', schema: '@'}}})).replace('"@"', nestedSchema(depth))
    })),
    {name: 'a json_schema over 256 KiB', path: CHAT, status: 400, param: 'response_format', code: 'request_too_complex',
        body: chat({response_format: {type: 'json_schema', json_schema: {name: 'wide', schema: {type: 'object', properties: Object.fromEntries(
            Array.from({length: 12_000}, (_, index) => [`property_${index}`, {type: 'string'}]))}}}})}
];

/** `{"type": "string"}` wrapped `depth` times in objects that require it, as JSON text (too deep for JSON.stringify). */
function nestedSchema(depth: number) {
    const wrappers = depth - 1;
    return '{"type":"object","required":["a"],"properties":{"a":'.repeat(wrappers) + '{"type":"string"}' + '}}'.repeat(wrappers);
}

async function send(testCase: Case) {
    const body = testCase.raw ?? (testCase.body === undefined ? undefined : JSON.stringify(testCase.body));
    return fetch(daemon.origin + testCase.path, {
        method: testCase.method ?? 'POST',
        headers: {'content-type': 'application/json', ...testCase.headers},
        ...(body !== undefined && {body})
    });
}

test(`at least 30 hostile requests (${cases.length})`, (t) => {
    t.true(cases.length >= 30);
});

for (const testCase of cases) {
    test(`${testCase.status} for ${testCase.name}`, async (t) => {
        const response = await send(testCase);
        t.is(response.status, testCase.status);
        t.regex(response.headers.get('content-type') ?? '', /application\/json/);
        const body = await response.json() as {error: {message: string, type: string, param: string | null, code: string | null}};
        t.is(typeof body.error.message, 'string');
        t.true(body.error.message.length > 10);
        t.is(typeof body.error.type, 'string');
        t.true('param' in body.error && 'code' in body.error);
        if (testCase.param !== undefined)
            t.is(body.error.param, testCase.param);
        if (testCase.code !== undefined)
            t.is(body.error.code, testCase.code);
    });
}

test('a form-encoded body is still read as JSON (curl -d without a content type)', async (t) => {
    const response = await fetch(`${daemon.origin}${COMPLETIONS}`, {
        method: 'POST',
        headers: {'content-type': 'application/x-www-form-urlencoded'},
        body: JSON.stringify(completion({temperature: 0}))
    });
    t.is(response.status, 200);
});

test('after every bad request the server still answers correctly, and a stream error arrives as an error event', async (t) => {
    await Promise.all(cases.map(send));
    const response = await fetch(`${daemon.origin}${COMPLETIONS}`, {
        method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify(completion({max_tokens: 4, temperature: 0}))
    });
    t.is(response.status, 200);
    const body = await response.json() as {choices: {text: string}[], usage: {completion_tokens: number}};
    t.is(body.usage.completion_tokens, 4);

    // A stream that fails before its first token gets the error's own status, not a 200 with an error event.
    const stream = await fetch(`${daemon.origin}${COMPLETIONS}`, {
        method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify(completion({prompt: 'wow such '.repeat(3000), stream: true}))
    });
    t.is(stream.status, 400);
    t.like(await stream.json(), {error: {code: 'context_length_exceeded'}});
    t.is((await fetch(`${daemon.origin}/health`)).status, 200);
});

test('a 1 MB model name is echoed neither whole in the error nor in the log', async (t) => {
    const name = `hostile-${'n'.repeat(1024 * 1024)}`;
    const response = await send({name: 'long name', path: CHAT, body: chat({model: name}), status: 404});
    t.is(response.status, 404);
    const body = await response.text();
    t.true(body.length < 1_000, `${body.length} characters`);
    await sleep(100);
    t.false(JSON.stringify(daemon.logs).includes('n'.repeat(100)));
});

/** Sends raw bytes on a fresh connection and returns everything the server answers before it closes. */
async function rawExchange(bytes: string) {
    const socket = connect(Number(new URL(daemon.origin).port), '127.0.0.1');
    await once(socket, 'connect');
    socket.write(bytes);
    let answer = '';
    socket.on('data', (chunk) => answer += chunk);
    await once(socket, 'close');
    return answer;
}

for (const [name, bytes, status] of [
    ['broken chunked encoding', 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n', 400],
    ['a header line without a colon', 'GET /v1/models HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n', 400],
    ['headers over the size limit', `GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(20_000)}\r\n\r\n`, 431]
] as const)
    test(`a request Node's HTTP parser rejects (${name}) still gets a JSON error object`, async (t) => {
        const answer = await rawExchange(bytes);
        t.regex(answer, new RegExp(`^HTTP/1.1 ${status} `));
        const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as {error: {type: string, code: string}};
        t.like(body, {error: {type: 'invalid_request_error', code: 'malformed_request'}});
    });

test('with --api-key, requests need the bearer token', async (t) => {
    const fixture = await createDataDirWithDemoModel({layers: 1, width: 64, headCount: 4, feedForwardLength: 64});
    const secured = await startDaemon(['--model', 'demo', '--data-dir', fixture.dataDir, '--threads', '1', '--api-key', 'sekrit-key-123']);
    t.teardown(async () => {
        await secured.stop();
        await fixture.cleanup();
    });
    const without = await fetch(`${secured.baseUrl}/models`);
    t.is(without.status, 401);
    t.like(await without.json(), {error: {type: 'authentication_error', code: 'invalid_api_key'}});
    const wrong = await fetch(`${secured.baseUrl}/models`, {headers: {authorization: 'Bearer nope'}});
    t.is(wrong.status, 401);
    const right = await fetch(`${secured.baseUrl}/models`, {headers: {authorization: 'Bearer sekrit-key-123'}});
    t.is(right.status, 200);
    const bare = await fetch(`${secured.baseUrl}/models`, {headers: {authorization: 'sekrit-key-123'}});
    t.is(bare.status, 200, 'a bare key in the header is accepted too');
    t.is((await fetch(`${secured.origin}/health`)).status, 200, 'health stays open for monitors');
    t.false(JSON.stringify(secured.logs).includes('sekrit-key-123'), 'the key is never logged');
});

test('without max_tokens a reply stops when the context is full', async (t) => {
    const response = await fetch(`${daemon.origin}${COMPLETIONS}`, {
        method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify({model: 'demo', prompt: 'go on forever', temperature: 0})
    });
    const body = await response.json() as {choices: {finish_reason: string}[], usage: {total_tokens: number}};
    t.is(response.status, 200);
    if (body.choices[0]!.finish_reason === 'length')
        t.is(body.usage.total_tokens, CONTEXT_SIZE);
    else
        t.true(body.usage.total_tokens < CONTEXT_SIZE);
});
