import {setTimeout as sleep} from 'node:timers/promises';
import test from 'ava';
import {getLlama, LlamaChat, LlamaCompletion} from 'node-llama-cpp';
import OpenAI from 'openai';
import type {DaemonHandle} from '../harness/cli-process.js';
import {startDemoDaemon, type DemoDaemon} from '../harness/demo-daemon.js';
import {fetchStatus} from '../harness/node-status.js';

let demo: DemoDaemon;
let daemon: DaemonHandle;
let client: OpenAI;
let modelPath: string;

test.before(async () => {
    demo = await startDemoDaemon();
    ({daemon, client, modelPath} = demo);
});

test.after.always(() => demo?.stop());

test.serial('models: list and retrieve', async (t) => {
    const models = await client.models.list();
    t.deepEqual(models.data.map((model) => model.id), ['demo']);
    const model = await client.models.retrieve('demo');
    t.is(model.id, 'demo');
    t.is(model.object, 'model');
    await t.throwsAsync(client.models.retrieve('nope'), {instanceOf: OpenAI.NotFoundError});
});

test.serial('chat: non-streamed answer with usage and timings', async (t) => {
    const completion = await client.chat.completions.create({
        model: 'demo', messages: [{role: 'user', content: 'Hello doge'}], max_tokens: 12, temperature: 0
    });
    t.is(completion.object, 'chat.completion');
    t.is(completion.choices[0]!.message.role, 'assistant');
    t.true(completion.choices[0]!.message.content!.length > 0);
    t.is(completion.choices[0]!.finish_reason, 'length');
    t.is(completion.usage!.completion_tokens, 12);
    t.true(completion.usage!.prompt_tokens > 3);
    t.is(completion.usage!.total_tokens, completion.usage!.prompt_tokens + 12);
    const timings = (completion as unknown as {timings: Record<string, number>}).timings;
    t.true(timings.predicted_per_second! > 0 && timings.prompt_ms! > 0);
});

test.serial('chat: the stream carries the same text as the non-streamed answer, then usage', async (t) => {
    const request = {model: 'demo', messages: [{role: 'user' as const, content: 'Tell me about peers'}], max_tokens: 16, temperature: 0};
    const whole = await client.chat.completions.create(request);
    const stream = await client.chat.completions.create({...request, stream: true, stream_options: {include_usage: true}});
    let text = '';
    let chunks = 0;
    let finishReason: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined | null;
    for await (const chunk of stream) {
        if (chunks === 0)
            t.is(chunk.choices[0]?.delta.role, 'assistant');
        chunks++;
        text += chunk.choices[0]?.delta.content ?? '';
        finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
        usage = chunk.usage ?? usage;
    }
    t.true(chunks > 2, 'streamed in pieces');
    t.is(text, whole.choices[0]!.message.content ?? '');
    t.is(finishReason, 'length');
    t.is(usage?.completion_tokens, 16);
});

test.serial('completions: streamed and not', async (t) => {
    const whole = await client.completions.create({model: 'demo', prompt: 'Such wow', max_tokens: 10, temperature: 0});
    t.is(whole.object, 'text_completion');
    t.is(whole.usage?.completion_tokens, 10);
    let text = '';
    for await (const chunk of await client.completions.create({model: 'demo', prompt: 'Such wow', max_tokens: 10, temperature: 0, stream: true}))
        text += chunk.choices[0]?.text ?? '';
    t.is(text, whole.choices[0]!.text);
});

test.serial('stop sequences end the text before the stop string', async (t) => {
    const whole = await client.completions.create({model: 'demo', prompt: 'Such wow', max_tokens: 30, temperature: 0});
    const full = whole.choices[0]!.text;
    // Random weights emit raw bytes too: stop on a plain letter well inside the text.
    const stopIndex = full.slice(5).search(/[a-z]/i) + 5;
    t.true(stopIndex >= 5, `no letter in ${JSON.stringify(full)}`);
    const stopAt = full[stopIndex]!;
    const stopped = await client.completions.create({model: 'demo', prompt: 'Such wow', max_tokens: 30, temperature: 0, stop: [stopAt]});
    t.is(stopped.choices[0]!.finish_reason, 'stop');
    t.is(stopped.choices[0]!.text, full.slice(0, full.indexOf(stopAt)));
});

