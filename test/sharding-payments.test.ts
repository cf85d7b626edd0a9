/**
 * Paying a pipeline's priced hosts, end to end (docs/peer-protocol.md, "Paying a priced host"; docs/architecture.md,
 * "Payments"): a coordinator daemon serving the demo model as a pipeline over two host daemons at different prices,
 * on a loopback testnet, real rpc servers, and a real EVM (hardhat, chain id 2000) holding the payment contract. The
 * coordinator pays each host's shard receipts its stage's share at its price, and each host redeems exactly that.
 */
import {type ChildProcess, spawn} from 'node:child_process';
import {once} from 'node:events';
import test from 'ava';
import {Contract, JsonRpcProvider, Wallet} from 'ethers';
import type {Testnet} from 'hyperdht/testnet.js';
import OpenAI from 'openai';
import {startDaemon, waitFor, type DaemonHandle} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {singleProcessTexts} from '../harness/generation-requests.js';
import {type EvmNode, startEvmNode} from '../harness/evm-node.js';
import {fetchStatus} from '../harness/node-status.js';
import {testRpcBinaries} from '../harness/rpc-binaries.js';
import {nodeIdOf, startSwarmDaemon, startTestnet, waitForPeers} from '../harness/swarm-fixture.js';
import {shardPaymentKey} from '../inference/sharded/tunnel/shard-payments.js';
import {paymentChannelsAbi} from '../ledger/generated/payment-channels.js';
import {deployPaymentContract, readChannel} from '../ledger/payments/channels.js';
import {priceWeiPerMillion, stageCostWei, weiToDoge} from '../ledger/payments/pricing.js';
import type {ShardReceipt} from '../ledger/records.js';
import type {WalletActionStatus} from '../node/node-status.js';

const MiB = 2 ** 20;
/** sharding.test.ts' model: room for three layers a node (below) makes the plan need all three nodes. */
const MODEL = {layers: 8, width: 256, feedForwardLength: 512, endsText: false};
const CONTEXT = 512;
const NETWORK = 'sharding-payments';
const PROMPTS = ['Once upon a time', 'The quick brown fox', 'In a small village'];
const TOKENS = 32;
/** The hosts' prices, DOGE per million tokens: a stage's window (8,192 tokens at its share) is a few DOGE. */
const PRICES = [1000, 2000];
/** What the coordinator deposits in each host's channel, DOGE. */
const DEPOSIT = '50';
/** Each wallet's funds: 1000 DOGE. */
/**
 * How long the coordinator may take to serve: the hosts it could not pay are left out for the coordinator's failure
 * cooldown (60 s) before it plans with them again, and the machine may be busy.
 */
const COORDINATOR_READY_MS = 400_000;

interface Node {
    daemon: {origin: string},
    id: string,
    wallet: Wallet,
    price: number
}

let testnet: Testnet;
let bootstrap: string;
let evm: EvmNode;
let contract: string;
let hosts: Node[];
let coordinator: Node;
/** The coordinator once /health says its pipeline serves. */
let coordinatorReady: Promise<DaemonHandle>;
/** What the same model answers whole, in one process, to each prompt. */
const expectedTexts: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

const chainFlags = () => ['--chain-rpc', evm.url, '--chain-id', String(evm.chainId), '--confirmations', '1', '--payment-contract', contract];

/** A data dir holding the demo model, and the flags every node of the test shares with `extra`. */
async function nodeArgs(extra: string[]) {
    const fixture = await createDataDirWithDemoModel(MODEL);
    cleanups.push(fixture.cleanup);
    return {dataDir: fixture.dataDir, args: ['--network', NETWORK, '--context-size', String(CONTEXT), '--parallel', '2', ...chainFlags(), ...extra]};
}

/** A host for the pipeline's layers at `price`, with a wallet; it redeems only when asked. */
async function startHost(price: number): Promise<Node> {
    const wallet = await evm.fundedWallet();
    const {dataDir, args} = await nodeArgs(['--max-shard-memory', String(15 * MiB), '--price', String(price), '--redeem-threshold', '1000000', '--redeem-interval', '43200']);
    const daemon = await startSwarmDaemon(bootstrap, dataDir, args, {env: {STRONGDOGE_WALLET_KEY: wallet.privateKey}});
    cleanups.push(() => daemon.stop('SIGKILL'));
    return {daemon, id: await nodeIdOf(daemon), wallet, price};
}

