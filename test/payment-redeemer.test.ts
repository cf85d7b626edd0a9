import {spawn} from 'node:child_process';
import {randomBytes} from 'node:crypto';
import {once} from 'node:events';
import {mkdtemp, readFile, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {createInterface} from 'node:readline';
import {setTimeout as sleep} from 'node:timers/promises';
import test from 'ava';
import {Wallet} from 'ethers';
import {ContributionLog} from '../ledger/contribution-log.js';
import {LedgerError} from '../ledger/ledger-error.js';
import {deployPaymentContract, openChannel, type PaymentSettings, readChannel, requestClose} from '../ledger/payments/channels.js';
import {readRedeemedEvents} from '../ledger/payments/redeem-events.js';
import {type RedeemableVoucher, Redeemer, type RedeemerOptions} from '../ledger/payments/redeemer.js';
import {type SignedVoucher, signVoucher, voucherJson} from '../ledger/payments/vouchers.js';
import {LEDGER_RECORD_VERSION, type LedgerRecord, type RedeemRecord} from '../ledger/records.js';
import {verifyLog} from '../ledger/verify-log.js';
import {type EvmNode, startEvmNode} from '../harness/evm-node.js';
import {type KeyPair, keyPair} from '../harness/ledger-fixture.js';

/**
 * Settlement (ledger/payments/redeemer.ts) on a real hardhat EVM with Dogechain's chain id: a provider redeems the
 * vouchers its payers signed, in batches, on a threshold or an interval; a chain that stops answering, a process
 * killed between sending and recording, a channel closing or closed (hardhat time travel), a wrong chain and a fee
 * above the cap; and `verify`'s payments part against the chain's `Redeemed` events.
 */

const DOGE = 10n ** 18n;
const HOUR_S = 3600;

let evm: EvmNode;
let settings: PaymentSettings;
let deployBlock: number;
let payer: Wallet;
let payee: Wallet;
const cleanups: (() => Promise<unknown>)[] = [];

test.before(async () => {
    evm = await startEvmNode();
    const [deployer, payerKey, payeeKey] = evm.accounts as [string, string, string];
    payer = new Wallet(payerKey);
    payee = new Wallet(payeeKey);
    const deployed = await deployPaymentContract({rpcUrl: evm.url, chainId: evm.chainId}, new Wallet(deployer));
    settings = {rpcUrl: evm.url, chainId: evm.chainId, contract: deployed.address};
    deployBlock = deployed.blockNumber;
});

test.after.always(async () => {
    for (const cleanup of cleanups.reverse())
        await cleanup().catch(() => undefined);
    await evm?.stop();
});

/** A channel from the payer to the payee holding `deposit` wei. */
async function channelOf(deposit = 5n * DOGE) {
    return (await openChannel(settings, payer, payee.address, deposit)).channel;
}

function voucher(channel: string, amount: bigint): RedeemableVoucher {
    return {voucher: signVoucher(payer.signingKey, {chainId: settings.chainId, contract: settings.contract}, {channel, amount}), payer: payer.address};
}

async function temporaryDir() {
    const directory = await mkdtemp(join(tmpdir(), 'strongdoge-redeem-'));
    cleanups.push(() => rm(directory, {recursive: true, force: true}));
    return directory;
}

/** A contribution log in `directory` (a new one by default), closed after the tests. */
async function openLog(directory?: string, owner: KeyPair = keyPair()) {
    const folder = directory ?? await temporaryDir();
    const log = await ContributionLog.open({directory: join(folder, 'corestore'), identity: owner});
    cleanups.push(() => log.close());
    return {log, directory: folder, owner};
}

function redeemer(log: ContributionLog, directory: string, book: RedeemableVoucher[], options: Partial<RedeemerOptions> = {}) {
    const made = new Redeemer({
        ...settings, wallet: payee, log, statePath: join(directory, 'redeem-state.json'), maxFeeGwei: 1000, confirmations: 1,
        intervalMs: 3_600_000, thresholdWei: 100n * DOGE, vouchers: () => book, rpcTimeoutMs: 5_000, ...options
    });
    cleanups.push(async () => made.stop());
    return made;
}

const nonceOf = (address = payee.address) => evm.onChain((provider) => provider.getTransactionCount(address, 'latest'));
const balanceOf = (address = payee.address) => evm.onChain((provider) => provider.getBalance(address));

/** What the payee's transactions `txHashes` cost it in gas. */
const gasCost = (txHashes: string[]) => evm.onChain(async (provider) => {
    let total = 0n;
    for (const txHash of txHashes) {
        const receipt = (await provider.getTransactionReceipt(txHash))!;
        total += receipt.gasUsed * receipt.gasPrice;
    }
    return total;
});

const redeemedEvents = (channels: string[]) => readRedeemedEvents({...settings, confirmations: 1, fromBlock: deployBlock}, {channels});

/** Every `redeem` record in the log. */
async function redeemRecords(log: ContributionLog) {
    await log.flush();
    const records: RedeemRecord[] = [];
    for await (const block of log.hypercore.createReadStream())
        if ((block as LedgerRecord).type === 'redeem')
            records.push(block as RedeemRecord);
    return records;
}

/** Waits until `condition` holds (a guard, not a timing assertion: it gives up after a minute). */
async function until(condition: () => boolean | Promise<boolean>, what: string) {
    const deadline = Date.now() + 60_000;
    while (!await condition()) {
        if (Date.now() > deadline)
            throw new Error(`gave up waiting until ${what}`);
        await sleep(50);
    }
}

async function pendingSaved(statePath: string) {
    const text = await readFile(statePath, 'utf8').catch(() => '{"pending": []}');
    return (JSON.parse(text) as {pending: {txHash: string}[]}).pending;
}

test.serial('one batch redeems the latest voucher of each channel: exactly what it owes moves to the payee, one redeem record each', async (t) => {
    const {log, directory} = await openLog();
    const [first, second] = [await channelOf(), await channelOf()];
    // Three jobs on the first channel: the voucher is cumulative, and the book keeps the latest.
    const costs = [DOGE / 10n, DOGE / 4n, 2n * DOGE / 5n];
    const total = costs.reduce((sum, cost) => sum + cost, 0n);
    const book = [voucher(first, costs[0]!)];
    book[0] = voucher(first, costs[0]! + costs[1]!);
    book[0] = voucher(first, total);
    book.push(voucher(second, DOGE));
    const before = await balanceOf();
    const nonce = await nonceOf();
    const made = redeemer(log, directory, book);
    const records = await made.redeemNow();
    t.is(records.length, 2, 'one transaction each, in one batch');
    t.is(await nonceOf(), nonce + 2);
    const [ofFirst, ofSecond] = [records.find((record) => record.channel === first)!, records.find((record) => record.channel === second)!];
    t.like(ofFirst, {type: 'redeem', chainId: evm.chainId, contract: settings.contract, channel: first, payer: payer.address,
        amount: total.toString(), paid: total.toString()});
    t.like(ofSecond, {channel: second, amount: DOGE.toString(), paid: DOGE.toString()});
    t.like(await readChannel(settings, first), {redeemed: total, deposited: 5n * DOGE});
    t.like(await readChannel(settings, second), {redeemed: DOGE});
    t.is(await balanceOf() - before, total + DOGE - await gasCost(records.map((record) => record.txHash)), 'the payee got exactly what was owed, less its gas');
    t.deepEqual((await redeemRecords(log)).map((record) => record.txHash).sort(), records.map((record) => record.txHash).sort());
    const events = await redeemedEvents([first, second]);
    t.deepEqual(events.redeems.map(({channel, paid, redeemed, txHash, payee: to}) => ({channel, paid, redeemed, txHash, to})).sort((a, b) => a.channel.localeCompare(b.channel)),
        [{channel: first, paid: total, redeemed: total, txHash: ofFirst.txHash, to: payee.address},
            {channel: second, paid: DOGE, redeemed: DOGE, txHash: ofSecond.txHash, to: payee.address}].sort((a, b) => a.channel.localeCompare(b.channel)));
    t.is(made.redeemedOf(first), total);
    t.deepEqual(made.status().pending, []);
    t.is(made.status().lastError, null);
    t.is(made.status().lastRedeem?.txHash, records.at(-1)!.txHash);
    const logged = await t.throwsAsync(log.append(ofFirst), {instanceOf: LedgerError});
    t.regex(logged!.message, new RegExp(`redeem:${ofFirst.txHash} is in the log already`));

    t.deepEqual(await made.redeemNow(), [], 'nothing new: nothing sent');
    t.is(await nonceOf(), nonce + 2);
    // A fourth job: the next redeem pays only what it added.
    book[0] = voucher(first, total + DOGE / 20n);
    const [next] = await made.redeemNow();
    t.like(next, {channel: first, amount: (total + DOGE / 20n).toString(), paid: (DOGE / 20n).toString()});
    t.is((await redeemRecords(log)).length, 3);
});

test.serial('a voucher past the threshold redeems at once; the interval redeems too; nothing is sent when nothing is new', async (t) => {
    const {log, directory} = await openLog();
    const channel = await channelOf();
    const book: RedeemableVoucher[] = [];
    const onThreshold = redeemer(log, directory, book, {thresholdWei: DOGE});
    await onThreshold.start();
    const nonce = await nonceOf();
    book.push(voucher(channel, DOGE / 2n));
    t.false(onThreshold.voucherArrived(), 'half a DOGE owed: below the threshold');
    book[0] = voucher(channel, 2n * DOGE);
    const redeemed = once(onThreshold, 'redeemed') as Promise<[RedeemRecord]>;
    t.true(onThreshold.voucherArrived(), 'two DOGE owed: above it');
    const [record] = await redeemed;
    t.like(record, {channel, amount: (2n * DOGE).toString(), paid: (2n * DOGE).toString()});
    t.is(onThreshold.redeemedOf(channel), 2n * DOGE);
    book[0] = voucher(channel, 5n * DOGE / 2n);
    t.false(onThreshold.voucherArrived(), 'half a DOGE beyond what was redeemed: below the threshold again');
    onThreshold.stop();
    t.is(await nonceOf(), nonce + 1, 'one redeem');

    // The same book, redeemed on an interval.
    let reads = 0;
    const onInterval = redeemer(log, directory, book, {intervalMs: 500, vouchers: () => {
        reads++;
        return book;
    }});
    const next = once(onInterval, 'redeemed') as Promise<[RedeemRecord]>;
    await onInterval.start();
    t.truthy(onInterval.status().nextAttemptAt);
    const [fromInterval] = await next;
    t.like(fromInterval, {channel, amount: (5n * DOGE / 2n).toString(), paid: (DOGE / 2n).toString()});
    const afterRedeem = reads;
    // Two attempts begun after it (the second begins once the first is over): each read the book and sent nothing.
    await until(() => reads >= afterRedeem + 3, 'the interval ran twice more');
    onInterval.stop();
    t.is(await nonceOf(), nonce + 2);
    t.is((await redeemRecords(log)).length, 2);
    t.is(onInterval.status().nextAttemptAt, null, 'stopped');
});

test.serial('a chain that stops answering while a redeem is on its way: paid once, recorded once', async (t) => {
    const {log, directory} = await openLog();
    const channel = await channelOf();
    const made = redeemer(log, directory, [voucher(channel, DOGE)], {rpcTimeoutMs: 2_000, miningTimeoutMs: 10_000});
    const nonce = await nonceOf();
    const before = await balanceOf();
    const failures: LedgerError[] = [];
    made.on('failed', (error) => failures.push(error));
    // Nothing is mined until the chain is back: the redeem is on its way (sent or about to be) when it stops.
    await evm.send('evm_setAutomine', [false]);
    let running: Promise<RedeemRecord[] | LedgerError>;
    try {
        running = made.redeemNow().then((records) => records, (error: unknown) => error as LedgerError);
        await until(async () => (await pendingSaved(join(directory, 'redeem-state.json'))).length > 0, 'the redeem is saved');
        evm.pause();
        try {
            // Past the redeemer's RPC timeout: its calls fail meanwhile.
            await sleep(3_000);
        } finally {
            evm.resume();
        }
    } finally {
        await evm.send('evm_setAutomine', [true]);
    }
    await evm.send('evm_mine');
    const records: RedeemRecord[] = [];
    let outcome = await running;
    t.log(`the attempt under way when the chain stopped: ${outcome instanceof Error ? outcome.message : 'finished'}`);
    // Each attempt either finishes the redeem or fails for want of the chain; the saved transaction is sent again.
    for (let attempt = 0; outcome instanceof Error && attempt < 5; attempt++) {
        t.is(outcome.code, 'CHAIN_UNAVAILABLE', outcome.message);
        outcome = await made.redeemNow().then((done) => done, (error: unknown) => error as LedgerError);
    }
    if (outcome instanceof Error)
        return t.fail(outcome.message);
    records.push(...outcome);
    t.is(records.length, 1);
    t.deepEqual(await made.redeemNow(), []);
    t.is((await redeemedEvents([channel])).redeems.length, 1, 'paid once');
    t.is((await redeemRecords(log)).length, 1, 'recorded once');
    t.is(await nonceOf(), nonce + 1);
    t.is(await balanceOf() - before, DOGE - await gasCost([records[0]!.txHash]));
    t.true(failures.every((failure) => failure.code === 'CHAIN_UNAVAILABLE'), 'each failed attempt said so, nothing else failed');
});

test.serial('a redeemer killed between sending and recording: the next one on the same state file and log records it once, paid once', async (t) => {
    const directory = await temporaryDir();
    const owner = keyPair();
    const channel = await channelOf();
    const held = voucher(channel, 3n * DOGE / 2n);
    const statePath = join(directory, 'redeem-state.json');
    const logDirectory = join(directory, 'corestore');
    const nonce = await nonceOf();
    const before = await balanceOf();
    // Two confirmations: the transaction is mined at once (automine) but not confirmed until another block, which only this test mines.
    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'harness', 'redeemer-process.ts'), JSON.stringify({
        rpcUrl: evm.url, chainId: evm.chainId, contract: settings.contract, payeeKey: evm.accounts[2], statePath, logDirectory,
        ownerSecretKey: owner.secretKey.toString('hex'), confirmations: 2, vouchers: [{voucher: voucherJson(held.voucher), payer: held.payer}]
    })], {stdio: ['ignore', 'pipe', 'inherit']});
    const lines: string[] = [];
    createInterface({input: child.stdout}).on('line', (line) => lines.push(line));
    const exited = once(child, 'exit');
    cleanups.push(async () => child.kill('SIGKILL'));
    let txHash = '';
    await until(async () => {
        txHash = (await pendingSaved(statePath))[0]?.txHash ?? '';
        return txHash !== '' || child.exitCode !== null;
    }, 'the child saved its redeem');
    await until(async () => child.exitCode !== null || await evm.onChain((provider) => provider.getTransaction(txHash)) !== null, 'the chain has the redeem');
    t.is(child.exitCode, null, `the child is still waiting for its redeem to be confirmed: ${lines.join('; ')}`);
    evm.pause();
    child.kill('SIGKILL');
    await exited;
    evm.resume();
    t.is((await pendingSaved(statePath))[0]?.txHash, txHash, 'the redeem is still saved: sent, not recorded');

    const {log} = await openLog(directory, owner);
    t.is((await redeemRecords(log)).length, 0);
    const restarted = redeemer(log, directory, [held]);
    const redeemed = once(restarted, 'redeemed') as Promise<[RedeemRecord]>;
    await restarted.start();
    t.deepEqual(restarted.status().pending, [{channel, txHash, amount: 3n * DOGE / 2n}]);
    const [record] = await redeemed;
    restarted.stop();
    t.like(record, {txHash, channel, paid: (3n * DOGE / 2n).toString()});
    // The first call may share the run that recorded it (one at a time); the next starts anew and finds nothing.
    t.true((await restarted.redeemNow()).every((shared) => shared.txHash === txHash));
    t.deepEqual(await restarted.redeemNow(), []);
    t.deepEqual(restarted.status().pending, []);
    t.is((await redeemedEvents([channel])).redeems.length, 1, 'paid once');
    t.deepEqual((await redeemRecords(log)).map((logged) => logged.txHash), [txHash], 'logged once');
    t.is(await nonceOf(), nonce + 1, 'one transaction');
    t.is(await balanceOf() - before, 3n * DOGE / 2n - await gasCost([txHash]));
});

