import {get} from 'node:http';
import {brotliDecompressSync} from 'node:zlib';
import test from 'ava';
import type {Browser, Page} from 'playwright-core';
import {launchChromium, watchedPage} from '../harness/browser.js';
import {waitFor} from '../harness/cli-process.js';
import {startDemoDaemon, type DemoDaemon} from '../harness/demo-daemon.js';
import {WEB_PAGE_CSP} from '../proxy/web-page.js';

/**
 * The web page at `/` in a real browser (Debian's chromium driven by playwright-core) against a real daemon
 * (README, "The web page"). The demo model writes words and never ends by itself: answers run to max tokens.
 */

let browser: Browser;
let demo: DemoDaemon;
const screenshots = process.env.STRONGDOGE_SCREENSHOTS === '1';

test.before(async () => {
    [browser, demo] = await Promise.all([launchChromium(), startDemoDaemon([], {endsText: false, writesBytes: false})]);
});

test.after.always(async () => {
    await browser?.close();
    await demo?.stop();
});

function requestLog(daemon: DemoDaemon) {
    return daemon.daemon.logs.filter((record) => record.msg === 'request').map((record) => record.request as {endpoint: string, status: number, stream: boolean});
}

function rawGet(url: string, acceptEncoding: string) {
    return new Promise<{encoding: string | undefined, compressed: Buffer}>((resolve, reject) => {
        get(url, {headers: {'accept-encoding': acceptEncoding}}, (response) => {
            const chunks: Buffer[] = [];
            response.on('data', (chunk: Buffer) => chunks.push(chunk))
                .on('end', () => resolve({encoding: response.headers['content-encoding'], compressed: Buffer.concat(chunks)}))
                .on('error', reject);
        }).on('error', reject);
    });
}

/** The chat picks the first model `/v1/models` lists for a new conversation: the demo model, once the page has read it. */
async function modelPicked(page: Page) {
    await waitFor(async () => await page.getByLabel('Model', {exact: true}).inputValue() === 'demo', 15_000, 100);
}

interface StoredMessage {
    role: string,
    content: string,
    finish?: string
}

/** The answer the page keeps in localStorage once it is complete (the page stores after the stream ends). */
async function storedAnswer(page: Page, index = 1): Promise<StoredMessage> {
    const read = async () => (JSON.parse(await page.evaluate<string | null>("localStorage.getItem('strongdoge.conversations')") ?? '[]') as {messages: StoredMessage[]}[])[0]?.messages[index];
    await waitFor(async () => ['length', 'stop', 'stopped', 'error'].includes((await read())?.finish ?? ''), 5_000);
    return (await read())!;
}

