/**
 * What paying for served work costs (docs/architecture.md, "Payments (contract)"): the gas of each call on the
 * payment channel contract on a local EVM node with Dogechain's chain id (open, top-up, the redeem of one job's
 * voucher and of a cumulative voucher for 100 more jobs, the close request, the withdrawal after the challenge
 * period), the CPU a voucher costs per job: signing it (the payer) and verifying it (the payee), and the latency
 * a client sees per job from a priced peer against a free one, end to end through real daemons (docs/architecture.md,
 * "Payments"). Writes bench/results/payments.json. `PAYMENT_BENCH_ROUNDS` sets the channels measured (defaults to
 * 5), `PAYMENT_BENCH_JOBS` the requests timed per peer (defaults to 200; 40 more back to back).
 */
import {loadavg} from 'node:os';
import {setTimeout as sleep} from 'node:timers/promises';
import {Wallet} from 'ethers';
import {waitFor, type DaemonHandle} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {fetchStatus} from '../harness/node-status.js';
import {nodeIdOf, peersOf, startSwarmDaemon, startTestnet, waitForPeers} from '../harness/swarm-fixture.js';
import type {PeerStatus} from '../node/node-status.js';
import {
    deployPaymentContract, depositToChannel, openChannel, type PaymentOutcome, type PaymentSettings, redeemVoucher, requestClose, withdrawFromChannel
} from '../ledger/payments/channels.js';
import {dogeToWei, jobCostWei, priceWeiPerMillion} from '../ledger/payments/pricing.js';
import {signVoucher, verifyVoucher} from '../ledger/payments/vouchers.js';
import {startEvmNode} from '../harness/evm-node.js';
import {machine, writeReport} from './lib/report.js';
import {median, round} from './lib/statistics.js';

const ROUNDS = Number(process.env.PAYMENT_BENCH_ROUNDS ?? 5);
const VOUCHER_ITERATIONS = 1_000;
const VOUCHER_WARM_UP = 100;
/** The contract's CHALLENGE_PERIOD. */
const CHALLENGE_PERIOD_S = 24 * 60 * 60;
/** A job as a node might sell it: 500 tokens (prompt and completion) at 1 DOGE per million tokens. */
const JOB_TOKENS = 500;
const PRICE_DOGE_PER_MILLION = 1;
const MANY_JOBS = 100;
/**
 * Completions timed per peer, after JOB_WARM_UP each that are not, with JOB_PAUSE_MS after each: the work a job
 * leaves after its answer (its voucher kept, sent, verified) is over before the next starts, and each requester
 * stays under a provider's limit on job messages (docs/peer-protocol.md: 20/s, burst 100; a job is 2).
 */
const JOBS = Number(process.env.PAYMENT_BENCH_JOBS ?? 200);
const JOB_WARM_UP = 4;
const JOB_PAUSE_MS = 100;
/** Then back to back, as a busy client sends them: few enough for the limit's burst (warm-ups included), after it refilled. */
const BACK_TO_BACK_JOBS = 40;
const BURST_REFILL_MS = 6_000;
/** As test/payments.test.ts: 0.001 DOGE a token, so a job's worst case is a few DOGE and 50 DOGE pays every job here. */
const JOB_PRICE_DOGE_PER_MILLION = 1000;
const JOB_DEPOSIT_DOGE = '50';
/** Both providers serve this same small model: the jobs differ only in being paid. */
const DEMO_MODEL = {layers: 2, width: 64, headCount: 4, feedForwardLength: 64};
/** What a fresh wallet is given on the chain: 100 DOGE. */
const FRESH_BALANCE = '0x56bc75e2d63100000';

const log = (message: string) => process.stderr.write(`${message}\n`);

/** Median, least and most of the gas each round used for one call: a few dozen gas apart with the zero bytes of a salt or signature. */
function gasSummary(outcomes: PaymentOutcome[]) {
    const gas = outcomes.map((outcome) => Number(outcome.gasUsed));
    return {median: median(gas), min: Math.min(...gas), max: Math.max(...gas)};
}

