/**
 * Paying for served work in DOGE, end to end (docs/architecture.md, "Payments"): real daemons on a loopback
 * testnet, a real EVM (hardhat, chain id 2000) holding the payment contract, channels opened with the wallet
 * commands, vouchers with receipts, redeems on chain, refusals, close and withdraw, and crashes while redeeming.
 */
import {readFile} from 'node:fs/promises';
import {join} from 'node:path';
import {setTimeout} from 'node:timers/promises';
import test from 'ava';
import {Contract, JsonRpcProvider, Wallet} from 'ethers';
import type {Testnet} from 'hyperdht/testnet.js';
import {runCli, startDaemon, waitFor, type DaemonHandle} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {type EvmNode, startEvmNode} from '../harness/evm-node.js';
import {fetchStatus} from '../harness/node-status.js';
import {nodeIdentity, nodeIdOf, startTestnet, testSwarmNode, waitForPeers} from '../harness/swarm-fixture.js';
import {capabilitiesFixture} from '../harness/capabilities-fixture.js';
import {JobRequester} from '../inference/remote/jobs/job-requester.js';
import type {RequesterPayments, WireVoucher} from '../inference/remote/jobs/job-payments.js';
import {JobsProtocol} from '../inference/remote/jobs/jobs-protocol.js';
import {deployPaymentContract, openChannel, readChannel} from '../ledger/payments/channels.js';
import {signVoucher, voucherJson} from '../ledger/payments/vouchers.js';
import {bindWallet} from '../ledger/payments/wallet-binding.js';
import {paymentChannelsAbi} from '../ledger/generated/payment-channels.js';
import {jobCostWei, priceWeiPerMillion, weiToDoge} from '../ledger/payments/pricing.js';
import type {WalletActionStatus, WalletStatus} from '../node/node-status.js';

/** DOGE per million tokens: 0.001 DOGE a token, so a job's worst case (a prompt's bound + max tokens) is a few DOGE. */
const PRICE = 1000;
const PRICE_WEI = priceWeiPerMillion(PRICE);

interface Node {
    daemon: DaemonHandle,
    id: string,
    dataDir: string,
    wallet: Wallet,
    args: string[],
    env: NodeJS.ProcessEnv
}

let testnet: Testnet;
let bootstrap: string;
let evm: EvmNode;
let contract: string;
let provider: Node;
let requester: Node;
const cleanups: (() => Promise<unknown>)[] = [];

const chainFlags = () => ['--chain-rpc', evm.url, '--chain-id', String(evm.chainId), '--confirmations', '1', '--payment-contract', contract];

async function startNode(walletKey: string, extra: string[], {model = false} = {}): Promise<Node> {
    const fixture = await createDataDirWithDemoModel({layers: 2, width: 64, headCount: 4, feedForwardLength: 64});
    cleanups.push(fixture.cleanup);
    const args = ['--bootstrap', bootstrap, '--data-dir', fixture.dataDir, '--threads', '1', ...chainFlags(), ...(model ? ['--model', 'demo'] : []), ...extra];
    const env = {STRONGDOGE_WALLET_KEY: walletKey};
    const daemon = await startDaemon(args, {env});
    const node = {daemon, id: await nodeIdOf(daemon), dataDir: fixture.dataDir, wallet: new Wallet(walletKey), args, env};
    cleanups.push(() => node.daemon.stop());
    return node;
}

async function restart(node: Node) {
    node.daemon = await startDaemon(node.args, {env: node.env});
    cleanups.push(() => node.daemon.stop());
}

const wallet = (node: Node) => fetchStatus(node.daemon, '/api/wallet') as Promise<WalletStatus>;

async function walletAction(node: Node, action: string, body: object = {}) {
    const response = await fetch(`${node.daemon.origin}/api/wallet/${action}`, {
        method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify(body)
    });
    const json = await response.json() as WalletActionStatus & {error?: {message: string}};
    if (response.status !== 200)
        throw new Error(`${action}: ${response.status} ${JSON.stringify(json)}`);
    return json;
}

async function complete(node: Node, prompt: string) {
    const response = await fetch(`${node.daemon.baseUrl}/completions`, {
        method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify({model: 'demo', prompt, max_tokens: 8, temperature: 0})
    });
    return {status: response.status, body: await response.json() as {usage?: {prompt_tokens: number, completion_tokens: number}, error?: {code: string, message: string}}};
}

