/**
 * What paying for served work costs (docs/architecture.md, "Payments (contract)"): the gas of each call on the
 * payment channel contract on a local EVM node with Dogechain's chain id (open, top-up, the redeem of one job's
 * voucher and of a cumulative voucher for 100 more jobs, the close request, the withdrawal after the challenge
 * period), and the CPU a voucher costs per job: signing it (the payer) and verifying it (the payee). Writes
 * bench/results/payments.json. `PAYMENT_BENCH_ROUNDS` sets the channels measured (defaults to 5).
 */
import {loadavg} from 'node:os';
import {Wallet} from 'ethers';
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

log('gas…');
const gas = await gasPerCall();
log('voucher sign and verify…');
const vouchers = voucherCost();
log(JSON.stringify(vouchers));
// The voucher timings are CPU-bound: the load average says how busy the (shared) cores were.
await writeReport('payments', {machine: machine({loadAverage: loadavg().map((load) => round(load, 2))}), measuredAt: new Date().toISOString(), gas, vouchers});
