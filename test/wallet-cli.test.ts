import {spawn} from 'node:child_process';
import {once} from 'node:events';
import {mkdtemp, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {fileURLToPath} from 'node:url';
import test from 'ava';
import {formatDoge, walletActionText, walletText} from '../cli/commands/wallet-command.js';
import type {InferenceService} from '../inference/inference-service.js';
import {LedgerError} from '../ledger/ledger-error.js';
import {type WalletActionStatus, type WalletStatus, walletActionSchema, walletStatusSchema} from '../node/node-status.js';
import {createProxyApp} from '../proxy/proxy-app.js';
import {listenProxy, type ListeningProxy} from '../proxy/proxy-server.js';
import {RequestStats} from '../proxy/request-stats.js';
import type {StatusSources, WalletAction} from '../proxy/routes/status-routes.js';
import {freePort} from '../harness/free-port.js';

/**
 * The wallet's surfaces without a chain: the proxy's /api/wallet routes (API key, body validation, ledger errors as
 * HTTP statuses) served by stand-in sources, `strongdoge wallet …` (run from the sources through tsx) against that
 * app and against no node at all, and the text the CLI prints for a wallet document.
 */

const API_KEY = 'wallet-test-key';
const PEER = 'c0ffee'.repeat(10) + 'c0ff';
const OTHER_PEER = 'beef'.repeat(16);
const PAYER_WALLET = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8';
const CHANNEL = `0x${'a1'.repeat(32)}`;
const TX = `0x${'7e'.repeat(32)}`;
const NOW = Date.parse('2026-11-25T12:00:00.000Z');

const walletDocument: WalletStatus = {
    address: '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266', offReason: null, chainId: 2000,
    contract: '0x5FbDB2315678afecb367f032d93F642f64180aa3', balance: '9876.54321', chainError: null, price: 0.5,
    earned: '12.5', owed: '0.3', paid: '1.25', deposited: '50.0',
    autoDeposit: {cap: '20.0', used: '5.0'},
    paying: [
        {peer: PEER, channel: CHANNEL, payee: '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC', deposited: '50.0', paid: '1.25', redeemed: '1.0', closesAt: null},
        {peer: null, channel: `0x${'b2'.repeat(32)}`, payee: '0x90F79bf6EB2c4f870365E785982E1f101E93b906', deposited: '5.0', paid: '0.0', redeemed: '0.0',
            closesAt: '2026-11-26T08:00:00.000Z'}
    ],
    paidBy: [{peer: OTHER_PEER, channel: `0x${'c3'.repeat(32)}`, payer: PAYER_WALLET, deposited: '100.0', vouched: '12.5', owed: '0.3',
        redeemed: '12.2', closesAt: '2026-11-24T08:00:00.000Z'}],
    redeeming: {
        intervalSeconds: 3600, threshold: '10.0',
        pending: [{channel: `0x${'c3'.repeat(32)}`, txHash: TX, amount: '0.3'}],
        lastRedeem: {at: '2026-11-25T11:00:00.000Z', txHash: TX, channel: `0x${'c3'.repeat(32)}`, paid: '12.2'},
        lastError: 'the chain did not answer in time', nextAttemptAt: '2026-11-25T12:05:00.000Z'
    }
};

const paymentsOff: WalletStatus = {
    ...walletDocument, address: null, offReason: 'no payment contract for chain 2000: run `strongdoge ledger deploy` or pass --payment-contract',
    contract: null, balance: null, price: 0, earned: '0.0', owed: '0.0', paid: '0.0', deposited: '0.0', autoDeposit: {cap: '0.0', used: '0.0'},
    paying: [], paidBy: [], redeeming: {...walletDocument.redeeming, pending: [], lastRedeem: null, lastError: null, nextAttemptAt: null}
};

const actionOutcome = (action: WalletActionStatus['transactions'][number]['action'], amount: string | null): WalletActionStatus =>
    ({transactions: [{action, channel: CHANNEL, txHash: TX, amount, gasUsed: 94_019}]});

/** Peers whose channel calls the stand-in sources refuse with a ledger error, as the node's payments would. */
const REFUSALS: Record<string, LedgerError> = {
    ['01'.repeat(32)]: LedgerError.notConfigured('payments are off: no wallet'),
    ['02'.repeat(32)]: LedgerError.channelRefused('the payment contract refuses withdraw: CloseNotDue(1790000000)'),
    ['03'.repeat(32)]: LedgerError.invalidRequest(`peer ${'03'.repeat(32)} has bound no wallet`),
    ['04'.repeat(32)]: LedgerError.chainUnavailable('cannot deposit into the payment channel: connect ECONNREFUSED')
};

let proxy: ListeningProxy;
const calls: {action: WalletAction, body: {peer?: string, amount?: string}}[] = [];
let dataDir: string;

const unused = () => {
    throw new Error('not part of this test');
};

test.before(async () => {
    const status: StatusSources = {
        node: unused, peers: unused, networkModels: unused, cluster: unused, ledger: unused,
        anchorLedger: async () => unused(), verifyLedger: async () => unused(), revokeLedger: async () => unused(),
        wallet: async () => walletDocument,
        walletAction: async (action, body) => {
            calls.push({action, body});
            const refusal = body.peer === undefined ? undefined : REFUSALS[body.peer];
            if (refusal !== undefined)
                throw refusal;
            return action === 'redeem' ? {transactions: []} : actionOutcome(action === 'deposit' ? 'open' : action, action === 'close' ? null : body.amount ?? '3.0');
        }
    };
    const app = createProxyApp({
        // Only /api/wallet is asked: nothing here reaches the inference service.
        inference: {} as InferenceService, stats: new RequestStats(), status, apiKey: API_KEY,
        catalog: {version: '0.0.0-test', models: () => [], loaded: () => []}
    });
    proxy = await listenProxy(app, '127.0.0.1', 0);
    dataDir = await mkdtemp(join(tmpdir(), 'strongdoge-wallet-'));
});

test.after.always(async () => {
    await proxy?.close(0);
    if (dataDir !== undefined)
        await rm(dataDir, {recursive: true, force: true});
});

async function api(path: string, {body, key = API_KEY, raw}: {body?: unknown, key?: string | null, raw?: string} = {}) {
    const post = body !== undefined || raw !== undefined || path !== '/api/wallet';
    const response = await fetch(`http://127.0.0.1:${proxy.port}${path}`, {
        method: post ? 'POST' : 'GET',
        headers: {...(key !== null && {authorization: `Bearer ${key}`}), ...(post && {'content-type': 'application/json'})},
        ...(post && {body: raw ?? (body === undefined ? undefined : JSON.stringify(body))})
    });
    return {status: response.status, body: await response.json() as {error?: {param: string | null, code: string | null, message: string}} & Record<string, unknown>};
}

test.serial('the wallet routes need the API key, and a request without it reaches no payment', async (t) => {
    const before = calls.length;
    for (const [path, body] of [['/api/wallet', undefined], ['/api/wallet/deposit', {peer: PEER, amount: '1'}], ['/api/wallet/redeem', {}],
        ['/api/wallet/close', {peer: PEER}], ['/api/wallet/withdraw', {peer: PEER}]] as const) {
        for (const key of [null, 'wrong-key']) {
            const answer = await api(path, {body, key});
            t.is(answer.status, 401, `${path} with ${key}`);
            t.is(answer.body.error?.code, 'invalid_api_key');
        }
    }
    t.is(calls.length, before);
});

test.serial('a browser page of another site cannot POST to the API (a text/plain "simple" request included); the node\'s own page and other clients can', async (t) => {
    const before = calls.length;
    const post = (path: string, headers: Record<string, string>) => fetch(`http://127.0.0.1:${proxy.port}${path}`, {
        method: 'POST', headers: {authorization: `Bearer ${API_KEY}`, 'content-type': 'text/plain', ...headers}, body: '{}'
    });
    for (const path of ['/api/wallet/redeem', '/api/ledger/anchor', '/v1/completions'])
        for (const headers of [{origin: 'http://evil.example'}, {'sec-fetch-site': 'cross-site'}, {'sec-fetch-site': 'same-site', origin: 'http://localhost:3000'},
            {origin: 'null'}] as Record<string, string>[]) {
            const refused = await post(path, headers);
            t.is(refused.status, 403, `${path} ${JSON.stringify(headers)}`);
            t.like(await refused.json(), {error: {code: 'cross_site_request'}});
        }
    t.is(calls.length, before);
    t.is((await post('/api/wallet/redeem', {origin: `http://127.0.0.1:${proxy.port}`, 'sec-fetch-site': 'same-origin'})).status, 200);
    t.is((await post('/api/wallet/redeem', {})).status, 200);
    t.is(calls.length, before + 2);
});

test.serial('GET /api/wallet answers the node\'s wallet document', async (t) => {
    const answer = await api('/api/wallet');
    t.is(answer.status, 200);
    t.deepEqual(walletStatusSchema.parse(answer.body), walletDocument);
});

test.serial('deposit, close and withdraw check the peer id and the amount, each a 400 naming the field', async (t) => {
    const cases: [path: string, body: unknown, param: string | null][] = [
        ['/api/wallet/deposit', {amount: '1'}, 'peer'],
        ['/api/wallet/deposit', {peer: PEER.slice(0, 16), amount: '1'}, 'peer'],
        ['/api/wallet/deposit', {peer: PEER.toUpperCase(), amount: '1'}, 'peer'],
        ['/api/wallet/deposit', {peer: 42, amount: '1'}, 'peer'],
        ['/api/wallet/deposit', {peer: PEER}, 'amount'],
        ['/api/wallet/deposit', {peer: PEER, amount: '0'}, 'amount'],
        ['/api/wallet/deposit', {peer: PEER, amount: 0}, 'amount'],
        ['/api/wallet/deposit', {peer: PEER, amount: '-1'}, 'amount'],
        ['/api/wallet/deposit', {peer: PEER, amount: -1}, 'amount'],
        ['/api/wallet/deposit', {peer: PEER, amount: 'ten'}, 'amount'],
        ['/api/wallet/deposit', {peer: PEER, amount: '1e3'}, 'amount'],
        ['/api/wallet/deposit', {peer: PEER, amount: `0.${'0'.repeat(18)}1`}, 'amount'],
        ['/api/wallet/deposit', {peer: PEER, amount: true}, 'amount'],
        ['/api/wallet/deposit', {peer: PEER, amount: '9'.repeat(100)}, 'amount'],
        ['/api/wallet/close', {}, 'peer'],
        ['/api/wallet/close', {peer: 'not-a-peer'}, 'peer'],
        ['/api/wallet/withdraw', {peer: ''}, 'peer'],
        ['/api/wallet/withdraw', [PEER], null]
    ];
    const before = calls.length;
    for (const [path, body, param] of cases) {
        const answer = await api(path, {body});
        t.is(answer.status, 400, `${path} ${JSON.stringify(body)}`);
        t.is(answer.body.error?.param, param, `${path} ${JSON.stringify(body)}`);
    }
    const malformed = await api('/api/wallet/deposit', {raw: '{"peer": '});
    t.is(malformed.status, 400);
    t.is(malformed.body.error?.code, 'invalid_json');
    t.is(calls.length, before, 'nothing invalid reaches the node\'s payments');
});

test.serial('valid actions reach the node\'s payments, the amount as DOGE in plain decimals', async (t) => {
    calls.length = 0;
    for (const [path, body] of [
        ['/api/wallet/deposit', {peer: PEER, amount: '2.5'}], ['/api/wallet/deposit', {peer: PEER, amount: 10}],
        ['/api/wallet/deposit', {peer: PEER, amount: 0.000001}], ['/api/wallet/deposit', {peer: PEER, amount: ' 7.000 '}],
        ['/api/wallet/redeem', undefined], ['/api/wallet/close', {peer: PEER}], ['/api/wallet/withdraw', {peer: PEER}]
    ] as const) {
        const answer = await api(path, {...(body !== undefined && {body})});
        t.is(answer.status, 200, `${path} ${JSON.stringify(answer.body)}`);
        walletActionSchema.parse(answer.body);
    }
    t.deepEqual(calls, [
        {action: 'deposit', body: {peer: PEER, amount: '2.5'}},
        {action: 'deposit', body: {peer: PEER, amount: '10.0'}},
        {action: 'deposit', body: {peer: PEER, amount: '0.000001'}},
        {action: 'deposit', body: {peer: PEER, amount: '7.0'}},
        {action: 'redeem', body: {}},
        {action: 'close', body: {peer: PEER}},
        {action: 'withdraw', body: {peer: PEER}}
    ]);
});

test.serial('the payments\' ledger errors answer as the ledger routes do', async (t) => {
    const expected: [peer: string, status: number, code: string][] = [
        ['01'.repeat(32), 409, 'not_configured'], ['02'.repeat(32), 409, 'channel_refused'],
        ['03'.repeat(32), 400, 'invalid_request'], ['04'.repeat(32), 503, 'chain_unavailable']
    ];
    for (const [peer, status, code] of expected) {
        const answer = await api('/api/wallet/withdraw', {body: {peer}});
        t.is(answer.status, status, code);
        t.is(answer.body.error?.code, code);
        t.is(answer.body.error?.message, REFUSALS[peer]!.message);
    }
});

const CLI = fileURLToPath(new URL('../cli/main.ts', import.meta.url));

/** `strongdoge …` from the sources (tsx), as users run the built one. */
async function cli(args: string[]) {
    const child = spawn(process.execPath, ['--import=tsx', CLI, ...args, '--data-dir', dataDir], {stdio: ['ignore', 'pipe', 'pipe'],
        env: {...process.env, STRONGDOGE_API_KEY: '', STRONGDOGE_PORT: '', STRONGDOGE_HOST: ''}});
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => stdout += chunk);
    child.stderr.on('data', (chunk) => stderr += chunk);
    const [code] = await once(child, 'exit') as [number | null];
    return {code, stdout, stderr};
}

