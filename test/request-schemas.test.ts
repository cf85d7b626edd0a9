import test from 'ava';
import {ApiError} from '../proxy/api-error.js';
import {
    chatCompletionSchema, completionSchema, parseBody, toChatRequest, toCompletionRequest
} from '../proxy/request-schemas.js';

const chat = (body: Record<string, unknown>) => toChatRequest(parseBody(chatCompletionSchema, {model: 'm', messages: [{role: 'user', content: 'hi'}], ...body}));

test('chat: OpenAI sampling names map onto the engine options', (t) => {
    const request = chat({
        temperature: 0, top_p: 0.9, top_k: 40, min_p: 0.05, seed: 7, stop: 'END', max_completion_tokens: 12, max_tokens: 99,
        presence_penalty: 0.5, frequency_penalty: -0.5, logit_bias: {'5': -100}
    });
    t.is(request.kind, 'chat');
    t.like(request.sampling, {
        temperature: 0, topP: 0.9, topK: 40, minP: 0.05, seed: 7, stop: ['END'], maxTokens: 12,
        presencePenalty: 0.5, frequencyPenalty: -0.5, logitBias: {'5': -100}
    });
});

test('chat: defaults follow OpenAI (temperature 1, no limit, text)', (t) => {
    const {sampling} = chat({});
    t.is(sampling.temperature, 1);
    t.is(sampling.maxTokens, undefined);
    t.deepEqual(sampling.stop, []);
    t.deepEqual(sampling.responseFormat, {type: 'text'});
});

test('chat: developer becomes system, text parts are joined, json_schema passes through', (t) => {
    const request = toChatRequest(parseBody(chatCompletionSchema, {
        model: 'm',
        messages: [
            {role: 'developer', content: 'be brief'},
            {role: 'user', content: [{type: 'text', text: 'a'}, {type: 'text', text: 'b'}]},
            {role: 'assistant', content: null}
        ],
        response_format: {type: 'json_schema', json_schema: {name: 'x', schema: {type: 'object'}}}
    }));
    t.deepEqual(request.kind === 'chat' && request.messages, [
        {role: 'system', content: 'be brief'}, {role: 'user', content: 'ab'}, {role: 'assistant', content: ''}
    ]);
    t.deepEqual(request.sampling.responseFormat, {type: 'json_schema', schema: {type: 'object'}, name: 'x'});
});

test('completion: a one-element prompt array is accepted', (t) => {
    const request = toCompletionRequest(parseBody(completionSchema, {model: 'm', prompt: ['once'], max_tokens: 3}));
    t.like(request, {kind: 'completion', prompt: 'once', sampling: {maxTokens: 3}});
});

const rejected: [string, () => unknown, string | null][] = [
    ['n > 16', () => chat({n: 17}), 'n'],
    ['a tool without a function', () => chat({tools: [{type: 'function'}]}), 'tools.0.function'],
    ['legacy functions', () => chat({functions: [{name: 'f'}]}), 'functions'],
    ['image part', () => chat({messages: [{role: 'user', content: [{type: 'image_url', image_url: {url: 'x'}}]}]}), 'messages.0.content.0'],
    ['a tool message answering no call', () => chat({messages: [{role: 'tool', content: 'x', tool_call_id: 'c'}]}), 'messages.0.tool_call_id'],
    ['function role', () => chat({messages: [{role: 'function', content: 'x', name: 'f'}]}), 'messages.0.role'],
    ['temperature > 2', () => chat({temperature: 3}), 'temperature'],
    ['stop type', () => chat({stop: 5}), 'stop'],
    ['not an object', () => parseBody(chatCompletionSchema, [1, 2]), null],
    ['prompt array of two', () => toCompletionRequest(parseBody(completionSchema, {model: 'm', prompt: ['a', 'b']})), 'prompt'],
    ['echo', () => toCompletionRequest(parseBody(completionSchema, {model: 'm', prompt: 'a', echo: true})), 'echo']
];

for (const [name, attempt, param] of rejected) {
    test(`rejected with a 400 naming the parameter: ${name}`, (t) => {
        const error = t.throws(attempt, {instanceOf: ApiError});
        t.is(error?.status, 400);
        t.is(error?.param, param);
    });
}
