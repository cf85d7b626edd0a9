import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import test from 'ava';
import {Contract, Transaction, Wallet} from 'ethers';
import Corestore from 'corestore';
import {readAnchorEvents} from '../ledger/anchor/anchor-events.js';
import {chainProvider, deployAnchorContract} from '../ledger/anchor/chain.js';
import {Anchorer, type AnchorerOptions} from '../ledger/anchorer.js';
import {ContributionLog} from '../ledger/contribution-log.js';
import {contributionAnchorAbi} from '../ledger/generated/contribution-anchor.js';
import {LedgerError} from '../ledger/ledger-error.js';
import {verifyLog} from '../ledger/verify-log.js';
import {type EvmNode, startEvmNode} from '../harness/evm-node.js';
import {countersignedReceipt, keyPair, servedRecord} from '../harness/ledger-fixture.js';

/**
 * Anchoring against a real local EVM JSON-RPC node (hardhat) with Dogechain's chain id: deploy, anchor, verify,
 * tampering, a chain that stops answering, a transaction that is not mined before a restart, a wrong chain, a fee cap.
 */

let evm: EvmNode;
let contract: string;
let wallet: Wallet;
const owner = keyPair();
const peer = keyPair();
const cleanups: (() => Promise<unknown>)[] = [];

test.before(async () => {
    evm = await startEvmNode();
    wallet = new Wallet(evm.accounts[0]!);
    ({address: contract} = await deployAnchorContract({rpcUrl: evm.url, chainId: evm.chainId}, wallet));
});

test.after.always(async () => {
    for (const cleanup of cleanups.reverse())
        await cleanup().catch(() => undefined);
    await evm?.stop();
});

async function freshLog(records = 20) {
    const directory = await mkdtemp(join(tmpdir(), 'strongdoge-anchor-'));
    const log = await ContributionLog.open({directory, identity: owner});
    cleanups.push(async () => {
        await log.close().catch(() => undefined);
        await rm(directory, {recursive: true, force: true});
    });
    for (let index = 0; index < records; index++)
        log.append(servedRecord(countersignedReceipt(owner, peer)));
    await log.flush();
    return {log, directory};
}

function anchorer(log: ContributionLog, directory: string, options: Partial<AnchorerOptions> = {}) {
    return new Anchorer({
        log, wallet, contract, rpcUrl: evm.url, chainId: evm.chainId, statePath: join(directory, 'anchor-state.json'), maxFeeGwei: 1000,
        rpcTimeoutMs: 2_000, ...options
    });
}

const nonceOf = () => chainProvider({rpcUrl: evm.url, chainId: evm.chainId}).getTransactionCount(wallet.address, 'latest');
const events = (log: ContributionLog) => readAnchorEvents({rpcUrl: evm.url, chainId: evm.chainId, contract}, log.key);

test.serial('anchor, then verify: the chain\'s anchors match the log; a rewritten log fails, naming the anchor', async (t) => {
    const {log, directory} = await freshLog();
    const outcome = await anchorer(log, directory).anchorNow();
    t.is(outcome.status, 'anchored');
    if (outcome.status !== 'anchored')
        return;
    t.is(outcome.record.logLength, 21);
    t.is(log.length, 22, 'the anchor record follows');
    t.like(log.anchors.at(-1), {txHash: outcome.record.txHash, logLength: 21});
    t.deepEqual((await anchorer(log, directory).anchorNow()).status, 'up-to-date', 'nothing new: no transaction');
    const anchors = await events(log);
    t.is(anchors.anchors.length, 1);
    t.like(anchors.anchors[0], {logLength: 21, treeHash: await log.treeHash(21), sender: wallet.address, blockNumber: outcome.record.blockNumber});
    t.is(anchors.authorizations.length, 1, 'the wallet published the owner\'s permission once');
    const report = await verifyLog(log.hypercore, anchors);
    t.deepEqual(report.problems, []);
    t.is(report.anchorsChecked, 1);
    t.is(report.tally!.servedJobs, 20);

    // Rewrite history: drop the last records and write others in their place.
    await log.close();
    const store = new Corestore(join(directory));
    const core = store.get<unknown>({name: 'contributions', valueEncoding: 'json'});
    await core.ready();
    await core.truncate(15);
    await core.append(Array.from({length: 8}, () => servedRecord(countersignedReceipt(owner, peer, {completionTokens: 4000}))));
    const tampered = await verifyLog(core, anchors);
    t.is(tampered.problems.length, 1);
    t.regex(tampered.problems[0]!, new RegExp(`anchor of length 21 in block ${outcome.record.blockNumber} \\(transaction ${outcome.record.txHash}.*rewritten or forked`));
    await core.truncate(10);
    t.regex((await verifyLog(core, anchors)).problems[0]!, /anchor of length 21 .*the log has only 10 records \(truncated\?\)/);
    await store.close();
});

test.serial('a chain that stops answering: the attempt fails clearly, the next one after it returns anchors once', async (t) => {
    const {log, directory} = await freshLog();
    const before = await nonceOf();
    evm.pause();
    let failure: unknown;
    try {
        await anchorer(log, directory).anchorNow();
    } catch (error) {
        failure = error;
    } finally {
        evm.resume();
    }
    t.true(failure instanceof LedgerError && failure.code === 'CHAIN_UNAVAILABLE', String(failure));
    const outcome = await anchorer(log, directory).anchorNow();
    t.is(outcome.status, 'anchored');
    t.is((await events(log)).anchors.length, 1);
    t.is(await nonceOf(), before + 2, 'the wallet\'s authorization and one anchor, nothing more');
    t.is(log.anchors.length, 1);
});

