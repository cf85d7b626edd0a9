import test from 'ava';
import OpenAI from 'openai';
import {demoDaemonForFile} from '../harness/demo-daemon.js';

/**
 * logprobs as OpenAI shapes them, with the official client: chat's `logprobs`/`top_logprobs` and completions'
 * `logprobs: n`, streamed and not. At temperature 0 a token's distribution is the model's own, and the greedy
 * token is the likeliest.
 */

const demo = demoDaemonForFile();
const client = () => demo().client;
const messages = [{role: 'user' as const, content: 'What does a doge say?'}];

test('chat: one entry per token that spells the text; the greedy token is the likeliest of its alternatives', async (t) => {
    const completion = await client().chat.completions.create({model: 'demo', messages, temperature: 0, max_tokens: 24, logprobs: true, top_logprobs: 5});
    const [choice] = completion.choices;
    const content = choice!.logprobs!.content!;
    t.is(content.length, completion.usage!.completion_tokens);
    t.is(content.map((entry) => entry.token).join(''), choice!.message.content ?? '');
    for (const entry of content) {
        t.true(entry.logprob <= 0 && Number.isFinite(entry.logprob));
        t.true(entry.top_logprobs.length >= 1 && entry.top_logprobs.length <= 5);
        const logprobs = entry.top_logprobs.map((alternative) => alternative.logprob);
        t.deepEqual(logprobs, [...logprobs].sort((a, b) => b - a), 'likeliest first');
        t.true(logprobs.reduce((sum, logprob) => sum + Math.exp(logprob), 0) <= 1 + 1e-6);
        t.is(entry.logprob, entry.top_logprobs[0]!.logprob, 'greedy: the likeliest token');
        if (!entry.token.includes('\uFFFD'))
            t.is(Buffer.from(entry.bytes!).toString('utf8'), entry.token);
    }

    const none = await client().chat.completions.create({model: 'demo', messages, temperature: 0, max_tokens: 4});
    t.is(none.choices[0]!.logprobs, null);
    const noAlternatives = await client().chat.completions.create({model: 'demo', messages, temperature: 0, max_tokens: 4, logprobs: true});
    t.true(noAlternatives.choices[0]!.logprobs!.content!.every((entry) => entry.top_logprobs.length === 0));
});

test('chat streamed: each chunk carries its tokens\' entries, together those of the reply not streamed', async (t) => {
    const body = {model: 'demo', messages, temperature: 0, max_tokens: 24, logprobs: true, top_logprobs: 3};
    const whole = await client().chat.completions.create(body);
    const streamed: OpenAI.ChatCompletionTokenLogprob[] = [];
    let text = '';
    for await (const chunk of await client().chat.completions.create({...body, stream: true})) {
        const [choice] = chunk.choices;
        text += choice?.delta.content ?? '';
        streamed.push(...choice?.logprobs?.content ?? []);
    }
    t.is(text, whole.choices[0]!.message.content ?? '');
    // The same tokens and alternatives; the numbers as near as two runs' floating point (the second reuses the
    // first's evaluated prompt).
    const tokens = (entries: OpenAI.ChatCompletionTokenLogprob[]) => entries.map((entry) => [entry.token, entry.top_logprobs.map((top) => top.token)]);
    const wholeContent = whole.choices[0]!.logprobs!.content!;
    t.deepEqual(tokens(streamed), tokens(wholeContent));
    const largest = Math.max(...streamed.map((entry, index) => Math.abs(entry.logprob - wholeContent[index]!.logprob)));
    t.log(`largest difference ${largest}`);
    t.true(largest < 0.05);
});

test('completions: tokens, their logprobs, alternatives by text and offsets in the text, streamed and not', async (t) => {
    const body = {model: 'demo', prompt: 'Such wow', temperature: 0, max_tokens: 16, logprobs: 2};
    const whole = await client().completions.create(body);
    const logprobs = whole.choices[0]!.logprobs!;
    t.is(logprobs.tokens!.join(''), whole.choices[0]!.text ?? '');
    t.is(logprobs.tokens!.length, 16);
    t.is(logprobs.token_logprobs!.length, 16);
    let offset = 0;
    for (const [index, token] of logprobs.tokens!.entries()) {
        t.is(logprobs.text_offset![index], offset);
        offset += token.length;
        const alternatives = logprobs.top_logprobs![index]!;
        t.true(Object.keys(alternatives).length >= 1 && Object.keys(alternatives).length <= 2);
        t.is(Math.max(...Object.values(alternatives)), logprobs.token_logprobs![index]!);
    }

    const streamed = {tokens: [] as string[], offsets: [] as number[], logprobs: [] as number[]};
    for await (const chunk of await client().completions.create({...body, stream: true})) {
        const part = chunk.choices[0]?.logprobs;
        streamed.tokens.push(...part?.tokens ?? []);
        streamed.offsets.push(...part?.text_offset ?? []);
        streamed.logprobs.push(...part?.token_logprobs ?? []);
    }
    t.deepEqual({tokens: streamed.tokens, offsets: streamed.offsets}, {tokens: logprobs.tokens, offsets: logprobs.text_offset});
    // As in the chat test: two runs' floating point (a reused prompt, or a batch shared with another test's request).
    const largest = Math.max(...streamed.logprobs.map((logprob, index) => Math.abs(logprob - logprobs.token_logprobs![index]!)));
    t.log(`largest difference ${largest}`);
    t.true(largest < 0.05);
});

test('the text does not change when logprobs are asked for', async (t) => {
    const plain = await client().chat.completions.create({model: 'demo', messages, temperature: 0, max_tokens: 32});
    const withLogprobs = await client().chat.completions.create({model: 'demo', messages, temperature: 0, max_tokens: 32, logprobs: true, top_logprobs: 20});
    t.is(withLogprobs.choices[0]!.message.content, plain.choices[0]!.message.content);
});

test('a client\'s mistakes with logprobs are 400s naming the parameter', async (t) => {
    for (const [body, param] of [
        [{top_logprobs: 3}, 'top_logprobs'],
        [{logprobs: true, top_logprobs: 21}, 'top_logprobs']
    ] as const) {
        const error = await t.throwsAsync(client().chat.completions.create({model: 'demo', messages, max_tokens: 2, ...body}), {instanceOf: OpenAI.BadRequestError});
        t.is(error?.param, param);
    }
    const completion = await t.throwsAsync(client().completions.create({model: 'demo', prompt: 'x', max_tokens: 2, logprobs: 21}), {instanceOf: OpenAI.BadRequestError});
    t.is(completion?.param, 'logprobs');
});