/** What the jobs served cost, each rounded down to wei as the receipt's tokens at the price. */
const costOf = (usages: {prompt_tokens: number, completion_tokens: number}[]) =>
    usages.reduce((sum, usage) => sum + jobCostWei(usage.prompt_tokens + usage.completion_tokens, PRICE_WEI), 0n);

async function recentRecords(node: Node) {
    return (await fetchStatus(node.daemon, '/api/ledger')).recent;
}

/** The provider's redeem records of one channel, among the log's newest (GET /api/ledger `recent`). */
async function redeemRecords(channel: string) {
    return (await recentRecords(provider)).flatMap((record) => (record.type === 'redeem' && record.channel === channel ? [record] : []));
}

function redeemedEvents(channel: string) {
    const chain = new JsonRpcProvider(evm.url, evm.chainId, {staticNetwork: true});
    const payments = new Contract(contract, paymentChannelsAbi, chain);
    return payments.queryFilter(payments.filters.Redeemed!(channel)).finally(() => chain.destroy());
}

async function balanceOf(address: string) {
    return BigInt(await evm.send('eth_getBalance', [address, 'latest']) as string);
}

/** The fees `address` paid in the blocks since `fromBlock`: redeems cost the payee gas. */
async function feesPaid(address: string, fromBlock: number) {
    const chain = new JsonRpcProvider(evm.url, evm.chainId, {staticNetwork: true});
    try {
        let fees = 0n;
        const latest = await chain.getBlockNumber();
        for (let number = fromBlock + 1; number <= latest; number++) {
            const block = await chain.getBlock(number, true);
            for (const tx of block?.prefetchedTransactions ?? [])
                if (tx.from === address) {
                    const receipt = (await chain.getTransactionReceipt(tx.hash))!;
                    fees += receipt.gasUsed * receipt.gasPrice;
                }
        }
        return fees;
    } finally {
        chain.destroy();
    }
}

test.before(async () => {
    ({testnet, bootstrap} = await startTestnet());
    evm = await startEvmNode();
    const deployer = new Wallet(evm.accounts[2]!);
    ({address: contract} = await deployPaymentContract({rpcUrl: evm.url, chainId: evm.chainId}, deployer));
    provider = await startNode(evm.accounts[1]!, ['--price', String(PRICE), '--redeem-threshold', '1000000'], {model: true});
    requester = await startNode(evm.accounts[0]!, []);
    await waitForPeers(requester.daemon, [provider.id], 30_000, (peers) => peers.every((peer) => peer.capabilities.models.some((model) => model.loaded)
        && peer.capabilities.payment?.wallet === provider.wallet.address));
});

test.after.always(async () => {
    for (const cleanup of cleanups.reverse())
        await cleanup().catch(() => undefined);
    await evm?.stop();
    await testnet?.destroy();
});

test.serial('a priced provider announces its wallet bound to its key; without a channel the request is a 402 naming how to pay', async (t) => {
    const own = await wallet(provider);
    t.like(own, {address: provider.wallet.address, contract, price: PRICE, offReason: null});
    const reply = await complete(requester, 'no channel yet');
    t.is(reply.status, 402, JSON.stringify(reply.body));
    t.is(reply.body.error?.code, 'payment_required');
    t.regex(reply.body.error!.message, /wallet deposit/);
});

