import test from 'ava';
import type {GenerationRequest} from '../core/inference-types.js';
import {
    embeddingTokenBound, PER_INPUT_OVERHEAD_TOKENS, PER_MESSAGE_OVERHEAD_TOKENS, promptTokenBound, TEMPLATE_OVERHEAD_TOKENS
} from '../inference/remote/jobs/receipt-claims.js';

/** What a requester bounds on its own about a peer's prompt count (docs/architecture.md, "Receipts"). */

const sampling = {temperature: 0, stop: [], responseFormat: {type: 'text' as const}};

test('a completion: its UTF-8 bytes (not characters), the template\'s overhead, and the tokens of a continuation', (t) => {
    const request: GenerationRequest = {kind: 'completion', model: 'm', prompt: 'dogé 🐕', sampling};
    t.is(promptTokenBound(request), Buffer.byteLength('dogé 🐕') + TEMPLATE_OVERHEAD_TOKENS);
    t.is(Buffer.byteLength('dogé 🐕'), 10, 'bytes, not the 6 characters');
    t.is(promptTokenBound({...request, continuation: {tokens: [1, 2, 3]}}), 10 + TEMPLATE_OVERHEAD_TOKENS + 3);
});

test('a chat: each message\'s bytes and its overhead, the calls it carries, and twice the tools as indented JSON', (t) => {
    const tools = [{name: 'get_weather', description: 'The weather', parameters: {type: 'object', properties: {city: {type: 'string'}}}}];
    const request: GenerationRequest = {
        kind: 'chat', model: 'm', sampling,
        messages: [
            {role: 'system', content: 'Be brief.'},
            {role: 'assistant', content: '', toolCalls: [{id: 'call_1', name: 'get_weather', arguments: '{"city":"Paris"}'}]},
            {role: 'tool', content: 'Sunny', toolCallId: 'call_1'}
        ],
        tools: {tools, choice: 'auto', parallel: true}
    };
    const expected = (9 + PER_MESSAGE_OVERHEAD_TOKENS) + (0 + PER_MESSAGE_OVERHEAD_TOKENS + 11 + 16 + PER_MESSAGE_OVERHEAD_TOKENS)
        + (5 + PER_MESSAGE_OVERHEAD_TOKENS) + 2 * Buffer.byteLength(JSON.stringify(tools, null, 4)) + TEMPLATE_OVERHEAD_TOKENS;
    t.is(promptTokenBound(request), expected);
    const {tools: _tools, ...plain} = request;
    t.is(promptTokenBound(plain), expected - 2 * Buffer.byteLength(JSON.stringify(tools, null, 4)));
});

test('the bound stops the claims that matter: a million tokens for a short prompt is far beyond it', (t) => {
    const request: GenerationRequest = {kind: 'chat', model: 'm', sampling, messages: [{role: 'user', content: 'hi'}]};
    t.true(promptTokenBound(request) < 5_000);
    t.true(promptTokenBound(request) < 2 ** 20);
});

test('embeddings: each input\'s bytes and its overhead', (t) => {
    t.is(embeddingTokenBound(['one', 'twö']), 3 + PER_INPUT_OVERHEAD_TOKENS + 4 + PER_INPUT_OVERHEAD_TOKENS);
    t.is(embeddingTokenBound([]), 0);
});
