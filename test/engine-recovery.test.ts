import {setTimeout as sleep} from 'node:timers/promises';
import test from 'ava';
import OpenAI from 'openai';
import {waitFor, type DaemonHandle} from '../harness/cli-process.js';
import {startDemoDaemon, type DemoDaemon} from '../harness/demo-daemon.js';
import {fetchStatus} from '../harness/node-status.js';

let demo: DemoDaemon;
let daemon: DaemonHandle;
let client: OpenAI;

test.before(async () => {
    demo = await startDemoDaemon(['--parallel', '4']);
    ({daemon, client} = demo);
});

test.after.always(() => demo?.stop());

function nodeInfo() {
    return fetchStatus(daemon, '/api/node');
}

async function streamText(prompt: string, maxTokens: number) {
    return (await streamCompletion(prompt, maxTokens)).text;
}

async function streamCompletion(prompt: string, maxTokens: number) {
    let text = '';
    let finishReason: string | null = null;
    let completionTokens = 0;
    const stream = await client.completions.create({
        model: 'demo', prompt, max_tokens: maxTokens, temperature: 0, stream: true, stream_options: {include_usage: true}
    });
    for await (const chunk of stream) {
        text += chunk.choices[0]?.text ?? '';
        finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
        completionTokens = chunk.usage?.completion_tokens ?? completionTokens;
    }
    return {text, finishReason, completionTokens};
}

test.serial('4 concurrent streaming clients all complete, decoded together, without disturbing later requests', async (t) => {
    const prompts = ['Such wow', 'The doge said', 'Many peers', 'Layers and tokens'];
    const alone: string[] = [];
    for (const prompt of prompts)
        alone.push(await streamText(prompt, 24));

    let peakRunning = 0;
    const watcher = setInterval(async () => {
        peakRunning = Math.max(peakRunning, (await nodeInfo()).engine.running);
    }, 5);
    const together = await Promise.all(prompts.map((prompt) => streamCompletion(prompt, 24)));
    clearInterval(watcher);
    for (const result of together) {
        t.is(result.finishReason, 'length');
        t.is(result.completionTokens, 24);
        t.true(result.text.length > 0);
    }
    t.true(peakRunning > 1, 'the requests shared the context');
    // Batched decoding may round differently in the last bits (see README), so concurrent outputs are not
    // compared with solo ones; a request on its own afterwards must be exactly as before.
    for (const [index, prompt] of prompts.entries())
        t.is(await streamText(prompt, 24), alone[index]!);
});

test.serial('a client that disconnects cancels its generation; it counts as cancelled, with the tokens it was sent', async (t) => {
    const before = (await nodeInfo()).requests;
    const controller = new AbortController();
    const stream = await client.completions.create(
        {model: 'demo', prompt: 'a very long story', max_tokens: 3800, temperature: 0, stream: true},
        {signal: controller.signal}
    );
    let chunks = 0;
    try {
        for await (const _chunk of stream) {
            if (++chunks === 3)
                controller.abort();
        }
    } catch {
        // the openai client may or may not throw on its own abort
    }
    t.true(chunks < 50);
    // 3800 tokens take seconds at this model's speed; a cancelled job frees its sequence at once.
    await waitFor(async () => (await nodeInfo()).engine.running === 0, 1_500);
    const after = (await nodeInfo()).requests;
    t.is(after.active, 0);
    t.is(after.cancelled, before.cancelled + 1);
    t.is(after.failed, before.failed, 'a client leaving is not a failure');
    t.true(after.completionTokens - before.completionTokens >= chunks, `${after.completionTokens - before.completionTokens} tokens counted, ${chunks} chunks read`);
    t.is(await streamText('still fine', 4) === '' ? 'empty' : 'ok', 'ok');
});