test.serial('wallet deposit opens a channel; 3 jobs are paid by vouchers with their receipts; one redeem moves exactly their cost', async (t) => {
    const port = new URL(requester.daemon.origin).port;
    const deposited = await runCli(['wallet', 'deposit', provider.id, '20', '--data-dir', requester.dataDir, '--port', port, '--json'], requester.env);
    t.is(deposited.code, 0, deposited.stderr);
    const opened = JSON.parse(deposited.stdout) as WalletActionStatus;
    t.is(opened.transactions[0]!.action, 'open');
    const {channel} = opened.transactions[0]!;

    const usages = [];
    for (const prompt of ['first paid job', 'second paid job', 'third']) {
        const reply = await complete(requester, prompt);
        t.is(reply.status, 200, `${JSON.stringify(reply.body)}; provider: ${JSON.stringify(provider.daemon.logs.filter((line) => Number(line.level) >= 40).slice(-5))}`);
        usages.push(reply.body.usage!);
    }
    const total = costOf(usages);
    t.true(total > 0n);
    // The last voucher covers the three jobs on both sides.
    await waitFor(async () => (await wallet(provider)).paidBy.find((entry) => entry.channel === channel)?.vouched === weiToDoge(total), 15_000);
    const paying = (await wallet(requester)).paying.find((entry) => entry.channel === channel)!;
    t.like(paying, {peer: provider.id, payee: provider.wallet.address, deposited: '20.0', paid: weiToDoge(total), closesAt: null});
    t.like((await wallet(provider)).paidBy.find((entry) => entry.channel === channel), {peer: requester.id, payer: requester.wallet.address,
        owed: weiToDoge(total), redeemed: '0.0'});
    t.like(await wallet(requester), {paid: weiToDoge(total), deposited: '20.0'});
    t.is((await recentRecords(provider)).filter((record) => record.type === 'voucher').length, 3);
    t.is((await recentRecords(requester)).filter((record) => record.type === 'payment').length, 3);

    const before = await balanceOf(provider.wallet.address);
    const fromBlock = Number(BigInt(await evm.send('eth_blockNumber') as string));
    const redeemed = await walletAction(provider, 'redeem');
    t.is(redeemed.transactions.length, 1);
    t.like(redeemed.transactions[0], {action: 'redeem', channel, amount: weiToDoge(total)});
    const state = (await readChannel({rpcUrl: evm.url, chainId: evm.chainId, contract}, channel))!;
    t.is(state.redeemed, total);
    t.is(await balanceOf(provider.wallet.address) - before, total - await feesPaid(provider.wallet.address, fromBlock));
    t.like(await wallet(provider), {earned: weiToDoge(total), owed: '0.0'});
    const redeemRecords = (await recentRecords(provider)).filter((record) => record.type === 'redeem');
    t.is(redeemRecords.length, 1);
    // Nothing new: a second redeem sends nothing.
    t.deepEqual((await walletAction(provider, 'redeem')).transactions, []);
    t.is((await redeemedEvents(channel)).length, 1);
});

test.serial('a budget below the price is a 402 over_budget, one at the price is served; the dashboard\'s figures are the wallet\'s', async (t) => {
    const post = (maxPrice: string) => fetch(`${requester.daemon.baseUrl}/completions`, {
        method: 'POST', headers: {'content-type': 'application/json', 'x-strongdoge-max-price': maxPrice},
        body: JSON.stringify({model: 'demo', prompt: 'budget', max_tokens: 4, temperature: 0})
    });
    const tooLow = await post(String(PRICE - 1));
    t.is(tooLow.status, 402);
    t.like(await tooLow.json(), {error: {code: 'over_budget'}});
    t.is((await post(String(PRICE))).status, 200);
    t.is((await post('cheap')).status, 400);
    // Settled on both sides: the provider holds a voucher for all it served, which is all the requester signed.
    await waitFor(async () => {
        const entry = (await wallet(provider)).paidBy[0]!;
        return entry.vouched === entry.owed && entry.owed === (await wallet(requester)).paying[0]!.paid;
    }, 15_000);
    const node = await fetchStatus(provider.daemon, '/api/node') as {payments?: {earned: string, owed: string} | null};
    const own = await wallet(provider);
    t.like(node.payments, {earned: own.earned, owed: own.owed});
});

test.serial('jobs at once and back to back are all served and paid: vouchers overtaken by later jobs are not short', async (t) => {
    const channel = (await wallet(requester)).paying[0]!.channel;
    const replies = await Promise.all(['one', 'two', 'three', 'four'].map((prompt) => complete(requester, `at once ${prompt}`)));
    for (let round = 0; round < 4; round++)
        replies.push(await complete(requester, `back to back ${round}`));
    for (const reply of replies)
        t.is(reply.status, 200, JSON.stringify(reply.body));
    await waitFor(async () => {
        const entry = (await wallet(provider)).paidBy.find((item) => item.channel === channel)!;
        return entry.vouched === entry.owed && entry.owed === (await wallet(requester)).paying.find((item) => item.channel === channel)!.paid;
    }, 15_000);
    t.false(provider.daemon.logs.some((line) => String(line.msg).includes('voucher does not pay')));
});