async function gasPerCall() {
    const evm = await startEvmNode();
    try {
        const [payer, payee] = evm.accounts.map((key) => new Wallet(key)) as [Wallet, Wallet];
        const chain = {rpcUrl: evm.url, chainId: evm.chainId};
        const deployed = await deployPaymentContract(chain, payer);
        const settings: PaymentSettings = {...chain, contract: deployed.address};
        const domain = {chainId: settings.chainId, contract: settings.contract};
        const jobCost = jobCostWei(JOB_TOKENS, priceWeiPerMillion(PRICE_DOGE_PER_MILLION));
        const calls: Record<'open' | 'deposit' | 'redeemOneJob' | 'redeemHundredJobs' | 'requestClose' | 'withdraw', PaymentOutcome[]> = {
            open: [], deposit: [], redeemOneJob: [], redeemHundredJobs: [], requestClose: [], withdraw: []
        };
        for (let roundIndex = 0; roundIndex < ROUNDS; roundIndex++) {
            const opened = await openChannel(settings, payer, payee.address, dogeToWei(1));
            calls.open.push(opened);
            calls.deposit.push(await depositToChannel(settings, payer, opened.channel, dogeToWei(1)));
            // The payer signs the cumulative amount after each job; the payee redeems the latest voucher it holds.
            const afterOneJob = signVoucher(payer.signingKey, domain, {channel: opened.channel, amount: jobCost});
            calls.redeemOneJob.push(await redeemVoucher(settings, payee, afterOneJob));
            const afterManyJobs = signVoucher(payer.signingKey, domain, {channel: opened.channel, amount: jobCost * BigInt(1 + MANY_JOBS)});
            calls.redeemHundredJobs.push(await redeemVoucher(settings, payee, afterManyJobs));
            calls.requestClose.push(await requestClose(settings, payer, opened.channel));
            await evm.send('evm_increaseTime', [CHALLENGE_PERIOD_S + 1]);
            await evm.send('evm_mine');
            calls.withdraw.push(await withdrawFromChannel(settings, payer, opened.channel));
            log(`round ${roundIndex + 1}: ${Object.entries(calls).map(([name, outcomes]) => `${name} ${outcomes.at(-1)!.gasUsed}`).join(', ')}`);
        }
        return {
            chain: 'hardhat 2 node (paris EVM), chain id 2000, automining',
            rounds: ROUNDS,
            job: {tokens: JOB_TOKENS, priceDogePerMillionTokens: PRICE_DOGE_PER_MILLION, costWei: jobCost.toString()},
            deploy: Number(deployed.gasUsed),
            ...Object.fromEntries(Object.entries(calls).map(([name, outcomes]) => [name, gasSummary(outcomes)]))
        };
    } finally {
        await evm.stop();
    }
}

/** Median µs of signing one voucher (the payer, once per job), verifying it (the payee, once per job), and both. */
function voucherCost() {
    const payer = Wallet.createRandom();
    const domain = {chainId: 2000, contract: '0x5FbDB2315678afecb367f032d93F642f64180aa3'};
    const channel = `0x${'a1'.repeat(32)}`;
    const sign: number[] = [];
    const verify: number[] = [];
    for (let index = 0; index < VOUCHER_WARM_UP + VOUCHER_ITERATIONS; index++) {
        // A new cumulative amount each time, as each job raises it.
        const started = performance.now();
        const voucher = signVoucher(payer.signingKey, domain, {channel, amount: BigInt(index + 1) * 250_000_000_000_000n});
        const signed = performance.now();
        verifyVoucher(domain, voucher, payer.address);
        const verified = performance.now();
        if (index >= VOUCHER_WARM_UP) {
            sign.push((signed - started) * 1000);
            verify.push((verified - signed) * 1000);
        }
    }
    const both = sign.map((each, index) => each + verify[index]!);
    return {
        iterations: VOUCHER_ITERATIONS, library: 'ethers 6 (secp256k1 from @noble/curves, EIP-712 hashing)',
        signMedianUs: round(median(sign), 1), verifyMedianUs: round(median(verify), 1), signAndVerifyMedianUs: round(median(both), 1)
    };
}

/** The value below which `fraction` of the values lie (nearest rank). */
function percentile(values: number[], fraction: number) {
    const sorted = [...values].sort((a, b) => a - b);
    return sorted[Math.max(0, Math.ceil(fraction * sorted.length) - 1)]!;
}

const loadAverage = () => loadavg().map((load) => round(load, 2));

/** Milliseconds until a whole (not streamed) completion is read, as a client of the requester's API waits. */
async function timedCompletion(daemon: DaemonHandle, prompt: string) {
    const started = performance.now();
    const response = await fetch(`${daemon.baseUrl}/completions`, {
        method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify({model: 'demo', prompt, max_tokens: 8, temperature: 0})
    });
    const body = await response.json() as {usage?: {prompt_tokens: number, completion_tokens: number}};
    const ms = performance.now() - started;
    if (response.status !== 200 || body.usage === undefined)
        throw new Error(`completion: ${response.status} ${JSON.stringify(body)}`);
    return {ms, tokens: body.usage.prompt_tokens + body.usage.completion_tokens};
}