/**
 * Starts the coordinator and resolves once its API listens, not once it is ready (startDaemon waits for /health,
 * which answers 200 only once the pipeline serves, and it cannot form before the coordinator opens channels through
 * that API): its origin, and the handle once ready.
 */
async function startCoordinator(): Promise<Node> {
    const wallet = await evm.fundedWallet();
    // It serves the pipeline's model and offers peers no memory for layers.
    const {dataDir, args} = await nodeArgs(['--model', 'demo', '--shard', 'always', '--max-stages', '3', '--memory-limit', String(15 * MiB), '--max-shard-memory', '0']);
    let child: ChildProcess | undefined;
    cleanups.push(async () => {
        if (child !== undefined && child.exitCode === null && child.signalCode === null) {
            const exited = once(child, 'exit');
            child.kill('SIGKILL');
            await exited;
        }
    });
    const origin = await new Promise<string>((resolve, reject) => {
        coordinatorReady = startDaemon(['--bootstrap', bootstrap, '--data-dir', dataDir, '--threads', '1', ...args], {
            env: {STRONGDOGE_WALLET_KEY: wallet.privateKey}, readyTimeoutMs: COORDINATOR_READY_MS,
            launch: (command, commandArgs, options) => (child = spawn(command, commandArgs, options)),
            reach: async (logged) => {
                resolve(logged);
                return logged;
            }
        });
        coordinatorReady.catch(reject);
    });
    const daemon = {origin};
    return {daemon, id: (await fetchStatus(daemon, '/api/node')).id, wallet, price: 0};
}

const cluster = (node: Node) => fetchStatus(node.daemon, '/api/cluster');
const wallet = (node: Node) => fetchStatus(node.daemon, '/api/wallet');
const recent = async (node: Node) => (await fetchStatus(node.daemon, '/api/ledger')).recent;
const client = (daemon: {origin: string}) => new OpenAI({baseURL: `${daemon.origin}/v1`, apiKey: 'x', maxRetries: 0});

async function walletAction(node: Node, action: string, body: object = {}) {
    const response = await fetch(`${node.daemon.origin}/api/wallet/${action}`, {
        method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify(body)
    });
    const json = await response.json() as WalletActionStatus;
    if (response.status !== 200)
        throw new Error(`${action}: ${response.status} ${JSON.stringify(json)}`);
    return json;
}

/** The shard receipts a host countersigned, in session order. */
async function hostReceipts(host: Node) {
    return (await recent(host)).flatMap((record) => (record.type === 'shard' ? [record.receipt] : []))
        .sort((a, b) => a.body.sequence - b.body.sequence);
}

/** What the receipts owe the host: each its stage's share of its tokens at the host's price, rounded down to wei. */
const receiptsCost = (host: Node, receipts: ShardReceipt[]) => receipts.reduce((sum, {body}) =>
    sum + stageCostWei(body.tokens, priceWeiPerMillion(host.price), body.lastLayer - body.firstLayer + 1, body.layerCount), 0n);

function redeemedEvents(channel: string) {
    const chain = new JsonRpcProvider(evm.url, evm.chainId, {staticNetwork: true});
    const payments = new Contract(contract, paymentChannelsAbi, chain);
    return payments.queryFilter(payments.filters.Redeemed!(channel)).finally(() => chain.destroy());
}