test.serial('a request without max_tokens is priced at the peer\'s cap; counting tokens is free; a client that leaves mid-answer leaves no debt', async (t) => {
    const channel = (await wallet(requester)).paying[0]!.channel;
    const uncapped = await fetch(`${requester.daemon.baseUrl}/chat/completions`, {
        method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify({model: 'demo', messages: [{role: 'user', content: 'no limit given'}], temperature: 0})
    });
    t.is(uncapped.status, 200, await uncapped.clone().text());
    const counted = await fetch(`${requester.daemon.baseUrl}/messages/count_tokens`, {
        method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify({model: 'demo', messages: [{role: 'user', content: 'count me'}]})
    });
    t.is(counted.status, 200, await counted.clone().text());
    t.true(((await counted.json()) as {input_tokens: number}).input_tokens > 0);
    // A streamed answer the client leaves after its first bytes.
    const controller = new AbortController();
    const streamed = await fetch(`${requester.daemon.baseUrl}/completions`, {
        method: 'POST', headers: {'content-type': 'application/json'}, signal: controller.signal,
        body: JSON.stringify({model: 'demo', prompt: 'left mid-answer', max_tokens: 3000, temperature: 0, stream: true})
    });
    await streamed.body!.getReader().read();
    controller.abort();
    await waitFor(async () => (await fetchStatus(requester.daemon, '/api/node')).requests.active === 0, 15_000);
    const after = await complete(requester, 'served after the client left');
    t.is(after.status, 200, JSON.stringify(after.body));
    await waitFor(async () => {
        const entry = (await wallet(provider)).paidBy.find((item) => item.channel === channel)!;
        return entry.vouched === entry.owed && entry.owed === (await wallet(requester)).paying.find((item) => item.channel === channel)!.paid;
    }, 15_000);
    t.false(provider.daemon.logs.some((line) => String(line.msg).includes('voucher does not pay')));
});

test.serial('--auto-deposit opens a channel as a job needs it, within its cap', async (t) => {
    const funded = await evm.fundedWallet(100n);
    const auto = await startNode(funded.privateKey, ['--auto-deposit', '50']);
    await waitForPeers(auto.daemon, [provider.id, requester.id], 30_000, (peers) => peers.some((peer) => peer.capabilities.payment?.wallet === provider.wallet.address));
    const reply = await complete(auto, 'auto deposit');
    t.is(reply.status, 200, JSON.stringify(reply.body));
    const own = await wallet(auto);
    t.is(own.paying.length, 1);
    // A tenth of the cap: the job's worst case is less.
    t.like(own.paying[0], {peer: provider.id, deposited: '5.0'});
    t.like(own.autoDeposit, {cap: '50.0', used: '5.0'});
    await waitFor(async () => (await wallet(auto)).paying[0]!.paid === weiToDoge(costOf([reply.body.usage!])), 15_000);
    await auto.daemon.stop();
});

/** A job paid, its voucher held by the provider and not yet redeemed: the channel. */
async function paidJob(t: {is: (a: unknown, b: unknown, m?: string) => void}, prompt: string) {
    const channel = (await wallet(requester)).paying[0]!.channel;
    const reply = await complete(requester, prompt);
    t.is(reply.status, 200, JSON.stringify(reply.body));
    await waitFor(async () => {
        const entry = (await wallet(provider)).paidBy.find((item) => item.channel === channel)!;
        return entry.vouched === entry.owed && entry.vouched !== entry.redeemed
            && entry.vouched === (await wallet(requester)).paying.find((item) => item.channel === channel)!.paid;
    }, 15_000);
    return channel;
}

/** The redeem transaction the provider saved, once it is saved (before it is sent). */
async function savedRedeem() {
    const path = join(provider.dataDir, 'ledger', 'redeem-state.json');
    let txHash = '';
    await waitFor(async () => {
        txHash = /"txHash":"(0x[0-9a-f]{64})"/.exec(await readFile(path, 'utf8').catch(() => ''))?.[1] ?? '';
        return txHash !== '';
    }, 30_000, 20);
    return txHash;
}

