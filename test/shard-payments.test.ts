import {setTimeout} from 'node:timers/promises';
/**
 * Paying a pipeline's priced hosts (docs/peer-protocol.md, "Shard channel"; docs/architecture.md, "Payments"): real
 * swarm nodes on a loopback testnet speaking the shard channel, each with the node's payments (node/node-payments.ts)
 * on a real EVM (hardhat, chain id 2000) holding the payment contract. The hosts' sessions are served by a stand-in
 * whose pass count the test sets, as in test/shard-receipts.test.ts.
 */
import {mkdtemp, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import test, {type ExecutionContext} from 'ava';
import {Wallet} from 'ethers';
import type {Testnet} from 'hyperdht/testnet.js';
import {resolveNodeSettings} from '../cli/config/node-config.js';
import {type SessionRequestBody, sessionRequestProblem, signSessionRequest} from '../inference/sharded/tunnel/session-request.js';
import {shardControlSchema} from '../inference/sharded/tunnel/shard-messages.js';
import {PAYMENT_WINDOW_TOKENS_PER_SEQUENCE, paymentWindowTokens, shardPaymentKey, type ShardPayments} from '../inference/sharded/tunnel/shard-payments.js';
import {type CoordinatorSession, type HostedSession, ShardProtocol, ShardSessionError} from '../inference/sharded/tunnel/shard-protocol.js';
import {ContributionLog} from '../ledger/contribution-log.js';
import {signShardReceipt} from '../ledger/shard-receipt.js';
import {deployPaymentContract, readChannel} from '../ledger/payments/channels.js';
import {priceWeiPerMillion, stageCostWei, weiToDoge} from '../ledger/payments/pricing.js';
import type {ShardReceipt} from '../ledger/records.js';
import {NodePayments} from '../node/node-payments.js';
import {shortNodeId} from '../swarm/node-identity.js';
import type {SwarmNode} from '../swarm/swarm-node.js';
import {capabilitiesFixture} from '../harness/capabilities-fixture.js';
import {waitFor} from '../harness/cli-process.js';
import {type EvmNode, startEvmNode} from '../harness/evm-node.js';
import {keyPair, type KeyPair} from '../harness/ledger-fixture.js';
import {startTestnet, testSwarmNode} from '../harness/swarm-fixture.js';

/** DOGE per million tokens: 0.001 DOGE a token, so a stage's window (8,192 tokens × 8/32 of the layers) is 2.048 DOGE. */
const PRICE = 1000;
const PRICE_WEI = priceWeiPerMillion(PRICE);
const DOMAIN = {network: 'shard-payments', chainId: 2000};
/** Layers 8-15 of 32, two sequences decoded together. */
const REQUEST = {model: {id: 'demo', bytes: 4e9, sha256: null}, layers: [8, 15] as [number, number], layerCount: 32, sequences: 2, bytes: 1024};
const stageCost = (tokens: number) => stageCostWei(tokens, PRICE_WEI, 8, 32);
const WINDOW = stageCost(paymentWindowTokens(REQUEST.sequences));

let testnet: Testnet;
let evm: EvmNode;
let contract: string;

test.before(async () => {
    testnet = (await startTestnet()).testnet;
    evm = await startEvmNode();
    ({address: contract} = await deployPaymentContract({rpcUrl: evm.url, chainId: evm.chainId}, new Wallet(evm.accounts[2]!)));
});

test.after.always(async () => {
    await evm?.stop();
    await testnet?.destroy();
});

interface Party {
    keys: KeyPair,
    node: SwarmNode,
    protocol: ShardProtocol,
    payments: NodePayments,
    log: ContributionLog,
    /** Sessions opened here as host. */
    opened: number,
    /** Receipts this node countersigned as host, and those a host countersigned for it. */
    hosted: ShardReceipt[],
    consumed: ShardReceipt[],
    paymentProblems: string[]
}

interface PartyOptions {
    /** `--price`: what this node charges as a host; defaults to free. */
    price?: number,
    /** What it announces to peers; defaults to its price (null when free). */
    announce?: number | null,
    /** Hosts sessions, served by a stand-in that reports `passes.count` graph passes; defaults to not hosting. */
    passes?: {count: number},
    /** Changes what the shard channel asks of the payments (a coordinator that cheats or lies). */
    adapt?: (payments: ShardPayments) => ShardPayments
}

/** A node of `network` with a funded wallet and its payments, stopped when the test ends. */
async function party(t: ExecutionContext, network: string, options: PartyOptions = {}): Promise<Party> {
    const keys = keyPair();
    const identity = {...keys, shortId: shortNodeId(keys.publicKey)};
    const dataDir = await mkdtemp(join(tmpdir(), 'strongdoge-shard-pay-'));
    const wallet = await evm.fundedWallet();
    const log = await ContributionLog.open({directory: join(dataDir, 'log'), identity: keys, domain: DOMAIN});
    const settings = resolveNodeSettings(dataDir, {flags: {
        network, chainRpc: evm.url, chainId: DOMAIN.chainId, confirmations: 1, paymentContract: contract, redeemInterval: 43_200,
        ...(options.price !== undefined && {price: options.price})
    }, env: {}});
    let node: SwarmNode | undefined;
    const payments = await NodePayments.open({settings, identity, log, wallet: {wallet}, contract,
        peerCapabilities: (peerId) => node?.peer(peerId)?.capabilities, onNotice: () => undefined});
    const party: Party = {keys, node: undefined!, protocol: undefined!, payments, log, opened: 0, hosted: [], consumed: [], paymentProblems: []};
    const {passes} = options;
    party.protocol = new ShardProtocol({
        identity: keys, domain: DOMAIN, payments: options.adapt?.(payments) ?? payments,
        onShardReceipt: (_peer, receipt) => party.hosted.push(receipt),
        onShardConsumed: (_peer, receipt) => party.consumed.push(receipt),
        onPaymentProblem: (_peer, problem) => party.paymentProblems.push(problem),
        ...(passes !== undefined && {host: {open: async (): Promise<HostedSession> => {
            party.opened++;
            // Passes of one token per sequence.
            return {connect: (stream) => stream.close('nothing here'), end: () => undefined, graphComputes: () => passes.count,
                graphTokens: () => passes.count * REQUEST.sequences};
        }}})
    });
    const announced = options.announce === undefined ? options.price ?? null : options.announce;
    node = testSwarmNode(testnet.bootstrap, network, {identity, capabilities: () => capabilitiesFixture({pricePerMillionTokens: announced, payment: payments.binding()})});
    node.use(party.protocol);
    party.node = node;
    t.teardown(async () => {
        await node.stop();
        await payments.stop();
        await log.close();
        await rm(dataDir, {recursive: true, force: true});
    });
    await node.start();
    return party;
}

/** Waits until every party sees every other, with its payment wallet announced. */
async function connected(parties: Party[]) {
    await waitFor(async () => parties.every((party) => parties.every((other) => other === party
        || party.node.peer(other.node.id)?.capabilities.payment?.wallet !== undefined)), 20_000, 20);
}

const ended = (session: CoordinatorSession) => new Promise<string>((resolve) => session.once('ended', resolve));

/** What the host's payments say the coordinator's channel vouched so far. */
async function vouched(host: Party, channel: string) {
    return (await host.payments.describe()).paidBy.find((entry) => entry.channel === channel)?.vouched;
}

test('the terms are signed with the request and bounded; a free request signs the same bytes as before payments', (t) => {
    const coordinator = keyPair();
    const host = keyPair();
    const body: SessionRequestBody = {
        version: 1, ...DOMAIN, session: 'a'.repeat(64), coordinator: coordinator.id, host: host.id, model: {id: 'demo', bytes: 4e9, sha256: null},
        layers: [8, 15], layerCount: 32, sequences: 2, bytes: 1024, openedAt: new Date().toISOString()
    };
    const context = {peerId: coordinator.id, hostId: host.id, domain: DOMAIN};
    const terms = {channel: `0x${'c'.repeat(64)}`, pricePerMillion: PRICE};
    const paid = signSessionRequest({...body, payment: terms}, coordinator.secretKey);
    t.is(sessionRequestProblem(paid, context), undefined);
    t.regex(sessionRequestProblem({...paid, body: {...body}}, context)!, /signature is not the coordinator's/, 'terms stripped');
    t.regex(sessionRequestProblem({...paid, body: {...paid.body, payment: {...terms, pricePerMillion: 1}}}, context)!, /signature is not/, 'price lowered');
    // Signed as the protocol signed a request before it had terms: the absent field is left out.
    const free = signSessionRequest(body, coordinator.secretKey);
    t.is(sessionRequestProblem(free, context), undefined);
    t.is(free.signature, signSessionRequest({...body, payment: undefined}, coordinator.secretKey).signature);

    const open = (payment: unknown) => shardControlSchema.safeParse({type: 'open', session: 1, request: {...paid, body: {...paid.body, payment}}}).success;
    t.true(open(terms));
    for (const bad of [{...terms, channel: terms.channel.toUpperCase().replace('0X', '0x')}, {...terms, channel: '0x1234'}, {...terms, pricePerMillion: 0},
        {...terms, pricePerMillion: -1}, {...terms, pricePerMillion: 1e13}, {...terms, window: 1}, {channel: terms.channel}])
        t.false(open(bad), JSON.stringify(bad));
    const receipt = signShardReceipt({version: 2, ...DOMAIN, session: 'a'.repeat(64), sequence: 1, model: 'demo', modelBytes: 4e9, modelSha256: null,
        layerCount: 32, firstLayer: 8, lastLayer: 15, tokens: 10, computeMs: 5, host: host.id, coordinator: coordinator.id,
        completedAt: new Date().toISOString()}, coordinator.secretKey);
    const withVoucher = (voucher: unknown) => shardControlSchema.safeParse({type: 'receipt', session: 1, receipt, voucher}).success;
    const voucher = {channel: terms.channel, amount: '5000000000000000', signature: `0x${'1'.repeat(130)}`};
    t.true(withVoucher(voucher));
    t.true(withVoucher(undefined));
    for (const bad of [{...voucher, amount: '9'.repeat(81)}, {...voucher, signature: '1'.repeat(141)}, {...voucher, channel: 'c'.repeat(81)},
        {...voucher, payer: '0x0'}, {amount: '1'}, 'a voucher'])
        t.false(withVoucher(bad), JSON.stringify(bad));
});

test.serial('a priced host gets a voucher with every receipt: together the stages\' cost, logged on both sides and redeemable', async (t) => {
    const passes = {count: 0};
    const host = await party(t, 'shard-pay-paid', {price: PRICE, passes});
    const coordinator = await party(t, 'shard-pay-paid');
    await connected([host, coordinator]);
    const {transactions: [opened]} = await coordinator.payments.deposit(host.node.id, '10');
    const channel = opened!.channel;

    const session = await coordinator.protocol.openSession(host.node.id, REQUEST);
    t.deepEqual(session.request.payment, {channel, pricePerMillion: PRICE}, 'the signed request names its terms');
    passes.count = 100; // at most 200 tokens of 2 sequences
    const tokens = [12, 8, 30];
    for (const count of tokens)
        session.sendReceipt(count, 100);
    const total = tokens.reduce((sum, count) => sum + stageCost(count), 0n);
    t.true(total > 0n);
    const logged = (party: Party, type: string) => party.log.recent().filter((record) => record.type === type).reverse();
    // The host keeps a voucher (its payments' state) before it is in its log.
    await waitFor(async () => coordinator.consumed.length === 3 && await vouched(host, channel) === weiToDoge(total)
        && logged(host, 'voucher').length === 3, 15_000, 50);
    t.deepEqual(coordinator.consumed, host.hosted);
    t.false(session.ended);
    t.deepEqual([host.paymentProblems, coordinator.paymentProblems], [[], []]);

    // One voucher per receipt, each the cumulative amount, keyed by the session and the receipt's sequence.
    const vouchers = logged(host, 'voucher');
    const payments = logged(coordinator, 'payment');
    let cumulative = 0n;
    const expected = tokens.map((count, index) => {
        cumulative += stageCost(count);
        return {jobId: shardPaymentKey(session.request.session, index + 1), channel, cost: stageCost(count).toString(), amount: cumulative.toString()};
    });
    t.like(vouchers, expected.map((entry) => ({...entry, peer: coordinator.node.id})));
    t.like(payments, expected.map((entry) => ({...entry, peer: host.node.id})));
    t.like((await coordinator.payments.describe()).paying.find((entry) => entry.channel === channel), {paid: weiToDoge(total), deposited: '10.0'});

    // The host redeems what the vouchers say: exactly the stages' cost moves on chain.
    const redeemed = await host.payments.redeemNow();
    t.like(redeemed.transactions, [{action: 'redeem', channel, amount: weiToDoge(total)}]);
    t.is((await readChannel({rpcUrl: evm.url, chainId: evm.chainId, contract}, channel))!.redeemed, total);
});

test.serial('a coordinator that cannot pay a priced host is refused, each time saying why, and nothing is hosted', async (t) => {
    const passes = {count: 0};
    const host = await party(t, 'shard-pay-refused', {price: PRICE, passes});
    // Announces no price but charges one: its coordinators send no terms.
    const silent = await party(t, 'shard-pay-refused', {price: PRICE, announce: null, passes});
    const broke = await party(t, 'shard-pay-refused');
    const liar = await party(t, 'shard-pay-refused', {adapt: (payments) => ({...lent(payments),
        reserveWei: async () => `0x${'ab'.repeat(32)}`})});
    const thin = await party(t, 'shard-pay-refused', {adapt: (payments) => ({...lent(payments),
        // Holds nothing of its own, so a deposit below the window reaches the host.
        reserveWei: (peerId, capabilities, key) => payments.reserveWei(peerId, capabilities, key, 0n)})});
    await connected([host, silent, broke, liar, thin]);
    await thin.payments.deposit(host.node.id, '0.1');

    const refusal = async (coordinator: Party, to: Party) => {
        const error = await t.throwsAsync(coordinator.protocol.openSession(to.node.id, REQUEST), {instanceOf: ShardSessionError});
        return `${error.code}: ${error.message}`;
    };
    // Its own payments say it cannot pay: nothing is sent.
    t.regex(await refusal(broke, host), /^unpaid: cannot pay the host 1000 DOGE per million tokens: no channel to it with 2\.048 DOGE left .*wallet deposit/);
    t.regex(await refusal(broke, silent), /^refused: the session's payment is refused: this node charges 1000 DOGE per million tokens .*names no payment channel/);
    t.regex(await refusal(liar, host), /^refused: the session's payment is refused: the payment channel named does not exist/);
    t.regex(await refusal(thin, host), /^refused: the session's payment is refused: the channel's deposit leaves 0\.1 DOGE, less than this job's worst case of 2\.048 DOGE/);
    t.is(host.opened + silent.opened, 0, 'no session started');
    t.is(weiToDoge(WINDOW), '2.048', 'the window: 2 sequences of 4,096 tokens, a quarter of the layers');
    t.is(host.paymentProblems.length, 2, host.paymentProblems.join('\n'));
    t.is(silent.paymentProblems.length, 1, silent.paymentProblems.join('\n'));
    t.is(host.node.peers().length, 4, 'every coordinator stays connected');
});

test.serial('receipts sent as the coordinator ends its session still reach the host before the end, paid', async (t) => {
    const passes = {count: 0};
    const host = await party(t, 'shard-pay-ending', {price: PRICE, passes});
    const coordinator = await party(t, 'shard-pay-ending');
    await connected([host, coordinator]);
    const {transactions: [opened]} = await coordinator.payments.deposit(host.node.id, '10');
    const session = await coordinator.protocol.openSession(host.node.id, REQUEST);
    passes.count = 100;
    const tokens = [12, 8, 30];
    for (const count of tokens)
        session.sendReceipt(count, 10);
    session.end('the pipeline is done');
    const total = tokens.reduce((sum, count) => sum + stageCost(count), 0n);
    await waitFor(async () => host.hosted.length === 3 && await vouched(host, opened!.channel) === weiToDoge(total), 15_000, 50);
    t.deepEqual([host.paymentProblems, coordinator.paymentProblems], [[], []]);
    t.is((await host.payments.describe()).paidBy[0]!.owed, weiToDoge(total));
});

test.serial('a priced session whose coordinator keeps its receipts back ends once its server ran four windows of passes past the last receipt', async (t) => {
    const passes = {count: 0};
    const host = await party(t, 'shard-pay-unpaid', {price: PRICE, passes});
    const coordinator = await party(t, 'shard-pay-unpaid');
    await connected([host, coordinator]);
    await coordinator.payments.deposit(host.node.id, '10');
    const session = await coordinator.protocol.openSession(host.node.id, REQUEST);
    const ending = ended(session);
    passes.count = 100;
    session.sendReceipt(20, 10);
    await waitFor(() => host.hosted.length === 1, 15_000, 50);
    // Up to four windows past the receipt: served.
    passes.count = 100 + 4 * PAYMENT_WINDOW_TOKENS_PER_SEQUENCE;
    await setTimeout(2500);
    t.false(session.ended);
    passes.count += 1;
    t.regex(await ending, /sent no receipt for 16385 passes/);
});

test.serial('a short, missing or forged voucher ends that coordinator\'s session only, and it gets no more work while it owes', async (t) => {
    const passes = {count: 0};
    const network = 'shard-pay-debts';
    const host = await party(t, network, {price: PRICE, passes});
    const honest = await party(t, network);
    const short = await party(t, network, {adapt: (payments) => ({...lent(payments), payWei: (peerId, key, cost) => payments.payWei(peerId, key, cost / 2n)})});
    const missing = await party(t, network, {adapt: (payments) => ({...lent(payments), payWei: async (peerId, key, cost) => {
        await payments.payWei(peerId, key, cost);
        return undefined;
    }})});
    const forged = await party(t, network, {adapt: (payments) => ({...lent(payments), payWei: async (peerId, key, cost) => {
        const voucher = (await payments.payWei(peerId, key, cost))!;
        return {...voucher, signature: `0x${'11'.repeat(65)}`};
    }})});
    const coordinators = [honest, short, missing, forged];
    await connected([host, ...coordinators]);
    for (const coordinator of coordinators)
        await coordinator.payments.deposit(host.node.id, '10');
    const sessions = await Promise.all(coordinators.map((coordinator) => coordinator.protocol.openSession(host.node.id, REQUEST)));
    const endings = sessions.map(ended);
    passes.count = 1000;
    for (const session of sessions)
        session.sendReceipt(20, 10);

    const [, shortEnd, missingEnd, forgedEnd] = endings;
    t.regex(await shortEnd!, /refused the coordinator's voucher for shard receipt 1: a voucher of 0\.0025 DOGE for work worth 0\.005 DOGE: 0\.0025 DOGE short/);
    t.regex(await missingEnd!, /refused the coordinator's voucher for shard receipt 1: the receipt of priced work \(0\.005 DOGE\) came without a voucher/);
    t.regex(await forgedEnd!, /refused the coordinator's voucher for shard receipt 1: the voucher's signature is not a valid signature/);
    // The receipts were countersigned all the same: the work happened.
    await waitFor(async () => coordinators.every((coordinator) => coordinator.consumed.length === 1), 15_000, 50);
    const honestChannel = sessions[0]!.request.payment!.channel;
    await waitFor(async () => await vouched(host, honestChannel) === weiToDoge(stageCost(20)), 15_000, 50);

    // Owing, they get no new session; the honest one's session runs on and is paid.
    for (const debtor of [short, missing, forged]) {
        const error = await t.throwsAsync(debtor.protocol.openSession(host.node.id, REQUEST), {instanceOf: ShardSessionError});
        t.regex(error.message, /the session's payment is refused: owes 0\.00\d+ DOGE for jobs served on channel/);
    }
    t.false(sessions[0]!.ended);
    sessions[0]!.sendReceipt(40, 10);
    await waitFor(async () => await vouched(host, honestChannel) === weiToDoge(stageCost(20) + stageCost(40)), 15_000, 50);
    t.false(sessions[0]!.ended);
    t.is(honest.consumed.length, 2);
    t.is(host.node.peers().length, 4, 'no coordinator was disconnected');
});

test.serial('a session ends once the channel no longer covers its next window; the coordinator then opens none', async (t) => {
    const passes = {count: 1000};
    const network = 'shard-pay-drained';
    const host = await party(t, network, {price: PRICE, passes});
    const coordinator = await party(t, network);
    await connected([host, coordinator]);
    await coordinator.payments.deposit(host.node.id, '2.1');
    const session = await coordinator.protocol.openSession(host.node.id, REQUEST);
    const end = ended(session);
    session.sendReceipt(100, 10); // 0.025 DOGE: 2.075 left, still a window
    session.sendReceipt(400, 10); // 0.1 DOGE: 1.975 left, less than the 2.048 DOGE window
    // Either side sees it first: the coordinator cannot hold the window, the host cannot admit it.
    t.regex(await end, /(cannot pay the host for more work|no more work without payment): .*2\.048 DOGE/);
    const channel = session.request.payment!.channel;
    await waitFor(async () => await vouched(host, channel) === weiToDoge(stageCost(100) + stageCost(400)), 15_000, 50);
    const error = await t.throwsAsync(coordinator.protocol.openSession(host.node.id, REQUEST), {instanceOf: ShardSessionError});
    t.is(error.code, 'unpaid');
    t.regex(error.message, /no channel to it with 2\.048 DOGE left for this work \(1\.975 DOGE left\)/);
});

/** The payments' methods, bound, to override some of them. */
function lent(payments: ShardPayments): ShardPayments {
    return {
        price: () => payments.price(),
        reserveWei: (...args) => payments.reserveWei(...args),
        payWei: (...args) => payments.payWei(...args),
        release: (key) => payments.release(key),
        admitWei: (...args) => payments.admitWei(...args),
        servedWei: (...args) => payments.servedWei(...args),
        voucherFor: (...args) => payments.voucherFor(...args)
    };
}