test.before(async (t) => {
    t.timeout(600_000);
    await testRpcBinaries(); // every daemon uses this build (harness/cli-process.ts)
    ({testnet, bootstrap} = await startTestnet());
    evm = await startEvmNode();
    ({address: contract} = await deployPaymentContract({rpcUrl: evm.url, chainId: evm.chainId}, new Wallet(evm.accounts[2]!)));
    // The same model whole, in one process: what the paid pipeline must answer token for token.
    const fixture = await createDataDirWithDemoModel(MODEL);
    cleanups.push(fixture.cleanup);
    expectedTexts.push(...await singleProcessTexts(fixture.dataDir, PROMPTS, {maxTokens: TOKENS, contextSize: CONTEXT}));
    hosts = await Promise.all(PRICES.map((price) => startHost(price)));
    coordinator = await startCoordinator();
    await waitForPeers(coordinator.daemon as DaemonHandle, hosts.map((host) => host.id), 60_000, (peers) => peers.every((peer) => peer.capabilities.payment !== undefined
        && hosts.some((host) => host.id === peer.id && peer.capabilities.payment?.wallet === host.wallet.address && peer.capabilities.pricePerMillionTokens === host.price)));
});

test.after.always(async () => {
    for (const cleanup of cleanups.reverse())
        await cleanup().catch(() => undefined);
    await evm?.stop();
    await testnet?.destroy();
});

test.serial('a coordinator with no channel to the priced hosts leaves them out, without blaming them, and says why', async (t) => {
    t.timeout(240_000);
    // The plan needs both hosts; the coordinator cannot hold either's first window, so no session opens.
    let failures: {peer: string, reason: string}[] = [];
    await waitFor(async () => {
        failures = (await cluster(coordinator)).pipelines[0]?.failures ?? [];
        return hosts.every((host) => failures.some((failure) => failure.peer === host.id));
    }, 180_000, 200);
    for (const host of hosts) {
        const failure = failures.find((candidate) => candidate.peer === host.id)!;
        t.regex(failure.reason, new RegExp(`^cannot open a shard session: cannot pay the host ${host.price} DOGE per million tokens: .*no channel.*wallet deposit`), failure.reason);
    }
    const pipeline = (await cluster(coordinator)).pipelines[0]!;
    t.not(pipeline.state, 'ready');
    t.is(pipeline.failovers, 0);
    t.is((await fetch(`${coordinator.daemon.origin}/health`)).status, 503);
    // Left out, not counted as failed requests.
    for (const peer of (await fetchStatus(coordinator.daemon, '/api/peers')).peers)
        t.is(peer.requests.sent, peer.requests.succeeded, JSON.stringify(peer.requests));
    // Nothing reached the hosts: no session, no channel, no receipt.
    for (const host of hosts) {
        t.like((await cluster(host)).hosting, {available: true, sessions: 0});
        t.deepEqual((await wallet(host)).paidBy, []);
        t.deepEqual(await hostReceipts(host), []);
    }
    t.deepEqual((await wallet(coordinator)).paying, []);
});