test.serial('seeded sampling at temperature > 0 is reproducible', async (t) => {
    const request = {model: 'demo', prompt: 'Once', max_tokens: 20, temperature: 1.2, seed: 1234};
    const a = await client.completions.create(request);
    const b = await client.completions.create(request);
    t.is(a.choices[0]!.text, b.choices[0]!.text);
});

test.serial('embeddings: one or many inputs, float or base64', async (t) => {
    const single = await client.embeddings.create({model: 'demo', input: 'such embedding', encoding_format: 'float'});
    t.is(single.data.length, 1);
    t.is(single.data[0]!.embedding.length, 256);
    t.true(single.usage.prompt_tokens > 0);
    const many = await client.embeddings.create({model: 'demo', input: ['such embedding', 'very vector'], encoding_format: 'float'});
    t.is(many.data.length, 2);
    t.deepEqual(many.data[0]!.embedding, single.data[0]!.embedding);
    t.notDeepEqual(many.data[1]!.embedding, many.data[0]!.embedding);
    // The openai client asks for base64 by default and decodes it: the vectors must survive that.
    const decoded = await client.embeddings.create({model: 'demo', input: 'such embedding'});
    t.is(decoded.data[0]!.embedding.length, 256);
    decoded.data[0]!.embedding.forEach((value, index) => {
        if (Math.abs(value - single.data[0]!.embedding[index]!) > 1e-6)
            t.fail(`component ${index} differs`);
    });
});

test.serial('JSON schema output parses and validates', async (t) => {
    const completion = await client.chat.completions.create({
        model: 'demo',
        messages: [{role: 'user', content: 'Give me a verdict'}],
        temperature: 0,
        max_tokens: 80,
        response_format: {
            type: 'json_schema',
            json_schema: {
                name: 'verdict',
                schema: {
                    type: 'object',
                    properties: {good: {type: 'boolean'}, stars: {enum: [1, 2, 3, 4, 5]}},
                    required: ['good', 'stars'],
                    additionalProperties: false
                }
            }
        }
    });
    const parsed = JSON.parse(completion.choices[0]!.message.content!);
    t.is(typeof parsed.good, 'boolean');
    t.true([1, 2, 3, 4, 5].includes(parsed.stars));
    t.deepEqual(Object.keys(parsed).sort(), ['good', 'stars']);
});

