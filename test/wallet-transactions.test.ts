import {randomBytes} from 'node:crypto';
import {mkdtemp, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import test from 'ava';
import {Wallet} from 'ethers';
import {verifyText} from '../cli/commands/ledger-command.js';
import {resolveNodeSettings} from '../cli/config/node-config.js';
import {deployAnchorContract} from '../ledger/anchor/chain.js';
import {Anchorer} from '../ledger/anchorer.js';
import {ContributionLog} from '../ledger/contribution-log.js';
import type {LedgerError} from '../ledger/ledger-error.js';
import {deployPaymentContract, depositToChannel, openChannel, type PaymentSettings} from '../ledger/payments/channels.js';
import {type RedeemableVoucher, Redeemer} from '../ledger/payments/redeemer.js';
import {signVoucher} from '../ledger/payments/vouchers.js';
import {LEDGER_RECORD_VERSION, type RedeemRecord} from '../ledger/records.js';
import {WalletLock} from '../ledger/wallet-lock.js';
import {NodeLedger, storePaymentContract} from '../node/node-ledger.js';
import {verifyReportSchema} from '../node/node-status.js';
import {shortNodeId} from '../swarm/node-identity.js';
import {type EvmNode, startEvmNode} from '../harness/evm-node.js';
import {countersignedReceipt, keyPair, servedRecord} from '../harness/ledger-fixture.js';

/**
 * One wallet's transactions (ledger/wallet-lock.ts) and the node's `ledger verify` against the chain's redeems, on a
 * real hardhat EVM with Dogechain's chain id: an anchor, a redeem and a deposit started together on one wallet, and
 * NodeLedger.verify's `payments` part (docs/architecture.md, "Anchoring", "Settlement").
 */

const DOGE = 10n ** 18n;

let evm: EvmNode;
let anchorContract: string;
let anchorBlock: number;
let payments: PaymentSettings;
let paymentBlock: number;
const cleanups: (() => Promise<unknown>)[] = [];

test.before(async () => {
    evm = await startEvmNode();
    const deployer = new Wallet(evm.accounts[0]!);
    const chain = {rpcUrl: evm.url, chainId: evm.chainId};
    ({address: anchorContract, blockNumber: anchorBlock} = await deployAnchorContract(chain, deployer));
    const deployed = await deployPaymentContract(chain, deployer);
    payments = {...chain, contract: deployed.address};
    paymentBlock = deployed.blockNumber;
});

test.after.always(async () => {
    for (const cleanup of cleanups.reverse())
        await cleanup().catch(() => undefined);
    await evm?.stop();
});

async function temporaryDir() {
    const directory = await mkdtemp(join(tmpdir(), 'strongdoge-wallet-tx-'));
    cleanups.push(() => rm(directory, {recursive: true, force: true}));
    return directory;
}

const nonceOf = (address: string) => evm.onChain((provider) => provider.getTransactionCount(address, 'latest'));

function voucher(payer: Wallet, channel: string, amount: bigint): RedeemableVoucher {
    return {voucher: signVoucher(payer.signingKey, {chainId: payments.chainId, contract: payments.contract}, {channel, amount}), payer: payer.address};
}

test.serial('one wallet, one transaction at a time: an anchor, a redeem and a deposit started together all confirm at distinct nonces, none retried', async (t) => {
    const directory = await temporaryDir();
    const owner = keyPair();
    const log = await ContributionLog.open({directory: join(directory, 'corestore'), identity: owner});
    cleanups.push(() => log.close());
    const wallet = await evm.fundedWallet();
    const payer = await evm.fundedWallet();
    const walletLock = new WalletLock();
    // The wallet is paid through one channel and pays through another.
    const incoming = (await openChannel(payments, payer, wallet.address, 10n * DOGE)).channel;
    const outgoing = (await openChannel(payments, wallet, payer.address, DOGE)).channel;
    const book: RedeemableVoucher[] = [];
    const anchorer = new Anchorer({log, wallet, walletLock, contract: anchorContract, rpcUrl: evm.url, chainId: evm.chainId, fromBlock: anchorBlock,
        statePath: join(directory, 'anchor-state.json'), maxFeeGwei: 1000, rpcTimeoutMs: 5_000});
    const redeemer = new Redeemer({...payments, wallet, walletLock, log, statePath: join(directory, 'redeem-state.json'), maxFeeGwei: 1000, confirmations: 1,
        intervalMs: 3_600_000, thresholdWei: 100n * DOGE, vouchers: () => book, rpcTimeoutMs: 5_000});
    cleanups.push(async () => {
        anchorer.stop();
        redeemer.stop();
    });
    const failures: LedgerError[] = [];
    anchorer.on('failed', (error) => failures.push(error));
    redeemer.on('failed', (error) => failures.push(error));

    const before = await nonceOf(wallet.address);
    const sent: string[] = [];
    const rounds = 3;
    for (let round = 1; round <= rounds; round++) {
        for (let index = 0; index < 3; index++)
            log.append(servedRecord(countersignedReceipt(owner, keyPair())));
        await log.flush();
        book[0] = voucher(payer, incoming, BigInt(round) * DOGE / 10n);
        // All three at the same moment, each taking the wallet's next nonce (the first anchor publishes the authorization too).
        const [anchored, redeemed, deposited] = await Promise.all([anchorer.anchorNow(), redeemer.redeemNow(),
            depositToChannel({...payments, walletLock}, wallet, outgoing, DOGE / 100n)]);
        t.is(anchored.status, 'anchored', `round ${round}`);
        t.is(redeemed.length, 1, `round ${round}`);
        t.like(redeemed[0], {channel: incoming, paid: (DOGE / 10n).toString()});
        if (anchored.status === 'anchored')
            sent.push(anchored.record.txHash);
        sent.push(redeemed[0]!.txHash, deposited.txHash);
    }
    t.deepEqual(failures.map((error) => `${error.code}: ${error.message}`), [], 'no attempt failed and was retried');
    const nonces = await evm.onChain((provider) => Promise.all(sent.map(async (txHash) => {
        const [transaction, receipt] = [await provider.getTransaction(txHash), await provider.getTransactionReceipt(txHash)];
        t.is(transaction?.from, wallet.address);
        t.is(receipt?.status, 1, 'confirmed');
        return transaction!.nonce;
    })));
    t.is(new Set(nonces).size, 3 * rounds, 'distinct nonces');
    t.is(await nonceOf(wallet.address), before + 3 * rounds + 1, 'no nonce lost: the authorization and the nine transactions');
    t.deepEqual(anchorer.status().pending, null);
    t.deepEqual(redeemer.status().pending, []);
});

test.serial('WalletLock: runs one at a time in order; a failure is its caller\'s and the next one runs', async (t) => {
    const lock = new WalletLock();
    const order: string[] = [];
    let inside = 0;
    const step = (name: string, fail = false) => lock.run(async () => {
        inside++;
        t.is(inside, 1, 'alone');
        order.push(`${name} in`);
        await new Promise((resolve) => setImmediate(resolve));
        order.push(`${name} out`);
        inside--;
        if (fail)
            throw new Error(`${name} failed`);
        return name;
    });
    const results = await Promise.allSettled([step('a'), step('b', true), step('c')]);
    t.deepEqual(results.map((result) => result.status === 'fulfilled' ? result.value : (result.reason as Error).message), ['a', 'b failed', 'c']);
    t.deepEqual(order, ['a in', 'a out', 'b in', 'b out', 'c in', 'c out']);
});

/** A node's ledger on `dataDir` with `wallet`, the anchoring contract and, unless `paymentContract` is null, the payment contract. */
async function nodeLedger(dataDir: string, wallet: Wallet, paymentContract: string | null = payments.contract) {
    const keys = keyPair();
    const settings = resolveNodeSettings(dataDir, {flags: {chainRpc: evm.url, chainId: evm.chainId, confirmations: 1, anchorContract,
        anchorContractBlock: anchorBlock, ...(paymentContract !== null && {paymentContract})}, env: {}});
    const previous = process.env.STRONGDOGE_WALLET_KEY;
    process.env.STRONGDOGE_WALLET_KEY = wallet.privateKey;
    try {
        const ledger = await NodeLedger.open({settings, identity: {...keys, shortId: shortNodeId(keys.publicKey)}, onNotice: () => undefined});
        cleanups.push(() => ledger.close());
        return ledger;
    } finally {
        if (previous === undefined)
            delete process.env.STRONGDOGE_WALLET_KEY;
        else
            process.env.STRONGDOGE_WALLET_KEY = previous;
    }
}

test.serial('NodeLedger.verify: vouchers received and redeems against the Redeemed events paid to the node\'s wallet; `ledger verify` prints them', async (t) => {
    const dataDir = await temporaryDir();
    const wallet = await evm.fundedWallet();
    const payer = await evm.fundedWallet();
    const ledger = await nodeLedger(dataDir, wallet);
    const {channel} = await openChannel(payments, payer, wallet.address, 5n * DOGE);
    const costs = [DOGE / 10n, DOGE / 5n, DOGE / 2n];
    let total = 0n;
    for (const cost of costs) {
        total += cost;
        await ledger.log.append({version: LEDGER_RECORD_VERSION, type: 'voucher', at: new Date().toISOString(), peer: keyPair().id,
            jobId: randomBytes(16).toString('hex'), chainId: evm.chainId, contract: payments.contract, channel, payer: payer.address,
            amount: total.toString(), cost: cost.toString(), signature: voucher(payer, channel, total).voucher.signature});
    }
    // The node's redeemer, under the ledger's wallet lock as node-payments.ts runs it.
    const redeemer = new Redeemer({...payments, wallet, walletLock: ledger.walletLock(), log: ledger.log, statePath: join(dataDir, 'redeem-state.json'),
        maxFeeGwei: 1000, confirmations: 1, intervalMs: 3_600_000, thresholdWei: 100n * DOGE, vouchers: () => [voucher(payer, channel, total)]});
    cleanups.push(async () => redeemer.stop());
    const [record] = await redeemer.redeemNow();
    t.like(record, {channel, paid: total.toString()});

    const report = verifyReportSchema.parse(await ledger.verify());
    t.deepEqual(report.problems, []);
    t.deepEqual(report.payments, {vouchers: 3, channels: {[channel]: total.toString()}, vouchedTotal: total.toString(), redeems: 1,
        paidTotal: total.toString(), redeemsConfirmed: 1, chainPaidTotal: total.toString()});
    t.is(verifyText(report).split('\n')[1], 'payments: 3 vouchers received (0.8 DOGE), 1 redeems (0.8 DOGE), on chain 0.8 DOGE');

    // A redeem record the chain does not bear out: the events were read, and it is a problem.
    const fake: RedeemRecord = {...record!, txHash: `0x${randomBytes(32).toString('hex')}`, amount: (total + DOGE).toString(), paid: DOGE.toString()};
    await ledger.log.append(fake);
    const faked = verifyReportSchema.parse(await ledger.verify());
    t.is(faked.problems.length, 1);
    t.regex(faked.problems[0]!, new RegExp(`redeem record of channel ${channel} .*\\(transaction ${fake.txHash}\\): no such redeem is on the chain`));
    t.like(faked.payments, {redeems: 2, redeemsConfirmed: 1, chainPaidTotal: total.toString()});
    t.is(verifyText(faked).split('\n').at(-1), 'payments: 3 vouchers received (0.8 DOGE), 2 redeems (1.8 DOGE), on chain 0.8 DOGE');
});

test.serial('NodeLedger.verify reads the payment contract `ledger deploy` stored; with none, the chain\'s redeems are not checked', async (t) => {
    const stored = await temporaryDir();
    await storePaymentContract(stored, evm.chainId, {address: payments.contract, txHash: null, blockNumber: paymentBlock});
    const withStored = verifyReportSchema.parse(await (await nodeLedger(stored, await evm.fundedWallet(), null)).verify());
    t.like(withStored.payments, {vouchers: 0, redeems: 0, redeemsConfirmed: 0, chainPaidTotal: '0'});
    t.is(verifyText(withStored).split('\n')[1], 'payments: 0 vouchers received (0.0 DOGE), 0 redeems (0.0 DOGE), on chain 0.0 DOGE');

    const without = verifyReportSchema.parse(await (await nodeLedger(await temporaryDir(), await evm.fundedWallet(), null)).verify());
    t.deepEqual(without.problems, []);
    t.like(without.payments, {redeemsConfirmed: null, chainPaidTotal: null});
    t.is(verifyText(without).split('\n')[1], 'payments: 0 vouchers received (0.0 DOGE), 0 redeems (0.0 DOGE), on chain not checked');
});