test.serial('chain stopped while redeeming, then back: paid once, recorded once', async (t) => {
    const channel = await paidJob(t, 'paid while the chain sleeps');
    const eventsBefore = (await redeemedEvents(channel)).length;
    // Blocks only when asked: the redeem is sent and waits to be mined while the chain stops.
    await evm.send('evm_setAutomine', [false]);
    try {
        const redeeming = walletAction(provider, 'redeem').catch((error: Error) => error);
        const txHash = await savedRedeem();
        await waitFor(async () => await evm.send('eth_getTransactionByHash', [txHash]) !== null, 30_000, 50);
        evm.pause();
        await setTimeout(3000);
        evm.resume();
        await evm.mine(1);
        const outcome = await redeeming;
        // Either this call saw it through, or it gave up and the next attempt finished the same transaction.
        if (outcome instanceof Error)
            await walletAction(provider, 'redeem');
    } finally {
        evm.resume();
        await evm.send('evm_setAutomine', [true]);
    }
    await waitFor(async () => (await wallet(provider)).redeeming.pending.length === 0, 30_000);
    t.is((await redeemedEvents(channel)).length, eventsBefore + 1);
    const own = (await wallet(provider)).paidBy.find((item) => item.channel === channel)!;
    t.is(own.redeemed, own.vouched);
    // The log's newest records hold this redeem once, under the transaction the chain has.
    const last = (await redeemedEvents(channel)).at(-1)!;
    t.is((await redeemRecords(channel)).filter((record) => record.txHash === last.transactionHash).length, 1);
});

test.serial('SIGKILL of the provider between sending the redeem and recording it: after a restart, paid once and logged once', async (t) => {
    const channel = await paidJob(t, 'paid, then the provider dies');
    const eventsBefore = (await redeemedEvents(channel)).length;
    await evm.send('evm_setAutomine', [false]);
    try {
        void walletAction(provider, 'redeem').catch(() => undefined);
        const txHash = await savedRedeem();
        // Sent (the chain has it), not mined, so not recorded: now the provider dies.
        await waitFor(async () => await evm.send('eth_getTransactionByHash', [txHash]) !== null, 30_000, 50);
        await provider.daemon.stop('SIGKILL');
        await evm.mine(1);
    } finally {
        await evm.send('evm_setAutomine', [true]);
    }
    await restart(provider);
    const events = await redeemedEvents(channel);
    t.is(events.length, eventsBefore + 1);
    const recorded = async () => (await redeemRecords(channel)).filter((record) => record.txHash === events.at(-1)!.transactionHash).length;
    await waitFor(async () => (await wallet(provider)).redeeming.pending.length === 0 && await recorded() > 0, 60_000, 200);
    t.is(await recorded(), 1);
    // Nothing left to redeem: the restarted node does not pay itself twice.
    t.deepEqual((await walletAction(provider, 'redeem')).transactions, []);
    await waitForPeers(requester.daemon, [provider.id], 30_000, (peers) => peers.every((peer) => peer.capabilities.models.some((model) => model.loaded)));
});

/** A hostile requester in this process: its own node key and wallet (bound), its own channel, and its own idea of paying. */
async function hostileRequester<P extends RequesterPayments>(payments: (channel: string, payer: Wallet) => P | undefined, deposit = 20n * 10n ** 18n) {
    const identity = nodeIdentity();
    const payer = await evm.fundedWallet(100n);
    const chain = {rpcUrl: evm.url, chainId: evm.chainId, contract};
    const {channel} = await openChannel(chain, payer, provider.wallet.address, deposit);
    const binding = bindWallet(identity, payer, contract, {network: 'public', chainId: evm.chainId});
    const jobs = new JobsProtocol();
    const swarm = testSwarmNode(testnet.bootstrap, 'public', {identity, capabilities: () => capabilitiesFixture({payment: binding})});
    swarm.use(jobs);
    const policy = payments(channel.toLowerCase(), payer);
    const requester = new JobRequester({jobs, identity, domain: {network: 'public', chainId: evm.chainId}, ...(policy && {payments: policy})});
    await swarm.start();
    await waitFor(() => swarm.peer(provider.id)?.capabilities.payment !== undefined, 30_000);
    cleanups.push(() => swarm.stop());
    const generate = (prompt: string) => requester.generate(provider.id, {
        kind: 'completion', model: 'demo', prompt, sampling: {temperature: 0, stop: [], maxTokens: 8, responseFormat: {type: 'text'}}
    }, {onText: () => undefined, deadlines: {firstTokenMs: 30_000, tokenMs: 30_000}, tokenCap: 8,
        model: {sha256: swarm.peer(provider.id)!.capabilities.models[0]?.sha256 ?? null, vouchedBytes: 0},
        capabilities: swarm.peer(provider.id)!.capabilities});
    return {payer, channel: channel.toLowerCase(), generate, policy, stop: () => swarm.stop()};
}