const throughProxy = () => ['--host', '127.0.0.1', '--port', String(proxy.port), '--api-key', API_KEY];

test.serial('strongdoge wallet with no node running says the wallet lives in the running node and to start it', async (t) => {
    const port = String(await freePort());
    for (const args of [['wallet'], ['wallet', 'redeem'], ['wallet', 'deposit', PEER, '5']]) {
        const result = await cli([...args, '--port', port]);
        t.is(result.code, 1, result.stderr);
        t.regex(result.stderr, new RegExp(`^strongdoge: error: no strongdoge node answers at http://127\\.0\\.0\\.1:${port}: the wallet lives in the running node\\. `
            + 'Start it with `strongdoge`', 'm'));
        t.is(result.stdout, '');
    }
});

test.serial('strongdoge wallet prints the node\'s wallet as text and JSON, and sends actions through the API', async (t) => {
    const shown = await cli(['wallet', ...throughProxy()]);
    t.is(shown.code, 0, shown.stderr);
    t.is(shown.stdout, walletText(walletDocument) + '\n');
    const json = await cli(['wallet', '--json', ...throughProxy()]);
    t.is(json.code, 0, json.stderr);
    t.deepEqual(JSON.parse(json.stdout), walletDocument);

    calls.length = 0;
    const deposited = await cli(['wallet', 'deposit', PEER.toUpperCase(), '2.50', ...throughProxy()]);
    t.is(deposited.code, 0, deposited.stderr);
    t.is(deposited.stdout, `opened channel ${CHANNEL} with 2.5 DOGE (tx ${TX}, 94,019 gas)\n`);
    const redeemed = await cli(['wallet', 'redeem', ...throughProxy()]);
    t.is(redeemed.stdout, 'nothing to redeem: no voucher held is above what was redeemed\n');
    const closed = await cli(['wallet', 'close', PEER, '--json', ...throughProxy()]);
    t.deepEqual(JSON.parse(closed.stdout), actionOutcome('close', null));
    t.deepEqual(calls, [{action: 'deposit', body: {peer: PEER, amount: '2.5'}}, {action: 'redeem', body: {}}, {action: 'close', body: {peer: PEER}}]);

    const refused = await cli(['wallet', 'withdraw', '02'.repeat(32), ...throughProxy()]);
    t.is(refused.code, 1);
    t.regex(refused.stderr, /409 the payment contract refuses withdraw: CloseNotDue\(1790000000\)/);
});