test.serial('JSON mode returns a JSON object', async (t) => {
    const completion = await client.chat.completions.create({
        model: 'demo', messages: [{role: 'user', content: 'json please'}], temperature: 0, max_tokens: 200,
        response_format: {type: 'json_object'}
    });
    if (completion.choices[0]!.finish_reason === 'stop')
        t.is(typeof JSON.parse(completion.choices[0]!.message.content!), 'object');
    else
        t.regex(completion.choices[0]!.message.content!, /^\s*[{[]/);
});

test.serial('at temperature 0 the proxy says exactly what node-llama-cpp says in-process', async (t) => {
    const llama = await getLlama({gpu: false, build: 'never'});
    const model = await llama.loadModel({modelPath});
    const context = await model.createContext({contextSize: 4096, threads: 1});
    t.teardown(() => model.dispose());
    const settings = {temperature: 0, maxTokens: 24, repeatPenalty: false} as const;

    for (const prompt of ['The doge said', 'Many peers make light work']) {
        const sequence = context.getSequence();
        const direct = await new LlamaCompletion({contextSequence: sequence}).generateCompletion(prompt, settings);
        sequence.dispose();
        const viaProxy = await client.completions.create({model: 'demo', prompt, max_tokens: 24, temperature: 0});
        t.is(viaProxy.choices[0]!.text, direct, prompt);
    }

    const sequence = context.getSequence();
    const chat = new LlamaChat({contextSequence: sequence});
    const direct = await chat.generateResponse([
        {type: 'system', text: 'You are a doge.'}, {type: 'user', text: 'What is a swarm?'}, {type: 'model', response: []}
    ], settings);
    const viaProxy = await client.chat.completions.create({
        model: 'demo', max_tokens: 24, temperature: 0,
        messages: [{role: 'system', content: 'You are a doge.'}, {role: 'user', content: 'What is a swarm?'}]
    });
    t.is(viaProxy.choices[0]!.message.content, direct.response);
});

test.serial('/health is 200 when ready and /api/node describes the node', async (t) => {
    const health = await fetch(`${daemon.origin}/health`);
    t.is(health.status, 200);
    const node = await fetchStatus(daemon, '/api/node'); // the status contract holds
    t.regex(node.id, /^[0-9a-f]{64}$/);
    t.is(node.network, null, 'offline');
    t.regex(node.version, /^\d+\.\d+\.\d+/);
    t.is(node.engine.state, 'ready');
    t.is(node.device?.backend, false);
    t.is(node.models[0]!.id, 'demo');
    t.is(node.models[0]!.layers, 8);
    // `--speculative auto` without a draft model drafts by lookup; the completions above went through it.
    const [demo] = node.models;
    t.like(demo, {speculative: 'lookup', draft: null, speculation: {drafter: 'lookup'}});
    const {passes, tokens, drafted, accepted, acceptance, tokensPerPass} = demo!.speculation!;
    t.true(passes > 0 && tokens >= passes && accepted <= drafted, JSON.stringify(demo!.speculation));
    t.is(tokensPerPass, tokens / passes);
    t.is(acceptance, drafted === 0 ? null : accepted / drafted);
    t.true(node.requests.total >= 0);
    t.true(node.uptimeSeconds >= 0);
});

test.serial('daemon logs are JSON lines and never contain prompt text', async (t) => {
    const secret = 'zebra-secret-prompt-words';
    await client.completions.create({model: 'demo', prompt: secret, max_tokens: 4, temperature: 0});
    await sleep(100);
    t.true(daemon.logs.length > 3);
    t.true(daemon.logs.every((record) => typeof record.level === 'number' && typeof record.msg === 'string'));
    t.false(JSON.stringify(daemon.logs).includes(secret));
    t.true(daemon.logs.some((record) => record.msg === 'request'));
});

test.serial('n choices: generated together, each indexed, seeded choices differ, usage counts the prompt once', async (t) => {
    const request = {model: 'demo', messages: [{role: 'user' as const, content: 'Three wishes'}], temperature: 1, seed: 42, max_tokens: 12};
    const completion = await client.chat.completions.create({...request, n: 3});
    t.deepEqual(completion.choices.map((choice) => choice.index), [0, 1, 2]);
    const single = await client.chat.completions.create(request);
    t.is(completion.usage!.prompt_tokens, single.usage!.prompt_tokens);
    // every choice's tokens are counted: more than one choice's, at most three choices' budgets
    t.true(completion.usage!.completion_tokens > single.usage!.completion_tokens && completion.usage!.completion_tokens <= 36);
    t.true(new Set(completion.choices.map((choice) => choice.message.content)).size > 1, 'seed, seed + 1 and seed + 2 give different choices');

    const texts = ['', '', ''];
    const finished: number[] = [];
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of await client.completions.create({model: 'demo', prompt: 'Three tales', n: 3, max_tokens: 10, temperature: 1, seed: 7,
        stream: true, stream_options: {include_usage: true}})) {
        for (const choice of chunk.choices) {
            texts[choice.index] += choice.text;
            if (choice.finish_reason !== null)
                finished.push(choice.index);
        }
        usage = chunk.usage ?? usage;
    }
    t.deepEqual(finished.sort(), [0, 1, 2]);
    t.true(texts.every((text) => text.length > 0), JSON.stringify(texts));
    t.is(usage!.completion_tokens, 30);
});