test.serial('a transaction not mined before a restart is sent again, the same one: one anchor, never two', async (t) => {
    const {log, directory} = await freshLog();
    const rpc = chainProvider({rpcUrl: evm.url, chainId: evm.chainId});
    t.is((await anchorer(log, directory).anchorNow()).status, 'anchored', 'a first anchor (and the wallet\'s authorization)');
    for (let index = 0; index < 5; index++)
        log.append(servedRecord(countersignedReceipt(owner, peer)));
    await log.flush();
    const before = await nonceOf();
    await rpc.send('evm_setAutomine', [false]);
    try {
        const first = anchorer(log, directory, {miningTimeoutMs: 1_000});
        await t.throwsAsync(first.anchorNow(), {instanceOf: LedgerError, message: /not mined yet/});
        const state = JSON.parse(await readFile(join(directory, 'anchor-state.json'), 'utf8')) as {pending: {txHash: string, logLength: number}};
        t.is(state.pending.logLength, 27);
        // The node restarts: a new anchorer finds the pending transaction and waits for it rather than sending another.
        const second = anchorer(log, directory, {miningTimeoutMs: 30_000});
        await second.start();
        t.like(second.status().pending, {txHash: state.pending.txHash});
        const anchoring = second.anchorNow();
        await sleep(500);
        await rpc.send('evm_mine', []);
        const outcome = await anchoring;
        second.stop();
        t.is(outcome.status === 'anchored' && outcome.record.txHash, state.pending.txHash);
    } finally {
        await rpc.send('evm_setAutomine', [true]);
        rpc.destroy();
    }
    t.is((await events(log)).anchors.length, 2);
    t.is(await nonceOf(), before + 1, 'one transaction for the second anchor');
    t.is(log.anchors.length, 2);
    t.like(JSON.parse(await readFile(join(directory, 'anchor-state.json'), 'utf8')), {pending: null});
});

test.serial('a run that stopped after recording an anchor but before forgetting its transaction records it once', async (t) => {
    const {log, directory} = await freshLog();
    const outcome = await anchorer(log, directory).anchorNow();
    if (outcome.status !== 'anchored')
        return t.fail();
    // As the state file was just before the record's transaction was forgotten.
    const statePath = join(directory, 'anchor-state.json');
    const state = JSON.parse(await readFile(statePath, 'utf8')) as {pending: unknown, authorized: string[]};
    const sent = await chainProvider({rpcUrl: evm.url, chainId: evm.chainId}).getTransaction(outcome.record.txHash);
    await writeFile(statePath, JSON.stringify({...state, pending: {rawTx: Transaction.from(sent!).serialized, txHash: outcome.record.txHash,
        nonce: sent!.nonce, logLength: outcome.record.logLength, treeHash: outcome.record.treeHash, chainId: evm.chainId, contract, wallet: wallet.address}}));
    const restarted = anchorer(log, directory);
    await restarted.start();
    restarted.stop();
    const again = await restarted.anchorNow();
    t.is(again.status === 'anchored' && again.record.txHash, outcome.record.txHash);
    t.is(log.anchors.length, 1, 'no second anchor record');
    t.is((await events(log)).anchors.length, 1);
});

test.serial('an anchor sent by a wallet the owner never authorized proves nothing and fails nothing', async (t) => {
    const {log, directory} = await freshLog();
    t.is((await anchorer(log, directory).anchorNow()).status, 'anchored');
    // A stranger anchors a bogus tree hash for this log, and even publishes a permission it forged.
    const stranger = new Wallet(evm.accounts[2]!, chainProvider({rpcUrl: evm.url, chainId: evm.chainId}));
    const bogus = new Contract(contract, contributionAnchorAbi, stranger);
    await (await bogus.getFunction('authorize')(`0x${log.key}`, `0x${'ab'.repeat(64)}`)).wait();
    await (await bogus.getFunction('anchor')(`0x${log.key}`, 5, `0x${'00'.repeat(32)}`)).wait();
    const report = await verifyLog(log.hypercore, await events(log));
    t.deepEqual(report.problems, []);
    t.is(report.anchorsChecked, 1);
    t.is(report.anchorsIgnored, 1);
});

test.serial('a chain with another id is refused before anything is signed or sent', async (t) => {
    const {log, directory} = await freshLog();
    const before = await nonceOf();
    const error = await t.throwsAsync(anchorer(log, directory, {chainId: 568}).anchorNow(), {instanceOf: LedgerError});
    t.is(error!.code, 'WRONG_CHAIN');
    t.regex(error!.message, /chain id 2000, not the configured 568: nothing was sent/);
    t.is(await nonceOf(), before);
    t.is(log.anchors.length, 0);
});

test.serial('a fee above --max-fee-gwei is refused, nothing sent', async (t) => {
    const {log, directory} = await freshLog();
    const before = await nonceOf();
    const error = await t.throwsAsync(anchorer(log, directory, {maxFeeGwei: 1e-9}).anchorNow(), {instanceOf: LedgerError});
    t.is(error!.code, 'FEE_TOO_HIGH');
    t.is(await nonceOf(), before);
});