/** Pays the first job honestly, then `second` decides the voucher of the second; the cost so far is what was paid honestly. */
function payingPolicy(second: (honest: {channel: string, amount: bigint}, first: WireVoucher, payer: Wallet) => WireVoucher | undefined) {
    return (channel: string, payer: Wallet): RequesterPayments & {settle: () => void} => {
        let signed = 0n;
        let first: WireVoucher | undefined;
        /** Whether the next terms carry the honest voucher for all served so far, as an owing requester's do. */
        let settling = false;
        return {
            cannotPay: () => undefined,
            reserve: async () => (settling
                ? {channel, pricePerMillion: PRICE, voucher: voucherJson(signVoucher(payer.signingKey, {chainId: evm.chainId, contract}, {channel, amount: signed}))}
                : {channel, pricePerMillion: PRICE}),
            settle: () => {
                settling = true;
            },
            pay: async (_peerId, _jobId, tokens) => {
                signed += jobCostWei(tokens, PRICE_WEI);
                const honest = voucherJson(signVoucher(payer.signingKey, {chainId: evm.chainId, contract}, {channel, amount: signed}));
                if (first === undefined) {
                    first = honest;
                    return honest;
                }
                return second({channel, amount: signed}, first, payer);
            },
            release: () => undefined
        };
    };
}

const refusalOf = (promise: Promise<unknown>) => promise.then(() => 'served', (error: Error & {code?: string}) => `${error.code}: ${error.message}`);