test.serial('GET / serves the page under a strict CSP, its hashed files cached for a year and precompressed; it loads with no console error', async (t) => {
    const index = await fetch(`${demo.daemon.origin}/`, {headers: {'accept-encoding': 'br'}});
    t.is(index.status, 200);
    t.is(index.headers.get('content-security-policy'), WEB_PAGE_CSP);
    t.regex(WEB_PAGE_CSP, /default-src 'self'/);
    t.notRegex(WEB_PAGE_CSP, /unsafe-inline|unsafe-eval|\*/);
    t.is(index.headers.get('cache-control'), 'no-cache');
    t.is(index.headers.get('x-content-type-options'), 'nosniff');
    const html = await index.text();
    t.notRegex(html, /<script(?![^>]*\bsrc=)[^>]*>|<style|\sstyle=|\son[a-z]+=|https?:\/\//i, 'no inline script or style, no other origin');
    const assets = [...html.matchAll(/(?:src|href)="(assets\/[^"]+)"/g)].map((match) => match[1]!);
    t.is(assets.length, 3, 'script, styles, icon');
    for (const asset of assets) {
        t.regex(asset, /-[A-Za-z0-9]{8}\.(js|css|svg)$/, 'named by content hash');
        const raw = await fetch(`${demo.daemon.origin}/${asset}`, {headers: {'accept-encoding': 'identity'}});
        t.is(raw.headers.get('cache-control'), 'public, max-age=31536000, immutable');
        const body = Buffer.from(await raw.arrayBuffer());
        // Node's fetch decodes what it asked for: read the bytes as sent.
        const {encoding, compressed} = await rawGet(`${demo.daemon.origin}/${asset}`, 'gzip, br');
        t.is(encoding, 'br');
        t.true(compressed.length < body.length || asset.endsWith('.svg'));
        t.deepEqual(brotliDecompressSync(compressed), body);
    }
    t.is((await fetch(`${demo.daemon.origin}/assets/missing-00000000.js`)).status, 404);
    t.is((await rawGet(`${demo.daemon.origin}/${assets[0]}`, 'gzip')).encoding, 'gzip');
    t.is((await rawGet(`${demo.daemon.origin}/${assets[0]}`, 'br;q=0, identity')).encoding, undefined);
    const etag = index.headers.get('etag')!;
    t.is((await fetch(`${demo.daemon.origin}/`, {headers: {'if-none-match': etag}})).status, 304, 'index.html revalidates');

    const {page, problems} = await watchedPage(browser);
    await page.goto(demo.daemon.origin);
    await modelPicked(page);
    await page.locator('.node-summary').getByText('offline').waitFor();
    await page.getByRole('link', {name: 'Network'}).click();
    await page.locator('[data-engine-state="ready"]').waitFor();
    await page.locator('#node li .mono').getByText('demo', {exact: true}).waitFor();
    t.deepEqual(problems, []);
    await page.context().close();
});

test.serial('a greedy chat streams the same text the API gives; regenerate gives it again; an edited question is sent anew', async (t) => {
    const messages = [{role: 'user' as const, content: 'Tell me about the swarm'}];
    const expected = (await demo.client.chat.completions.create({model: 'demo', messages, temperature: 0, max_tokens: 24})).choices[0]!.message.content!;
    t.true(expected.length > 0);

    const {page, problems} = await watchedPage(browser);
    const chatBodies: string[] = [];
    page.on('request', (request) => {
        if (request.url().endsWith('/v1/chat/completions'))
            chatBodies.push(request.postData() ?? '');
    });
    await page.goto(demo.daemon.origin);
    await modelPicked(page);
    await page.getByText('Settings').click();
    await page.getByLabel('Temperature').fill('0');
    await page.getByLabel('Max tokens').fill('24');
    await page.getByLabel('Message', {exact: true}).fill(messages[0]!.content);
    await page.getByLabel('Message', {exact: true}).press('Enter');
    const answer = page.locator('.message.assistant').last();
    await page.locator('.message.assistant[data-finish="length"]').waitFor();
    t.is(JSON.parse(chatBodies[0]!).stream, true);
    t.like(JSON.parse(chatBodies[0]!), {model: 'demo', temperature: 0, max_tokens: 24, messages});
    t.is((await storedAnswer(page)).content, expected, 'the answer as streamed, kept in localStorage');
    await answer.getByRole('button', {name: 'Source'}).click();
    t.is(await answer.locator('pre.raw').textContent(), expected, 'the answer as the page shows its source');
    t.like(requestLog(demo).at(-1), {endpoint: '/v1/chat/completions', status: 200, stream: true});

    await answer.getByRole('button', {name: 'Regenerate'}).click();
    await waitFor(() => chatBodies.length === 2, 10_000);
    await page.locator('.message.assistant[data-finish="length"]').waitFor();
    t.is(await page.locator('.message').count(), 2, 'the answer was replaced, not added');
    t.is((await storedAnswer(page)).content, expected, 'greedy: the same text again');

    await page.getByRole('button', {name: 'Edit', exact: true}).click();
    await page.getByLabel('Edit message').fill('Tell me about the ledger');
    await page.getByRole('button', {name: 'Save and send'}).click();
    await waitFor(() => chatBodies.length === 3, 10_000);
    t.deepEqual(JSON.parse(chatBodies[2]!).messages, [{role: 'user', content: 'Tell me about the ledger'}]);
    await page.locator('.message.assistant[data-finish="length"]').waitFor();
    t.is(await page.locator('.message').count(), 2);
    t.is(await page.locator('.message.user .bubble').textContent(), 'Tell me about the ledger');

    // A system prompt goes first.
    await page.getByLabel('System prompt').fill('You are terse.');
    await page.getByLabel('Message', {exact: true}).fill('And the pipeline?');
    await page.getByRole('button', {name: 'Send', exact: true}).click();
    await waitFor(() => chatBodies.length === 4, 10_000);
    t.deepEqual(JSON.parse(chatBodies[3]!).messages.map((message: {role: string}) => message.role), ['system', 'user', 'assistant', 'user']);
    await page.locator('.message.assistant[data-finish="length"]').nth(1).waitFor();
    if (screenshots) {
        await page.screenshot({path: 'docs/web-chat-1280x800.png'});
        await page.setViewportSize({width: 390, height: 844});
        await page.screenshot({path: 'docs/web-chat-390x844.png'});
    }
    t.deepEqual(problems, []);
    await page.context().close();
});

test.serial('the stop button cancels the generation: the node logs the request as cancelled (499)', async (t) => {
    const {page, problems} = await watchedPage(browser);
    await page.goto(demo.daemon.origin);
    await modelPicked(page);
    await page.getByText('Settings').click();
    await page.getByLabel('Max tokens').fill('3800');
    await page.getByLabel('Message', {exact: true}).fill('Go on for a while');
    await page.getByRole('button', {name: 'Send', exact: true}).click();
    const answer = page.locator('.message.assistant[data-finish="streaming"]');
    await waitFor(async () => ((await answer.textContent()) ?? '').length > 20, 30_000, 50);
    await page.getByRole('button', {name: 'Stop'}).click();
    await page.locator('.message.assistant[data-finish="stopped"]').waitFor();
    await waitFor(() => requestLog(demo).some((record) => record.status === 499), 10_000);
    t.like(requestLog(demo).at(-1), {endpoint: '/v1/chat/completions', status: 499, stream: true});
    const kept = await storedAnswer(page);
    t.is(kept.finish, 'stopped');
    t.true(kept.content.length > 0, 'what arrived before the stop is kept');
    t.true((await page.getByRole('button', {name: 'Send', exact: true}).isVisible()), 'ready for the next question');
    t.deepEqual(problems, []);
    await page.context().close();
});

test.serial('Markdown in an answer renders as code, lists and links, and nothing in it becomes markup or runs', async (t) => {
    const {page, problems, requests} = await watchedPage(browser);
    const hostile = [
        '# Title <script>alert(1)</script>',
        '<img src=x onerror=alert(1)> and **bold** and `code <b>`',
        '- one [safe](https://example.org/) [bad](javascript:alert(1))',
        '- two',
        '',
        '```html',
        '<svg onload=alert(1)></svg>',
        '```',
        '',
        '| a | b |',
        '|---|---|',
        '| <i>x</i> | y |'
    ].join('\n');
    const conversation = {id: 'x1', title: 'Hostile', model: 'demo', system: '', temperature: 0, maxTokens: 8, updatedAt: Date.now(),
        messages: [{role: 'user', content: '<b>hi</b>'}, {role: 'assistant', content: hostile, finish: 'stop'}]};
    await page.addInitScript({content: `localStorage.setItem('strongdoge.conversations', ${JSON.stringify(JSON.stringify([conversation]))})`});
    await page.goto(demo.daemon.origin);
    const answer = page.locator('.message.assistant .markdown');
    await answer.waitFor();
    t.is(await answer.locator('h3').textContent(), 'Title <script>alert(1)</script>');
    t.is(await answer.locator('strong').textContent(), 'bold');
    t.is(await answer.locator('p code').textContent(), 'code <b>');
    t.is(await answer.locator('li').count(), 2);
    t.is(await answer.locator('a').count(), 1, 'only the https link is a link');
    t.is(await answer.locator('a').getAttribute('href'), 'https://example.org/');
    t.is(await answer.locator('pre code').textContent(), '<svg onload=alert(1)></svg>');
    t.is(await answer.locator('td').first().textContent(), '<i>x</i>');
    t.is(await page.locator('.message.user').first().locator('.bubble').textContent(), '<b>hi</b>');
    t.is(await page.locator('img, script:not([src]), svg[onload], b, i').count(), 0, 'no element made of the text');
    t.false(requests.some((url) => url.endsWith('/x')), 'the image was never fetched');
    t.deepEqual(problems, []);
    await page.context().close();
});

test.serial('with --api-key the page and /health stay open, the page asks for the key once and keeps it in sessionStorage only', async (t) => {
    const guarded = await startDemoDaemon(['--api-key', 'correct horse'], {writesBytes: false});
    t.teardown(() => guarded.stop());
    const origin = guarded.daemon.origin;
    t.is((await fetch(`${origin}/`)).status, 200);
    t.is((await fetch(`${origin}/health`)).status, 200);
    t.is((await fetch(`${origin}/v1/models`)).status, 401);
    t.is((await fetch(`${origin}/api/node`)).status, 401);

    const {page, context, problems} = await watchedPage(browser);
    await page.goto(origin);
    const key = page.getByRole('textbox', {name: 'API key'});
    await key.waitFor();
    await key.fill('wrong');
    await page.getByRole('button', {name: 'Continue'}).click();
    await page.getByRole('alert').getByText('not the one this node was started with').waitFor();
    await key.fill('correct horse');
    await page.getByRole('button', {name: 'Continue'}).click();
    await key.waitFor({state: 'detached'});
    await modelPicked(page);
    await page.locator('.node-summary').waitFor();
    t.is(await page.evaluate<string | null>("sessionStorage.getItem('strongdoge.apiKey')"), 'correct horse');
    t.false((await page.evaluate<string>('JSON.stringify({...localStorage})')).includes('correct horse'), 'never in localStorage');
    if (screenshots) {
        const prompt = await watchedPage(browser);
        await prompt.page.goto(origin);
        await prompt.page.getByRole('textbox', {name: 'API key'}).waitFor();
        await prompt.page.screenshot({path: 'docs/web-key-1280x800.png'});
        await prompt.context.close();
    }

    // The same tab keeps it across a reload; a new session asks again.
    await page.reload();
    await page.locator('.node-summary').waitFor();
    t.is(await page.getByRole('textbox', {name: 'API key'}).count(), 0);
    const fresh = await watchedPage(browser);
    await fresh.page.goto(origin);
    await fresh.page.getByRole('textbox', {name: 'API key'}).waitFor();
    await fresh.context.close();

    // The only complaints: the browser's own lines for the 401s before the key.
    t.true(problems.every((problem) => /status of 401/.test(problem)), problems.join('\n'));
    await context.close();
});