test.serial('strongdoge wallet refuses a bad peer id or amount before asking the node (usage error, exit 2)', async (t) => {
    const port = String(await freePort());
    for (const [args, message] of [
        [['wallet', 'deposit', PEER.slice(0, 16), '5'], /a peer is named by its whole node id: 64 hex digits/],
        [['wallet', 'deposit', PEER, '-5'], /an amount of DOGE is a decimal number/],
        [['wallet', 'deposit', PEER, '0'], /the amount must be above 0/],
        [['wallet', 'close', 'bob'], /a peer is named by its whole node id/]
    ] as const) {
        const result = await cli([...args, '--port', port]);
        t.is(result.code, 2, result.stderr);
        t.regex(result.stderr, message);
    }
});

test('a wallet document as text: the wallet, balance, price, totals, channels both ways and redeeming', (t) => {
    const text = walletText(walletDocument, NOW);
    const lines = text.split('\n');
    t.is(lines[0], 'wallet       0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266 on chain 2000');
    t.true(lines.includes('contract     0x5FbDB2315678afecb367f032d93F642f64180aa3'));
    t.true(lines.includes('balance      9876.54321 DOGE'));
    t.true(lines.includes('price        0.5 DOGE per million tokens'));
    t.true(lines.includes('earned       12.5 DOGE serving peers, 0.3 DOGE of it owed (not redeemed yet)'));
    t.true(lines.includes('paid         1.25 DOGE to peers, 50 DOGE deposited in channels'));
    t.true(lines.includes('auto-deposit up to 20 DOGE, 5 DOGE used'));
    t.true(lines.includes('paying (2 channels)'));
    t.regex(text, /^ {2}PEER {16}CHANNEL {6}DEPOSITED {2}PAID {7}REDEEMED {2}STATE$/m);
    t.regex(text, /^ {2}c0ffeec0ffeec0ff {4}0xa1a1a1a1… {2}50 DOGE {4}1\.25 DOGE {2}1 DOGE {4}open$/m);
    t.regex(text, /^ {2}wallet 0x90F79bf6… {2}0xb2b2b2b2… {2}5 DOGE {5}0 DOGE {5}0 DOGE {4}closing: withdraw from 2026-11-26T08:00:00\.000Z$/m);
    t.true(lines.includes('paid by (1 channel)'));
    t.regex(text, /^ {2}beefbeefbeefbeef {2}0xc3c3c3c3… {2}100 DOGE {3}12\.5 DOGE {2}0\.3 DOGE {2}12\.2 DOGE {2}closed$/m);
    t.regex(text, new RegExp(`^redeeming {4}every 1h 0m, or once 10 DOGE is owed; last 12\\.2 DOGE from 0xc3c3c3c3… at 2026-11-25T11:00:00\\.000Z \\(tx ${TX}\\)$`, 'm'));
    t.true(lines.includes(`             pending: 0.3 DOGE from 0xc3c3c3c3…, tx ${TX}`));
    t.true(lines.includes('             next attempt at 2026-11-25T12:05:00.000Z'));
    t.true(lines.includes('             last error: the chain did not answer in time'));

    t.is(walletText(paymentsOff, NOW), 'payments     off: no payment contract for chain 2000: run `strongdoge ledger deploy` or pass --payment-contract\n'
        + 'price        free (0 DOGE per million tokens)');
    t.regex(walletText({...walletDocument, balance: null, chainError: 'connect ECONNREFUSED', autoDeposit: {cap: '0.0', used: '0.0'}}, NOW),
        /^balance {6}unknown: connect ECONNREFUSED\n[\s\S]*^auto-deposit off$/m);
    t.is(formatDoge('50.0'), '50 DOGE');
    t.is(formatDoge('0.000001'), '0.000001 DOGE');
});

test('a wallet action as text: one transaction a line, with its channel, amount, tx and gas', (t) => {
    t.is(walletActionText({transactions: [
        {action: 'deposit', channel: CHANNEL, txHash: TX, amount: '5.0', gasUsed: 34_275},
        {action: 'redeem', channel: CHANNEL, txHash: TX, amount: '0.25', gasUsed: 47_429}
    ]}, 'deposit'), `deposited 5 DOGE into channel ${CHANNEL} (tx ${TX}, 34,275 gas)\nredeemed 0.25 DOGE from channel ${CHANNEL} (tx ${TX}, 47,429 gas)`);
    t.regex(walletActionText(actionOutcome('close', null), 'close'), /^asked to close channel 0xa1a1[0-9a-f]*: the peer may still redeem for the challenge period \(24 h\)/);
    t.is(walletActionText(actionOutcome('withdraw', '45.0'), 'withdraw'), `withdrew 45 DOGE from channel ${CHANNEL} (tx ${TX}, 94,019 gas)`);
    t.is(walletActionText({transactions: []}, 'withdraw'), 'nothing was sent');
});