test.serial('with a channel to each host the pipeline forms; each host is paid its share of every receipt and redeems exactly it', async (t) => {
    t.timeout(COORDINATOR_READY_MS + 120_000);
    const channels = new Map<string, string>();
    for (const host of hosts) {
        const opened = await walletAction(coordinator, 'deposit', {peer: host.id, amount: DEPOSIT});
        t.is(opened.transactions[0]!.action, 'open');
        channels.set(host.id, opened.transactions[0]!.channel);
    }
    // Once the hosts' cooldown ends the coordinator plans with them again, and /health says the pipeline serves.
    const ready = await coordinatorReady.catch(async (error: Error) => {
        throw new Error(`${error.message}: ${JSON.stringify(await cluster(coordinator))}`);
    });
    const pipeline = (await cluster(coordinator)).pipelines[0]!;
    t.is(pipeline.state, 'ready');
    t.is(pipeline.stages.length, 3);
    t.deepEqual(pipeline.stages.slice(1).map((stage) => stage.peer).sort(), hosts.map((host) => host.id).sort());
    for (const host of hosts)
        t.like((await cluster(host)).hosting, {sessions: 1});

    for (const [index, prompt] of PROMPTS.entries()) {
        const reply = await client(coordinator.daemon).completions.create({model: 'demo', prompt, max_tokens: TOKENS, temperature: 0});
        t.is(reply.choices[0]!.text, expectedTexts[index]!, 'the paid pipeline answers as one process does');
    }

    const coordinatorRecords = async () => recent(coordinator);
    let totalPaid = 0n;
    for (const host of hosts) {
        const channel = channels.get(host.id)!;
        const stage = pipeline.stages.find((candidate) => candidate.peer === host.id)!;
        // One receipt a request, each followed by its voucher: the host vouched exactly what its receipts cost.
        await waitFor(async () => (await hostReceipts(host)).length === PROMPTS.length, 30_000, 100);
        const receipts = await hostReceipts(host);
        const cost = receiptsCost(host, receipts);
        t.true(cost > 0n);
        for (const {body} of receipts)
            t.like(body, {coordinator: coordinator.id, host: host.id, firstLayer: stage.layers![0], lastLayer: stage.layers![1], layerCount: MODEL.layers, tokens: TOKENS});
        await waitFor(async () => (await wallet(host)).paidBy.find((entry) => entry.channel === channel)?.vouched === weiToDoge(cost), 30_000, 100)
            .catch(async (error: Error) => {
                throw new Error(`${error.message}: expected ${weiToDoge(cost)}; ${JSON.stringify((await wallet(host)).paidBy)}; logs ${JSON.stringify(ready.logs.filter((line) => Number(line.level) >= 40).slice(-10))}`);
            });
        t.like((await wallet(host)).paidBy.find((entry) => entry.channel === channel), {peer: coordinator.id, payer: coordinator.wallet.address,
            deposited: `${DEPOSIT}.0`, vouched: weiToDoge(cost), owed: weiToDoge(cost), redeemed: '0.0'});
        t.like((await wallet(coordinator)).paying.find((entry) => entry.channel === channel), {peer: host.id, payee: host.wallet.address,
            deposited: `${DEPOSIT}.0`, paid: weiToDoge(cost)});
        // Each receipt's voucher, keyed alike on both sides, counts up by the receipt's cost.
        const keys = receipts.map(({body}) => shardPaymentKey(body.session, body.sequence));
        const vouchers = (await recent(host)).flatMap((record) => (record.type === 'voucher' && record.channel === channel ? [record] : []));
        const payments = (await coordinatorRecords()).flatMap((record) => (record.type === 'payment' && record.channel === channel ? [record] : []));
        for (const records of [vouchers, payments]) {
            const byKey = new Map(records.map((record) => [record.jobId, record]));
            t.deepEqual([...byKey.keys()].sort(), [...keys].sort());
            let cumulative = 0n;
            for (const [index, key] of keys.entries()) {
                const receiptCost = receiptsCost(host, [receipts[index]!]);
                cumulative += receiptCost;
                t.like(byKey.get(key), {cost: receiptCost.toString(), amount: cumulative.toString()});
            }
        }

        const redeemed = await walletAction(host, 'redeem');
        t.is(redeemed.transactions.length, 1);
        t.like(redeemed.transactions[0], {action: 'redeem', channel, amount: weiToDoge(cost)});
        const state = (await readChannel({rpcUrl: evm.url, chainId: evm.chainId, contract}, channel))!;
        t.is(state.redeemed, cost);
        const events = await redeemedEvents(channel);
        t.is(events.length, 1);
        const args = (events[0] as unknown as {args: {payee: string, amount: bigint, redeemed: bigint}}).args;
        t.like({payee: args.payee, amount: args.amount, redeemed: args.redeemed}, {payee: host.wallet.address, amount: cost, redeemed: cost});
        t.like(await wallet(host), {earned: weiToDoge(cost), owed: '0.0'});
        t.deepEqual((await walletAction(host, 'redeem')).transactions, [], 'nothing more to redeem');
        totalPaid += cost;
        t.log(`host at ${host.price} DOGE/M, layers ${stage.layers!.join('-')} of ${MODEL.layers}: ${receipts.length} receipts, ${weiToDoge(cost)} DOGE vouched and redeemed`);
    }
    // The coordinator paid what the hosts redeemed, and nothing else.
    t.like(await wallet(coordinator), {paid: weiToDoge(totalPaid), deposited: `${Number(DEPOSIT) * hosts.length}.0`});
});