test.serial('a wrong chain id, or a fee above the cap, is refused before anything is signed or sent', async (t) => {
    const {log, directory} = await openLog();
    const channel = await channelOf();
    const book = [voucher(channel, DOGE)];
    const nonce = await nonceOf();
    const wrongChain = redeemer(log, directory, book, {chainId: evm.chainId + 1});
    t.is((await t.throwsAsync(wrongChain.redeemNow(), {instanceOf: LedgerError}))?.code, 'WRONG_CHAIN');
    t.regex(wrongChain.status().lastError!, /^WRONG_CHAIN: the chain RPC serves chain id 2000, not the configured 2001/);
    const costly = redeemer(log, directory, book, {maxFeeGwei: 0.001});
    const fee = await t.throwsAsync(costly.redeemNow(), {instanceOf: LedgerError});
    t.is(fee?.code, 'FEE_TOO_HIGH');
    t.regex(fee!.message, /above --max-fee-gwei 0\.001/);
    t.is(await nonceOf(), nonce, 'nothing sent');
    t.deepEqual(await pendingSaved(join(directory, 'redeem-state.json')), [], 'nothing saved');
    t.like(await readChannel(settings, channel), {redeemed: 0n});
    t.is((await redeemRecords(log)).length, 0);
});

test.serial('verify: vouchers received, redeems recorded and what the chain paid; a redeem record the chain does not have is a problem', async (t) => {
    const {log, directory} = await openLog();
    const channel = await channelOf();
    const costs = [DOGE / 10n, DOGE / 5n, DOGE / 2n];
    let total = 0n;
    let latest: SignedVoucher | undefined;
    for (const cost of costs) {
        total += cost;
        latest = voucher(channel, total).voucher;
        await log.append({version: LEDGER_RECORD_VERSION, type: 'voucher', at: new Date().toISOString(), peer: keyPair().id,
            jobId: randomBytes(16).toString('hex'), chainId: evm.chainId, contract: settings.contract, channel, payer: payer.address,
            amount: total.toString(), cost: cost.toString(), signature: latest.signature});
    }
    const [record] = await redeemer(log, directory, [{voucher: latest!, payer: payer.address}]).redeemNow();
    const fake: RedeemRecord = {...record!, txHash: `0x${randomBytes(32).toString('hex')}`, paid: DOGE.toString(), amount: (total + DOGE).toString()};
    await log.append(fake);
    const chain = await redeemedEvents([channel]);
    t.deepEqual((await readRedeemedEvents({...settings, confirmations: 1, fromBlock: deployBlock}, {payee: payee.address})).redeems
        .filter((event) => event.channel === channel), chain.redeems, 'read by payee, the same');

    const report = await verifyLog(log.hypercore, {anchors: [], authorizations: []}, {redeems: chain});
    t.deepEqual(report.payments, {vouchers: 3, channels: {[channel]: total.toString()}, vouchedTotal: total.toString(), redeems: 2,
        paidTotal: (total + DOGE).toString(), redeemsConfirmed: 1, chainPaidTotal: total.toString()});
    t.is(report.problems.length, 1);
    t.regex(report.problems[0]!, new RegExp(`redeem record of channel ${channel} .*\\(transaction ${fake.txHash}\\): no such redeem is on the chain`));
    const unchecked = await verifyLog(log.hypercore, {anchors: [], authorizations: []});
    t.deepEqual(unchecked.problems, []);
    t.like(unchecked.payments, {redeems: 2, redeemsConfirmed: null, chainPaidTotal: null});
});