test.serial('a priced job without terms, on another\'s channel, or beyond its channel\'s deposit is refused with the reason', async (t) => {
    const withoutTerms = await hostileRequester(() => undefined);
    t.regex(await refusalOf(withoutTerms.generate('no terms')), /^payment_required: .*needs payment terms/);
    const someoneElses = (await wallet(requester)).paying[0]!.channel;
    const borrowed = await hostileRequester(() => ({cannotPay: () => undefined, reserve: async () => ({channel: someoneElses, pricePerMillion: PRICE}),
        pay: async () => undefined, release: () => undefined}));
    t.regex(await refusalOf(borrowed.generate('on another\'s channel')), /^payment_required: .*is not the wallet the requester announces/);
    const drained = await hostileRequester((channel) => ({cannotPay: () => undefined, reserve: async () => ({channel, pricePerMillion: PRICE}),
        pay: async () => undefined, release: () => undefined}), 10n ** 15n);
    t.regex(await refusalOf(drained.generate('a drained channel')), /^payment_required: .*deposit leaves 0\.001 DOGE, less than this job's worst case/);
    const cheap = await hostileRequester((channel) => ({cannotPay: () => undefined, reserve: async () => ({channel, pricePerMillion: PRICE / 2}),
        pay: async () => undefined, release: () => undefined}));
    t.regex(await refusalOf(cheap.generate('below the price')), /^payment_required: .*this node's price is 1000/);
    for (const requesterNode of [withoutTerms, borrowed, drained, cheap])
        await requesterNode.stop();
});

for (const [name, second, reason] of [
    ['a voucher for another chain', (honest, _first, payer) => voucherJson(signVoucher(payer.signingKey, {chainId: 1, contract}, honest)), /not signed by its payer/],
    ['a voucher for another contract', (honest, _first, payer) => voucherJson(signVoucher(payer.signingKey, {chainId: evm.chainId, contract: Wallet.createRandom().address}, honest)),
        /not signed by its payer/],
    ['a voucher with a bad signature', (honest) => voucherJson(signVoucher(Wallet.createRandom().signingKey, {chainId: evm.chainId, contract}, honest)), /not signed by its payer/],
    ['the old voucher replayed', (_honest, first) => first, /not above the .* DOGE held already/],
    ['no voucher at all', () => undefined, /came without a voucher/]
] as [string, (honest: {channel: string, amount: bigint}, first: WireVoucher, payer: Wallet) => WireVoucher | undefined, RegExp][]) {
    test.serial(`${name} with a job's receipt: refused with the reason, the requester gets no job until it pays, nothing paid twice or lost`, async (t) => {
        const hostile = await hostileRequester(payingPolicy(second));
        t.is(await refusalOf(hostile.generate('paid honestly')), 'served');
        const logged = provider.daemon.logs.length;
        t.is(await refusalOf(hostile.generate('paid badly')), 'served');
        await waitFor(() => provider.daemon.logs.slice(logged).some((line) => String(line.msg).includes('voucher does not pay')), 15_000);
        const warning = provider.daemon.logs.slice(logged).find((line) => String(line.msg).includes('voucher does not pay'))!;
        t.regex(String(warning.reason), reason);
        t.regex(await refusalOf(hostile.generate('one more')), /^payment_required: .*owes .* DOGE for jobs served/);
        // Paying up with the next job's terms clears the debt: the provider serves it again.
        hostile.policy!.settle();
        t.is(await refusalOf(hostile.generate('paid up')), 'served');
        // The provider holds the honest voucher and redeems exactly it: the bad one pays nothing.
        const held = (await wallet(provider)).paidBy.find((entry) => entry.channel === hostile.channel)!;
        await walletAction(provider, 'redeem');
        const state = (await readChannel({rpcUrl: evm.url, chainId: evm.chainId, contract}, hostile.channel))!;
        t.is(weiToDoge(state.redeemed), held.vouched);
        t.true(state.redeemed > 0n);
        t.is((await redeemedEvents(hostile.channel)).length, 1);
        await hostile.stop();
    });
}

test.serial('a redeem of more than the payer signed reverts on chain', async (t) => {
    const channel = (await wallet(requester)).paying[0]!.channel;
    const state = (await readChannel({rpcUrl: evm.url, chainId: evm.chainId, contract}, channel))!;
    // A voucher the payer signed for one wei above what was redeemed; the payee asks for one more.
    const signed = signVoucher(requester.wallet.signingKey, {chainId: evm.chainId, contract}, {channel, amount: state.redeemed + 1n});
    const chain = new JsonRpcProvider(evm.url, evm.chainId, {staticNetwork: true});
    const payments = new Contract(contract, paymentChannelsAbi, new Wallet(evm.accounts[1]!, chain));
    const redeem = (amount: bigint) => payments.getFunction('redeem').staticCall(channel, amount, signed.signature)
        .then(() => 'paid', (failure: {data?: string}) => payments.interface.parseError(failure.data ?? '0x')?.name ?? 'unknown');
    try {
        t.is(await redeem(signed.amount + 1n), 'BadSignature');
        t.is(await redeem(signed.amount), 'paid');
    } finally {
        chain.destroy();
    }
});

test.serial('close, a redeem during the challenge period still pays, withdraw after it returns the rest', async (t) => {
    const channel = await paidJob(t, 'the last job before closing');
    const closed = await walletAction(requester, 'close', {peer: provider.id});
    t.is(closed.transactions[0]!.action, 'close');
    t.truthy((await wallet(requester)).paying.find((item) => item.channel === channel)!.closesAt);
    // A closing channel takes no new job.
    const refused = await complete(requester, 'after closing');
    t.is(refused.status, 402, JSON.stringify(refused.body));
    // The provider may still redeem for 24 h.
    const paid = await walletAction(provider, 'redeem');
    t.is(paid.transactions.length, 1);
    const chain = {rpcUrl: evm.url, chainId: evm.chainId, contract};
    const state = (await readChannel(chain, channel))!;
    t.is(weiToDoge(state.redeemed), (await wallet(requester)).paying.find((item) => item.channel === channel)!.paid);
    const early = await fetch(`${requester.daemon.origin}/api/wallet/withdraw`, {method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify({peer: provider.id})});
    t.is(early.status, 409, 'before the challenge period is over');
    await evm.send('evm_increaseTime', [24 * 3600 + 1]);
    await evm.mine(1);
    const before = await balanceOf(requester.wallet.address);
    const withdrawn = await walletAction(requester, 'withdraw', {peer: provider.id});
    t.is(withdrawn.transactions[0]!.amount, weiToDoge(state.deposited - state.redeemed));
    const after = (await readChannel(chain, channel))!;
    t.is(after.deposited, state.redeemed);
    t.true(await balanceOf(requester.wallet.address) > before);
});