/**
 * A job's latency from a priced peer against the same job from a free one. Two networks on one loopback testnet,
 * so each requester sees one provider only and picks it: the free pair (`bench-free`) and the priced pair
 * (`bench-priced`, a channel of JOB_DEPOSIT_DOGE opened first). Every node has the same chain flags and a wallet;
 * only the priced provider has `--price`. The pairs take turns, each going first every other time.
 */
async function perJob() {
    const cleanups: (() => Promise<unknown>)[] = [];
    const {testnet, bootstrap} = await startTestnet();
    cleanups.push(() => testnet.destroy());
    const evm = await startEvmNode();
    cleanups.push(() => evm.stop());
    try {
        const chain = {rpcUrl: evm.url, chainId: evm.chainId};
        const {address: contract} = await deployPaymentContract(chain, new Wallet(evm.accounts[2]!));
        const chainFlags = ['--chain-rpc', evm.url, '--chain-id', String(evm.chainId), '--confirmations', '1', '--payment-contract', contract];
        const freshWallet = async () => {
            const wallet = Wallet.createRandom();
            await evm.send('hardhat_setBalance', [wallet.address, FRESH_BALANCE]);
            return wallet.privateKey;
        };
        const startNode = async (network: string, walletKey: string, extra: string[]) => {
            const fixture = await createDataDirWithDemoModel(DEMO_MODEL);
            cleanups.push(fixture.cleanup);
            const daemon = await startSwarmDaemon(bootstrap, fixture.dataDir, ['--network', network, ...chainFlags, ...extra],
                {env: {STRONGDOGE_WALLET_KEY: walletKey}});
            cleanups.push(() => daemon.stop());
            return {daemon, id: await nodeIdOf(daemon)};
        };
        log('per job: starting the daemons…');
        const [freeProvider, pricedProvider] = await Promise.all([
            startNode('bench-free', await freshWallet(), ['--model', 'demo']),
            startNode('bench-priced', evm.accounts[1]!, ['--model', 'demo', '--price', String(JOB_PRICE_DOGE_PER_MILLION)])
        ]);
        const [freeRequester, pricedRequester] = await Promise.all([
            startNode('bench-free', await freshWallet(), []),
            startNode('bench-priced', evm.accounts[0]!, [])
        ]);
        const payee = new Wallet(evm.accounts[1]!).address;
        const loaded = (peers: PeerStatus[]) => peers.every((peer) => peer.capabilities.models.some((model) => model.loaded));
        await waitForPeers(freeRequester.daemon, [freeProvider.id], 60_000, loaded);
        await waitForPeers(pricedRequester.daemon, [pricedProvider.id], 60_000,
            (peers) => loaded(peers) && peers.every((peer) => peer.capabilities.payment?.wallet === payee));

        const deposited = await fetch(`${pricedRequester.daemon.origin}/api/wallet/deposit`, {
            method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify({peer: pricedProvider.id, amount: JOB_DEPOSIT_DOGE})
        });
        if (deposited.status !== 200)
            throw new Error(`deposit: ${deposited.status} ${await deposited.text()}`);

        const summary = (values: number[]) => ({
            medianMs: round(median(values), 1), p90Ms: round(percentile(values, 0.9), 1), meanMs: round(values.reduce((a, b) => a + b, 0) / values.length, 1),
            minMs: round(Math.min(...values), 1), maxMs: round(Math.max(...values), 1)
        });
        /** `jobs` timed completions from each pair in turn (after JOB_WARM_UP each), `pauseMs` after each one. */
        const measure = async (jobs: number, pauseMs: number) => {
            const times = {free: [] as number[], priced: [] as number[]};
            const tokens = {free: 0, priced: 0};
            for (let index = 0; index < JOB_WARM_UP + jobs; index++) {
                // The same prompt to both, so both jobs have the same tokens; the pair going first alternates.
                const prompt = `job number ${index} of the benchmark`;
                const order = index % 2 === 0 ? (['free', 'priced'] as const) : (['priced', 'free'] as const);
                for (const side of order) {
                    const requester = side === 'free' ? freeRequester : pricedRequester;
                    const done = await timedCompletion(requester.daemon, prompt).catch(async (error: Error) => {
                        throw new Error(`${side} job ${index} (pause ${pauseMs} ms): ${error.message}; its peers: ${JSON.stringify(await peersOf(requester.daemon))}; warnings: ${JSON.stringify([freeProvider, pricedProvider, freeRequester, pricedRequester].map((node) => node.daemon.logs.filter((line) => Number(line.level) >= 40).slice(-6)))}`);
                    });
                    if (index >= JOB_WARM_UP) {
                        times[side].push(done.ms);
                        tokens[side] += done.tokens;
                    }
                    if (pauseMs > 0)
                        await sleep(pauseMs);
                }
            }
            const free = summary(times.free);
            const priced = summary(times.priced);
            return {
                jobs, warmUp: JOB_WARM_UP, pauseMs,
                tokensPerJob: {free: round(tokens.free / jobs, 1), priced: round(tokens.priced / jobs, 1)},
                free, priced,
                addedMedianMs: round(priced.medianMs - free.medianMs, 1),
                addedP90Ms: round(priced.p90Ms - free.p90Ms, 1),
                pricedOverFreeMedian: round(priced.medianMs / free.medianMs, 3)
            };
        };
        const loadBefore = loadAverage();
        const paced = await measure(JOBS, JOB_PAUSE_MS);
        log(`paced: ${JSON.stringify(paced)}`);
        await sleep(BURST_REFILL_MS);
        // Here a job's work after its answer competes with the next job for the (2) cores.
        const backToBack = await measure(BACK_TO_BACK_JOBS, 0);
        log(`back to back: ${JSON.stringify(backToBack)}`);
        const loadAfter = loadAverage();

        // Each requester still sees its own provider only, and every priced job's voucher reached the provider.
        for (const [requester, provider] of [[freeRequester, freeProvider], [pricedRequester, pricedProvider]] as const) {
            const peers = (await peersOf(requester.daemon)).peers.map((peer) => peer.id);
            if (peers.length !== 1 || peers[0] !== provider.id)
                throw new Error(`a requester saw ${JSON.stringify(peers)}, not its provider only`);
        }
        let paid = '';
        await waitFor(async () => {
            paid = (await fetchStatus(pricedRequester.daemon, '/api/wallet')).paid;
            const vouched = (await fetchStatus(pricedProvider.daemon, '/api/wallet')).paidBy[0]?.vouched;
            return paid !== '0.0' && vouched === paid;
        }, 30_000, 200);

        const result = {
            setup: `4 daemons (dist/) on one loopback testnet, hardhat chain id ${evm.chainId} automining, --confirmations 1; `
                + `two networks: requester → free provider, requester → provider at --price ${JOB_PRICE_DOGE_PER_MILLION} (channel of ${JOB_DEPOSIT_DOGE} DOGE)`,
            model: {...DEMO_MODEL, note: 'the same demo model on both providers, --threads 1'},
            request: 'POST /v1/completions, max_tokens 8, temperature 0, not streamed; the same prompt to both; timed until the JSON body is read',
            ...paced,
            backToBack,
            paidDoge: paid,
            loadAverage: {before: loadBefore, after: loadAfter},
            // What paying adds per job (docs/architecture.md, "Payments").
            addedWork: {
                requester: 'before the job: the worst case held on the channel (in memory); once the result is in: the voucher signed (in the '
                    + 'same event-loop turn as the answer is settled, so its sign time, vouchers.signMedianUs, comes before the answer is written), '
                    + 'then payments.json saved and a payment record appended, then the receipt goes out — after the client has its answer',
                provider: 'before admission: the channel\'s state from the chain, read at most once per 30 s per channel (cached); with the '
                    + 'receipt: the voucher verified, the payment state saved and a voucher record appended — after the answer',
                wire: 'the job carries payment terms (channel, price), the receipt a voucher',
                caveat: 'the free and the priced provider are two processes: part of the difference may be theirs, not payments\''
            }
        };
        return result;
    } finally {
        for (const cleanup of cleanups.reverse())
            await cleanup().catch(() => undefined);
    }
}

log('gas…');
const gas = await gasPerCall();
log('voucher sign and verify…');
const vouchers = voucherCost();
log(JSON.stringify(vouchers));
// The voucher timings are CPU-bound: the load average says how busy the (shared) cores were.
const loadAfterVouchers = loadAverage();
log('per job, free against priced…');
const perJobLatency = await perJob();
await writeReport('payments', {machine: machine({loadAverage: loadAfterVouchers}), measuredAt: new Date().toISOString(), gas, vouchers, perJob: perJobLatency});