// Last: time travel moves the chain's clock a day and a half ahead for the tests after it.
test.serial('a channel in its challenge period is still redeemed; one past its closing time is skipped, saying why, once', async (t) => {
    const {log, directory} = await openLog();
    const closed = await channelOf();
    await requestClose(settings, payer, closed);
    await evm.send('evm_increaseTime', [25 * HOUR_S]);
    await evm.send('evm_mine');
    const closing = await channelOf();
    await requestClose(settings, payer, closing);
    await evm.send('evm_increaseTime', [12 * HOUR_S]);
    await evm.send('evm_mine');
    t.not((await readChannel(settings, closing))!.closesAt, 0);

    const book = [voucher(closed, DOGE / 3n), voucher(closing, DOGE / 3n)];
    const made = redeemer(log, directory, book, {thresholdWei: 0n});
    const failures: LedgerError[] = [];
    made.on('failed', (error) => failures.push(error));
    const records = await made.redeemNow();
    t.is(records.length, 1);
    t.like(records[0], {channel: closing, paid: (DOGE / 3n).toString()});
    t.like(await readChannel(settings, closing), {redeemed: DOGE / 3n});
    t.is(failures.length, 1);
    t.is(failures[0]!.code, 'CHANNEL_REFUSED');
    t.regex(failures[0]!.message, new RegExp(`channel ${closed} closed at .*\\(its challenge period is over\\).*can no longer be redeemed`));
    t.like(await readChannel(settings, closed), {redeemed: 0n});
    t.deepEqual(await made.redeemNow(), []);
    t.is(failures.length, 1, 'said once');
    t.false(made.voucherArrived(), 'a voucher of a closed channel counts for nothing toward the threshold');
    t.is((await redeemRecords(log)).length, 1);
});

test.serial('a voucher worth less than twice a redeem\'s gas waits on an open channel, and is redeemed once its channel closes', async (t) => {
    const {log, directory} = await openLog();
    const channel = await channelOf();
    const book = [voucher(channel, 1000n)];
    const made = redeemer(log, directory, book);
    t.deepEqual(await made.redeemNow(), []);
    t.is((await readChannel(settings, channel))?.redeemed, 0n);
    await requestClose(settings, payer, channel);
    const records = await made.redeemNow();
    t.is(records.length, 1);
    t.is((await readChannel(settings, channel))?.redeemed, 1000n);
});