test.serial('a killed engine fails in-flight requests cleanly, restarts, and the next request works', async (t) => {
    const before = await nodeInfo();
    const expected = await streamText('after the crash', 6);

    const streamed = fetch(`${daemon.baseUrl}/completions`, {
        method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify({model: 'demo', prompt: 'long one', max_tokens: 3800, temperature: 0, stream: true})
    });
    const whole = client.completions.create({model: 'demo', prompt: 'another long one', max_tokens: 3800, temperature: 0});
    const response = await streamed;
    t.is(response.status, 200);
    const reader = response.body!.getReader();
    await reader.read(); // the stream has started
    process.kill(before.engine.pid!, 'SIGKILL');

    let text = '';
    for (;;) {
        const {done, value} = await reader.read();
        if (done)
            break;
        text += Buffer.from(value).toString('utf8');
    }
    t.regex(text, /data: \{"error":\{"message":"the engine process was killed \(SIGKILL\)/);
    t.true(text.trimEnd().endsWith('data: [DONE]'));
    const error = await t.throwsAsync(whole, {instanceOf: OpenAI.APIError});
    t.is(error?.status, 503);

    t.is(await streamText('after the crash', 6), expected, 'the restarted engine answers as before');
    const after = await nodeInfo();
    t.is(after.engine.restarts, before.engine.restarts + 1);
    t.not(after.engine.pid, before.engine.pid);
    t.is(daemon.process.exitCode, null, 'the node itself never went down');
});

test.serial('a frozen engine is detected by the watchdog and replaced', async (t) => {
    const before = await nodeInfo();
    process.kill(before.engine.pid!, 'SIGSTOP');
    const started = Date.now();
    // Queued behind the frozen engine, this request fails once the watchdog kills it, or is served by the new one.
    const attempt = client.completions.create({model: 'demo', prompt: 'hello', max_tokens: 4, temperature: 0})
        .then(() => 'served', (error: InstanceType<typeof OpenAI.APIError>) => `error ${error.status}`);
    await waitFor(async () => (await nodeInfo()).engine.restarts === before.engine.restarts + 1, 30_000, 200);
    t.true(['served', 'error 503'].includes(await attempt));
    t.true(Date.now() - started < 30_000);
    const ok = await client.completions.create({model: 'demo', prompt: 'hello', max_tokens: 4, temperature: 0});
    t.is(ok.usage?.completion_tokens, 4);
});

test('a full queue answers 429 with Retry-After', async (t) => {
    const smallDemo = await startDemoDaemon(['--parallel', '1', '--max-queue', '1']);
    t.teardown(() => smallDemo.stop());
    const small = smallDemo.daemon;
    const body = JSON.stringify({model: 'demo', prompt: 'busy', max_tokens: 600, temperature: 0});
    const post = () => fetch(`${small.baseUrl}/completions`, {method: 'POST', headers: {'content-type': 'application/json'}, body});
    const running = post();
    await waitFor(async () => (await fetchStatus(small, '/api/node')).engine.running === 1, 5_000, 10);
    const queued = post();
    await waitFor(async () => (await fetchStatus(small, '/api/node')).engine.queued === 1, 5_000, 10);
    const refused = await post();
    t.is(refused.status, 429);
    t.is(refused.headers.get('retry-after'), '1');
    t.like(await refused.json(), {error: {type: 'rate_limit_error', code: 'queue_full'}});
    t.is((await running).status, 200);
    t.is((await queued).status, 200);
});

test.serial('clients that disconnect mid-stream leave their sequences free for the next requests', async (t) => {
    const before = await nodeInfo();
    // As many streams as there are sequences, each dropped by its client a moment after it started.
    await Promise.all(Array.from({length: 4}, async (_, index) => {
        const controller = new AbortController();
        const response = await fetch(`${daemon.baseUrl}/completions`, {
            method: 'POST', headers: {'content-type': 'application/json'}, signal: controller.signal,
            body: JSON.stringify({model: 'demo', prompt: `walk away ${index}`, max_tokens: 2000, temperature: 0, stream: true})
        });
        const reader = response.body!.getReader();
        await reader.read();
        await sleep(300);
        controller.abort();
        await reader.read().catch(() => undefined);
    }));
    // Right away, a full set of new requests: every one must find a sequence.
    const statuses = await Promise.all(Array.from({length: 4}, (_, index) => fetch(`${daemon.baseUrl}/completions`, {
        method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify({model: 'demo', prompt: `next ${index}`, max_tokens: 8, temperature: 0})
    }).then(async (response) => `${response.status} ${response.status === 200 ? '' : await response.text()}`)));
    t.deepEqual(statuses, ['200 ', '200 ', '200 ', '200 ']);
    t.is((await nodeInfo()).engine.pid, before.engine.pid);
});

test('streams beyond the queue are refused with 429 before any stream opens', async (t) => {
    const smallDemo = await startDemoDaemon(['--parallel', '1', '--max-queue', '4']);
    t.teardown(() => smallDemo.stop());
    const body = JSON.stringify({model: 'demo', prompt: 'crowd', max_tokens: 64, temperature: 0, stream: true});
    const responses = await Promise.all(Array.from({length: 200}, () =>
        fetch(`${smallDemo.daemon.baseUrl}/completions`, {method: 'POST', headers: {'content-type': 'application/json'}, body})
            .then(async (response) => ({status: response.status, retryAfter: response.headers.get('retry-after'), body: await response.text()}))));
    const refused = responses.filter((response) => response.status === 429);
    const served = responses.filter((response) => response.status === 200);
    t.is(refused.length + served.length, 200, JSON.stringify(responses.find((response) => ![200, 429].includes(response.status))));
    t.true(served.length >= 5, `${served.length} served`);
    t.true(refused.length >= 150, `${refused.length} refused`);
    for (const response of refused) {
        t.is(response.retryAfter, '1');
        t.like(JSON.parse(response.body), {error: {code: 'queue_full'}});
    }
    for (const response of served)
        t.true(response.body.trimEnd().endsWith('data: [DONE]') && !response.body.includes('"error"'));
});
