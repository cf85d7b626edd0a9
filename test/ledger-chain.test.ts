import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import test from 'ava';
import {createRequire} from 'node:module';
import {Contract, ContractFactory, type InterfaceAbi, Transaction, Wallet} from 'ethers';
import Corestore from 'corestore';
import {type EventReadSettings, readAnchorEvents} from '../ledger/anchor/anchor-events.js';
import {chainProvider, deployAnchorContract} from '../ledger/anchor/chain.js';
import {type RevocationSettings, revokeWallet} from '../ledger/anchor/wallet-revocation.js';
import {Anchorer, type AnchorerOptions} from '../ledger/anchorer.js';
import {ContributionLog} from '../ledger/contribution-log.js';
import {contributionAnchorAbi} from '../ledger/generated/contribution-anchor.js';
import {LedgerError} from '../ledger/ledger-error.js';
import {LEDGER_RECORD_VERSION} from '../ledger/records.js';
import {verifyLog} from '../ledger/verify-log.js';
import {runCli, startDaemon} from '../harness/cli-process.js';
import {type EvmNode, startEvmNode} from '../harness/evm-node.js';
import {countersignedReceipt, type KeyPair, keyPair, servedRecord} from '../harness/ledger-fixture.js';
import {loadOrCreateIdentity} from '../swarm/node-identity.js';

/**
 * Anchoring against a real local EVM JSON-RPC node (hardhat) with Dogechain's chain id: deploy, anchor, verify,
 * tampering, a chain that stops answering, a transaction that is not mined before a restart, a wrong chain, a fee cap;
 * `ledger revoke` (the library, the CLI on a stopped node's data dir, the running node's API) and the anchorer of a
 * revoked wallet.
 */

let evm: EvmNode;
let contract: string;
let deployBlock: number;
let wallet: Wallet;
const peer = keyPair();
const cleanups: (() => Promise<unknown>)[] = [];

test.before(async () => {
    evm = await startEvmNode();
    wallet = new Wallet(evm.accounts[0]!);
    ({address: contract, blockNumber: deployBlock} = await deployAnchorContract({rpcUrl: evm.url, chainId: evm.chainId}, wallet));
});

test.after.always(async () => {
    for (const cleanup of cleanups.reverse())
        await cleanup().catch(() => undefined);
    await evm?.stop();
});

/** A log of `records` served jobs; each test's owner is its own (one identity, one log), unless `owner` is given. */
async function freshLog(records = 20, owner: KeyPair = keyPair()) {
    const directory = await mkdtemp(join(tmpdir(), 'strongdoge-anchor-'));
    const log = await ContributionLog.open({directory, identity: owner});
    cleanups.push(async () => {
        await log.close().catch(() => undefined);
        await rm(directory, {recursive: true, force: true});
    });
    await grow(log, owner, records);
    return {log, directory, owner};
}

async function grow(log: ContributionLog, owner: KeyPair, records: number) {
    for (let index = 0; index < records; index++)
        log.append(servedRecord(countersignedReceipt(owner, peer)));
    await log.flush();
}

function anchorer(log: ContributionLog, directory: string, options: Partial<AnchorerOptions> = {}) {
    return new Anchorer({
        log, wallet, contract, rpcUrl: evm.url, chainId: evm.chainId, statePath: join(directory, 'anchor-state.json'), maxFeeGwei: 1000,
        fromBlock: deployBlock, rpcTimeoutMs: 2_000, ...options
    });
}

const nonceOf = () => chainProvider({rpcUrl: evm.url, chainId: evm.chainId}).getTransactionCount(wallet.address, 'latest');
const events = (log: ContributionLog, options: Partial<EventReadSettings> = {}) => readAnchorEvents(
    {rpcUrl: evm.url, chainId: evm.chainId, contract, confirmations: 1, fromBlock: deployBlock, ...options}, {core: log.key, owner: log.owner, network: log.domain.network});

test.serial('anchor, then verify: the chain\'s anchors match the log, credit is split at the anchored length; a fork or truncation below the anchor is fraud', async (t) => {
    const {log, directory, owner} = await freshLog();
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
    await grow(log, owner, 3);
    const report = await verifyLog(log.hypercore, anchors);
    t.deepEqual(report.problems, []);
    t.deepEqual(report.warnings, []);
    t.is(report.anchorsChecked, 1);
    t.is(report.canonicalCore, log.key);
    t.is(report.tally!.servedJobs, 23);
    t.is(report.anchoredLength, 21);
    t.like(report.anchoredTally, {servedJobs: 20, points: 20 * 40 * 2});
    t.like(report.unanchoredTally, {servedJobs: 3, points: 3 * 40 * 2, anchors: 1});
    t.like(report.domain, {network: 'public', chainId: 2000});

    // Rewrite history: drop the last records and write others in their place.
    await log.close();
    const store = new Corestore(join(directory));
    const core = store.get<unknown>({name: 'contributions', valueEncoding: 'json'});
    await core.ready();
    await core.truncate(15);
    await core.append(Array.from({length: 8}, () => servedRecord(countersignedReceipt(owner, peer, {completionTokens: 4000}))));
    const tampered = await verifyLog(core, anchors);
    t.is(tampered.problems.length, 1);
    t.regex(tampered.problems[0]!, new RegExp(`anchor of length 21 in block ${outcome.record.blockNumber} \\(transaction ${outcome.record.txHash}.*a fork below an anchor: fraud`));
    t.is(tampered.anchoredLength, 0, 'nothing is anchored that the log bears out');
    await core.truncate(10);
    t.regex((await verifyLog(core, anchors)).problems[0]!, /anchor of length 21 .*the log has only 10 records \(truncated below an anchor: fraud\)/);
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
    const {log, directory, owner} = await freshLog();
    const rpc = chainProvider({rpcUrl: evm.url, chainId: evm.chainId});
    t.is((await anchorer(log, directory).anchorNow()).status, 'anchored', 'a first anchor (and the wallet\'s authorization)');
    await grow(log, owner, 5);
    const before = await nonceOf();
    await rpc.send('evm_setAutomine', [false]);
    try {
        const first = anchorer(log, directory, {miningTimeoutMs: 1_000});
        await t.throwsAsync(first.anchorNow(), {instanceOf: LedgerError, message: /not mined and confirmed yet/});
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

test.serial('an anchor sent by a wallet the owner never authorized proves nothing, fails nothing, and is never read', async (t) => {
    const {log, directory} = await freshLog();
    t.is((await anchorer(log, directory).anchorNow()).status, 'anchored');
    // A stranger anchors a bogus tree hash for this log, and even publishes a permission it forged in the owner's name.
    const bogus = contractAs(evm.accounts[2]!);
    const validUntil = Math.floor(Date.now() / 1000) + 3600;
    await (await bogus.getFunction('authorize')(`0x${log.owner}`, `0x${log.key}`, validUntil, `0x${'ab'.repeat(64)}`)).wait();
    await (await bogus.getFunction('anchor')(`0x${log.key}`, 5, `0x${'00'.repeat(32)}`)).wait();
    const chain = await events(log);
    t.is(chain.anchors.length, 1, 'only the authorized wallet\'s anchor is read');
    t.is(chain.authorizations.length, 1, 'the forged permission is not one');
    const report = await verifyLog(log.hypercore, chain);
    t.deepEqual(report.problems, []);
    t.is(report.anchorsChecked, 1);
    t.is(report.anchoredLength, 21);
});

/** The contract, as the funded account `key` calls it. */
function contractAs(key: string) {
    return new Contract(contract, contributionAnchorAbi, new Wallet(key, chainProvider({rpcUrl: evm.url, chainId: evm.chainId})));
}

/** The latest block's time on the chain, unix seconds. */
async function chainTime() {
    return (await chainProvider({rpcUrl: evm.url, chainId: evm.chainId}).getBlock('latest'))!.timestamp;
}

/** The owner authorizes the funded account `key` to anchor `log` until `validUntil`, the account publishing it. */
async function authorizeDirectly(log: ContributionLog, key: string, validUntil: number) {
    const sender = new Wallet(key).address;
    await (await contractAs(key).getFunction('authorize')(`0x${log.owner}`, `0x${log.key}`, validUntil,
        `0x${log.authorizeAnchoring(sender, contract, validUntil)}`)).wait();
}

async function anchorDirectly(log: ContributionLog, key: string) {
    const receipt = await (await contractAs(key).getFunction('anchor')(`0x${log.key}`, log.length, `0x${await log.treeHash()}`)).wait();
    return receipt.blockNumber as number;
}

test.serial('an anchor after its authorization expired, or after it was revoked, does not count; one before does', async (t) => {
    const {log, owner} = await freshLog(5);
    const second = evm.accounts[1]!;
    const secondAddress = new Wallet(second).address;
    const validUntil = await chainTime() + 600;
    await authorizeDirectly(log, second, validUntil);
    await anchorDirectly(log, second);
    t.is((await verifyLog(log.hypercore, await events(log))).anchoredLength, 6, 'inside the window: it counts');
    await grow(log, owner, 2);
    await evm.send('evm_increaseTime', [3600]);
    await anchorDirectly(log, second);
    const expired = await verifyLog(log.hypercore, await events(log));
    t.deepEqual(expired.problems, []);
    t.is(expired.anchoredLength, 6, 'the anchor after expiry counts for nothing');
    t.is(expired.anchorsIgnored, 1);

    // A fresh authorization, then the owner revokes it (any wallet may publish the revocation): later anchors do not count.
    const renewed = await chainTime() + 7 * 24 * 3600;
    await authorizeDirectly(log, second, renewed);
    await grow(log, owner, 2);
    await anchorDirectly(log, second);
    t.is((await verifyLog(log.hypercore, await events(log))).anchoredLength, 10);
    await (await contractAs(evm.accounts[2]!).getFunction('revoke')(`0x${log.owner}`, `0x${log.key}`, secondAddress, renewed,
        `0x${log.revokeAnchoring(secondAddress, contract, renewed)}`)).wait();
    await grow(log, owner, 2);
    await anchorDirectly(log, second);
    const revoked = await verifyLog(log.hypercore, await events(log));
    t.deepEqual(revoked.problems, []);
    t.is(revoked.anchoredLength, 10, 'the anchor after the revocation counts for nothing');
    t.is(revoked.anchorsChecked, 2);
    // A revocation not signed by the owner revokes nothing.
    await grow(log, owner, 1);
    const third = evm.accounts[2]!;
    const thirdUntil = await chainTime() + 7 * 24 * 3600;
    await authorizeDirectly(log, third, thirdUntil);
    await (await contractAs(third).getFunction('revoke')(`0x${log.owner}`, `0x${log.key}`, new Wallet(third).address, thirdUntil,
        `0x${'cd'.repeat(64)}`)).wait();
    await anchorDirectly(log, third);
    t.is((await verifyLog(log.hypercore, await events(log))).anchoredLength, log.length);
});

test.serial('anchors and authorizations count only at the confirmation depth; the anchorer waits for it before recording', async (t) => {
    const {log, directory} = await freshLog(3);
    const anchoring = anchorer(log, directory, {confirmations: 4, miningTimeoutMs: 60_000}).anchorNow();
    // Automine makes a block per transaction only: the depth comes from blocks mined here, one at a time.
    let outcome: Awaited<typeof anchoring> | undefined;
    void anchoring.then((result) => outcome = result, () => undefined);
    for (let rounds = 0; outcome === undefined && rounds < 200; rounds++) {
        await sleep(200);
        const chain = await events(log, {confirmations: 4});
        t.true(chain.anchors.every((anchor) => anchor.blockNumber <= chain.confirmedBlock));
        if (chain.anchors.length === 0)
            t.is((await verifyLog(log.hypercore, chain)).anchoredLength, 0, 'nothing counts before the depth');
        await evm.mine(1);
    }
    const done = await anchoring;
    if (done.status !== 'anchored')
        return t.fail();
    const head = await chainProvider({rpcUrl: evm.url, chainId: evm.chainId}).getBlockNumber();
    t.true(head - done.record.blockNumber + 1 >= 4, 'recorded once 4 deep');
    const shallow = await events(log, {confirmations: head - done.record.blockNumber + 2});
    t.is(shallow.anchors.length, 0, 'one block short of the depth: not read');
    t.is((await verifyLog(log.hypercore, shallow)).anchoredLength, 0);
    t.deepEqual((await verifyLog(log.hypercore, shallow)).problems, [], 'its record is not judged until it is confirmed');
    t.is((await verifyLog(log.hypercore, await events(log, {confirmations: 4}))).anchoredLength, 4);
});

test.serial('a second log for the same identity is flagged in both; the first authorized is the canonical one', async (t) => {
    const {log: first, directory: firstDir, owner} = await freshLog(3);
    const firstOutcome = await anchorer(first, firstDir).anchorNow();
    const {log: second, directory: secondDir} = await freshLog(3, owner);
    const secondOutcome = await anchorer(second, secondDir).anchorNow();
    if (firstOutcome.status !== 'anchored' || secondOutcome.status !== 'anchored')
        return t.fail();
    const secondChain = await events(second);
    t.is(secondChain.authorizations.length, 2, 'both found by the owner\'s key');
    const flagged = await verifyLog(second.hypercore, secondChain);
    t.is(flagged.canonicalCore, first.key);
    t.regex(flagged.problems.join('\n'), new RegExp(`a second log for this identity: ${second.key}, authorized in block \\d+; its first log is ${first.key}`));
    const canonical = await verifyLog(first.hypercore, await events(first));
    t.is(canonical.problems.length, 1);
    t.regex(canonical.problems[0]!, new RegExp(`^a second log for this identity: ${second.key}, authorized in block \\d+$`));
});

test.serial('a stale replicated copy is "not up to date", not truncation; the owner\'s own shorter log is', async (t) => {
    const {log, directory, owner} = await freshLog(10);
    const auditorDir = await mkdtemp(join(tmpdir(), 'strongdoge-auditor-'));
    const auditor = new Corestore(auditorDir);
    cleanups.push(async () => {
        await auditor.close();
        await rm(auditorDir, {recursive: true, force: true});
    });
    const ours = log.corestore.replicate(true) as NodeJS.ReadWriteStream;
    const theirs = auditor.replicate(false) as NodeJS.ReadWriteStream;
    ours.pipe(theirs).pipe(ours);
    const copy = auditor.get<unknown>({key: Buffer.from(log.key, 'hex'), valueEncoding: 'json'});
    await copy.ready();
    await copy.update({wait: true});
    await copy.download({start: 0, end: copy.length}).done();
    t.is(copy.length, 11);
    (ours as unknown as {destroy(): void}).destroy();
    await grow(log, owner, 5);
    t.is((await anchorer(log, directory).anchorNow()).status, 'anchored');
    const chain = await events(log);
    const stale = await verifyLog(copy, chain, {replicated: true});
    t.deepEqual(stale.problems, []);
    t.deepEqual(stale.warnings, ['copy not up to date (11 of 16 records): no peer served the rest; only what is here was checked']);
    t.is(stale.anchoredLength, 0);
    t.like(stale.unanchoredTally, {servedJobs: 10});
    const truncated = await verifyLog(copy, chain);
    t.regex(truncated.problems[0]!, /the log has only 11 records \(truncated below an anchor: fraud\)/, 'the owner\'s own log this short is fraud');
});

test.serial('a fake anchor record is a problem, and does not stall the anchorer', async (t) => {
    const {log, directory} = await freshLog(4);
    t.is((await anchorer(log, directory).anchorNow()).status, 'anchored');
    const block = await chainProvider({rpcUrl: evm.url, chainId: evm.chainId}).getBlockNumber();
    await log.append({version: LEDGER_RECORD_VERSION, type: 'anchor', at: new Date().toISOString(), chainId: evm.chainId, contract,
        txHash: `0x${'77'.repeat(32)}`, blockNumber: block, logLength: log.length, treeHash: await log.treeHash()});
    await log.flush();
    const faked = await verifyLog(log.hypercore, await events(log));
    t.is(faked.problems.length, 1);
    t.regex(faked.problems[0]!, new RegExp(`^record 6: anchor record of length 6 in block ${block} \\(transaction 0x(77){32}\\): no such anchor by an authorized wallet`));
    const outcome = await anchorer(log, directory).anchorNow();
    t.is(outcome.status, 'anchored', 'the fake record does not make the log look anchored');
    t.is(outcome.status === 'anchored' && outcome.record.logLength, 7);
    t.is((await verifyLog(log.hypercore, await events(log))).anchoredLength, 7);
});

test.serial('5,000 spam anchors for a log from an unauthorized sender are never read; reads are paged', async (t) => {
    const {log, directory} = await freshLog(2);
    t.is((await anchorer(log, directory).anchorNow()).status, 'anchored');
    const spammer = await deploySpammer(evm.accounts[2]!);
    for (let round = 0; round < 5; round++)
        await (await spammer.getFunction('spam')(contract, `0x${log.key}`, 1000)).wait();
    const rpc = chainProvider({rpcUrl: evm.url, chainId: evm.chainId});
    const onChain = await rpc.getLogs({address: contract, fromBlock: deployBlock, toBlock: 'latest',
        topics: [null, null, `0x${log.key}`]});
    t.true(onChain.length >= 5001, `${onChain.length} Anchored events for the log on the chain`);
    const head = await rpc.getBlockNumber();
    const chain = await events(log, {pageBlocks: 4});
    t.is(chain.reads.events, 2, 'the owner\'s authorization and its wallet\'s anchor, nothing else');
    const pages = Math.ceil((head - deployBlock + 1) / 4);
    t.true(chain.reads.calls <= 2 * pages, `${chain.reads.calls} eth_getLogs calls of at most 4 blocks each`);
    t.is((await verifyLog(log.hypercore, chain)).anchoredLength, 3);
    // Spam for the owner's key itself (forged authorizations) is bounded by the event budget, and said so.
    for (let index = 0; index < 6; index++)
        await (await contractAs(evm.accounts[2]!).getFunction('authorize')(`0x${log.owner}`, `0x${log.key}`, 1, `0x${'ab'.repeat(64)}`)).wait();
    const bounded = await events(log, {maxEvents: 4});
    t.true(bounded.reads.events <= 4 + 4 * 2, `${bounded.reads.events} events read`);
    t.regex(bounded.incomplete ?? '', /stopped reading the chain after 4 events/);
    t.regex((await verifyLog(log.hypercore, bounded)).warnings[0]!, /not read whole/);
});

/** A contract that calls `anchor()` many times in one transaction: thousands of `Anchored` events from one sender, cheaply. */
async function deploySpammer(key: string) {
    const solc = createRequire(import.meta.url)('solc') as {compile(input: string): string};
    const source = `// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;
interface Anchor { function anchor(bytes32 core, uint64 logLength, bytes32 treeHash) external; }
contract Spammer {
    function spam(address target, bytes32 core, uint64 count) external {
        for (uint64 index = 0; index < count; index++) Anchor(target).anchor(core, index, bytes32(uint256(index)));
    }
}`;
    const output = JSON.parse(solc.compile(JSON.stringify({language: 'Solidity', sources: {'Spammer.sol': {content: source}},
        settings: {evmVersion: 'paris', outputSelection: {'Spammer.sol': {Spammer: ['abi', 'evm.bytecode.object']}}}}))) as
        {contracts: {'Spammer.sol': {Spammer: {abi: unknown[], evm: {bytecode: {object: string}}}}}};
    const {abi, evm: {bytecode}} = output.contracts['Spammer.sol'].Spammer;
    const factory = new ContractFactory(abi as InterfaceAbi, `0x${bytecode.object}`, new Wallet(key, chainProvider({rpcUrl: evm.url, chainId: evm.chainId})));
    const deployed = await factory.deploy();
    await deployed.waitForDeployment();
    return new Contract(await deployed.getAddress(), abi as InterfaceAbi, new Wallet(key, chainProvider({rpcUrl: evm.url, chainId: evm.chainId})));
}

test.serial('a reorganization drops an anchor before it is confirmed: the anchorer notices and anchors again', async (t) => {
    const {log, directory, owner} = await freshLog(3);
    t.is((await anchorer(log, directory).anchorNow()).status, 'anchored', 'authorized and anchored once');
    await grow(log, owner, 2);
    const rpc = chainProvider({rpcUrl: evm.url, chainId: evm.chainId});
    const snapshot = await evm.send('evm_snapshot');
    const anchoring = anchorer(log, directory, {confirmations: 3, miningTimeoutMs: 60_000}).anchorNow();
    let outcome: Awaited<typeof anchoring> | undefined;
    void anchoring.then((result) => outcome = result, () => undefined);
    // Wait until the anchor is mined (1 deep), then drop the block it is in.
    const statePath = join(directory, 'anchor-state.json');
    let dropped: string | undefined;
    let minedIn: string | undefined;
    for (let rounds = 0; dropped === undefined && rounds < 100; rounds++) {
        await sleep(100);
        const {pending} = JSON.parse(await readFile(statePath, 'utf8')) as {pending: {txHash: string} | null};
        const mined = pending === null ? null : await rpc.getTransactionReceipt(pending.txHash);
        if (pending !== null && mined !== null) {
            t.true(await evm.send('evm_revert', [snapshot]) as boolean);
            dropped = pending.txHash;
            minedIn = mined.blockHash;
        }
    }
    t.truthy(dropped, 'the anchor was mined');
    // Gone with its block; the anchorer may already have sent it again (the chain mines at once), into another block.
    const afterRevert = await rpc.getTransactionReceipt(dropped!);
    t.true(afterRevert === null || afterRevert.blockHash !== minedIn, 'and dropped by the reorganization');
    for (let rounds = 0; outcome === undefined && rounds < 200; rounds++) {
        await sleep(200);
        await evm.mine(1);
    }
    const done = await anchoring;
    if (done.status !== 'anchored')
        return t.fail();
    t.is(done.record.txHash as string | undefined, dropped, 'the same transaction, sent again');
    const receipt = await rpc.getTransactionReceipt(dropped!);
    t.is(receipt!.blockNumber, done.record.blockNumber, 'recorded in the block it is in now');
    t.is(log.anchors.length, 2);
    const report = await verifyLog(log.hypercore, await events(log, {confirmations: 3}));
    t.deepEqual(report.problems, []);
    t.is(report.anchoredLength, 7);
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

/** A new wallet's key, funded on the chain: each test's wallets are its own (hardhat funds only three accounts here). */
async function fundedKey() {
    const wallet = Wallet.createRandom();
    await evm.send('hardhat_setBalance', [wallet.address, '0x56bc75e2d63100000']);
    return wallet.privateKey;
}

async function tempDir(prefix: string) {
    const directory = await mkdtemp(join(tmpdir(), prefix));
    cleanups.push(() => rm(directory, {recursive: true, force: true}));
    return directory;
}

const revocationSettings = (): RevocationSettings => ({rpcUrl: evm.url, chainId: evm.chainId, contract, fromBlock: deployBlock, maxFeeGwei: 1000,
    confirmations: 1, miningTimeoutMs: 60_000});
const provider = () => chainProvider({rpcUrl: evm.url, chainId: evm.chainId});
const nonceOfKey = (key: string) => provider().getTransactionCount(new Wallet(key).address, 'latest');

test.serial('revoking a wallet: its later anchors count for nothing, earlier ones still do; its anchorer stops; nothing left to revoke', async (t) => {
    const {log, directory, owner} = await freshLog(4);
    const anchoringKey = await fundedKey();
    const anchoringWallet = new Wallet(anchoringKey).address;
    const first = await anchorer(log, directory, {wallet: new Wallet(anchoringKey)}).anchorNow();
    if (first.status !== 'anchored')
        return t.fail();
    const [authorization] = (await events(log)).authorizations;

    // Another wallet pays for the revocation: the signature is the owner's.
    const payer = new Wallet(await fundedKey());
    const revoked = await revokeWallet(revocationSettings(), log, payer, anchoringWallet.toLowerCase());
    t.is(revoked.length, 1);
    t.like(revoked[0], {wallet: anchoringWallet, validUntil: authorization!.validUntil});
    const receipt = await provider().getTransactionReceipt(revoked[0]!.txHash);
    t.is(receipt?.from, payer.address);
    t.is(receipt?.blockNumber, revoked[0]!.blockNumber);
    t.true(revoked[0]!.blockNumber > first.record.blockNumber);

    // The revoked wallet anchors anyway: that anchor counts for nothing, the one before still does.
    await grow(log, owner, 3);
    const lateBlock = await anchorDirectly(log, anchoringKey);
    t.true(lateBlock > revoked[0]!.blockNumber);
    const chain = await events(log);
    t.like(chain.authorizations[0], {sender: anchoringWallet, until: {blockNumber: revoked[0]!.blockNumber}});
    const report = await verifyLog(log.hypercore, chain);
    t.deepEqual(report.problems, []);
    t.is(report.anchorsChecked, 1);
    t.is(report.anchorsIgnored, 1, 'the anchor after the revocation');
    t.is(report.anchoredLength, first.record.logLength);

    // The node's anchorer does not authorize the revoked wallet again: it stops, saying why, and sends nothing.
    const before = await nonceOfKey(anchoringKey);
    const stopped = anchorer(log, directory, {wallet: new Wallet(anchoringKey)});
    const error = await t.throwsAsync(stopped.anchorNow(), {instanceOf: LedgerError});
    t.is(error!.code, 'NOT_CONFIGURED');
    t.regex(error!.message, new RegExp(`revoked the anchoring wallet ${anchoringWallet} in block ${revoked[0]!.blockNumber}: .*configure another wallet`));
    t.is(stopped.status().nextAttemptAt, null);
    t.is(await nonceOfKey(anchoringKey), before, 'no new authorization, no anchor');
    t.is(log.anchors.length, 1);

    // Another wallet anchors the log again: the owner authorizes it, and its anchor counts.
    const next = await anchorer(log, directory, {wallet: new Wallet(await fundedKey())}).anchorNow();
    t.is(next.status, 'anchored');
    const renewed = await verifyLog(log.hypercore, await events(log));
    t.deepEqual(renewed.problems, []);
    t.is(renewed.anchoredLength, log.length - 1);

    const again = await t.throwsAsync(revokeWallet(revocationSettings(), log, payer, anchoringWallet), {instanceOf: LedgerError});
    t.is(again!.code, 'NOTHING_TO_REVOKE');
    t.regex(again!.message, new RegExp(`no authorization of ${anchoringWallet} to anchor the log ${log.key} is valid`));
    const stranger = await t.throwsAsync(revokeWallet(revocationSettings(), log, payer, Wallet.createRandom().address), {instanceOf: LedgerError});
    t.is(stranger!.code, 'NOTHING_TO_REVOKE');
    const invalid = await t.throwsAsync(revokeWallet(revocationSettings(), log, payer, '0x1234'), {instanceOf: LedgerError});
    t.is(invalid!.code, 'INVALID_REQUEST');
    t.regex(invalid!.message, /'0x1234' is not a wallet address/);
});

test.serial('an anchor signed before its wallet was revoked and mined after is not recorded', async (t) => {
    const {log, directory, owner} = await freshLog(2);
    const anchoringKey = await fundedKey();
    t.is((await anchorer(log, directory, {wallet: new Wallet(anchoringKey)}).anchorNow()).status, 'anchored');
    await grow(log, owner, 2);
    const rpc = provider();
    await rpc.send('evm_setAutomine', [false]);
    let pendingTx: string;
    try {
        // Signed, saved and sent, but not mined: then it is dropped from the mempool, as a busy chain may.
        await t.throwsAsync(anchorer(log, directory, {wallet: new Wallet(anchoringKey), miningTimeoutMs: 1_000}).anchorNow(), {message: /not mined and confirmed yet/});
        pendingTx = (await rpc.send('eth_getBlockByNumber', ['pending', false]) as {transactions: string[]}).transactions[0]!;
        t.truthy(pendingTx);
        t.true(await evm.send('hardhat_dropTransaction', [pendingTx]) as boolean);
    } finally {
        await rpc.send('evm_setAutomine', [true]);
    }
    await revokeWallet(revocationSettings(), log, new Wallet(await fundedKey()), new Wallet(anchoringKey).address);
    // The restarted anchorer sends its saved transaction again; it is mined after the revocation: no record.
    const restarted = anchorer(log, directory, {wallet: new Wallet(anchoringKey)});
    const error = await t.throwsAsync(restarted.anchorNow(), {instanceOf: LedgerError});
    t.regex(error!.message, new RegExp(`the anchor in transaction ${pendingTx} \\(block \\d+\\) does not count`));
    t.not(await rpc.getTransactionReceipt(pendingTx), null, 'it was mined');
    t.is(log.anchors.length, 1, 'not recorded');
    const report = await verifyLog(log.hypercore, await events(log));
    t.deepEqual(report.problems, []);
    t.is(report.anchorsIgnored, 1);
    t.regex((await t.throwsAsync(restarted.anchorNow()))!.message, /revoked the anchoring wallet/, 'and it stops there');
});

test.serial('ledger revoke on the data dir of a stopped node: prints what it revoked; verify counts only the anchor before it', async (t) => {
    const dataDir = await tempDir('strongdoge-revoke-node-');
    const {identity} = await loadOrCreateIdentity(dataDir);
    const anchoringKey = await fundedKey();
    const anchoringWallet = new Wallet(anchoringKey).address;
    const flags = ['--data-dir', dataDir, '--port', '9', '--chain-rpc', evm.url, '--chain-id', String(evm.chainId), '--confirmations', '1',
        '--anchor-contract', contract, '--anchor-contract-block', String(deployBlock)];
    const ledger = (args: string[], key = anchoringKey) => runCli(['ledger', ...args, ...flags], {STRONGDOGE_WALLET_KEY: key});
    const anchored = await ledger(['anchor']);
    t.is(anchored.code, 0, anchored.stderr);
    t.regex(anchored.stdout, /^anchored 1 records in block \d+/);

    const payerKey = await fundedKey();
    const revoked = await ledger(['revoke', anchoringWallet, '--json'], payerKey);
    t.is(revoked.code, 0, revoked.stderr);
    const outcome = JSON.parse(revoked.stdout) as {revoked: {wallet: string, validUntil: number, txHash: string, blockNumber: number}[]};
    t.is(outcome.revoked.length, 1);
    t.is(outcome.revoked[0]!.wallet, anchoringWallet);
    t.regex(outcome.revoked[0]!.txHash, /^0x[0-9a-f]{64}$/);
    t.is((await provider().getTransactionReceipt(outcome.revoked[0]!.txHash))?.from, new Wallet(payerKey).address);

    // The log grows; the revoked wallet anchors it anyway, by hand; the node's own anchorer refuses to.
    const log = await ContributionLog.open({directory: join(dataDir, 'ledger', 'corestore'), identity});
    await grow(log, identity as unknown as KeyPair, 2);
    await anchorDirectly(log, anchoringKey);
    await log.close();
    const refused = await ledger(['anchor']);
    t.is(refused.code, 1);
    t.regex(refused.stderr, new RegExp(`strongdoge: error: the log's owner revoked the anchoring wallet ${anchoringWallet} in block ${outcome.revoked[0]!.blockNumber}`));

    const verified = await ledger(['verify', '--json']);
    t.is(verified.code, 0, verified.stdout + verified.stderr);
    t.like(JSON.parse(verified.stdout), {anchorsChecked: 1, anchorsIgnored: 1, anchoredLength: 1, problems: []});

    const nothing = await ledger(['revoke', anchoringWallet]);
    t.is(nothing.code, 1);
    t.regex(nothing.stderr, new RegExp(`strongdoge: error: no authorization of ${anchoringWallet} to anchor the log [0-9a-f]{64} is valid .*nothing to revoke`));
    const invalid = await ledger(['revoke', 'dogecoin']);
    t.is(invalid.code, 1);
    t.regex(invalid.stderr, /strongdoge: error: 'dogecoin' is not a wallet address/);
    const noWallet = await runCli(['ledger', 'revoke', anchoringWallet, ...flags], {STRONGDOGE_WALLET_KEY: ''});
    t.is(noWallet.code, 1);
    t.regex(noWallet.stderr, /strongdoge: error: no wallet to pay for the revocation: no wallet: set STRONGDOGE_WALLET_KEY/);
});

test.serial('ledger revoke through the running node: POST /api/ledger/revoke behind the API key; its anchorer stops', async (t) => {
    const dataDir = await tempDir('strongdoge-revoke-daemon-');
    const anchoringKey = await fundedKey();
    const anchoringWallet = new Wallet(anchoringKey).address;
    const chainFlags = ['--chain-rpc', evm.url, '--chain-id', String(evm.chainId), '--confirmations', '1', '--anchor-contract', contract,
        '--anchor-contract-block', String(deployBlock)];
    const daemon = await startDaemon(['--data-dir', dataDir, '--api-key', 'sesame', ...chainFlags], {env: {STRONGDOGE_WALLET_KEY: anchoringKey}});
    cleanups.push(() => daemon.stop());
    const port = new URL(daemon.origin).port;
    // Through the node: it answers on the port; the CLI's own wallet is not used (the node's pays).
    const ledger = (args: string[]) => runCli(['ledger', ...args, '--data-dir', dataDir, '--port', port, '--api-key', 'sesame', ...chainFlags],
        {STRONGDOGE_WALLET_KEY: ''});
    const anchored = await ledger(['anchor']);
    t.is(anchored.code, 0, anchored.stderr);

    const post = (body: unknown, key: string | null = 'sesame') => fetch(`${daemon.origin}/api/ledger/revoke`, {method: 'POST',
        headers: {'content-type': 'application/json', ...(key !== null && {authorization: `Bearer ${key}`})}, body: JSON.stringify(body)});
    t.is((await post({wallet: anchoringWallet}, null)).status, 401, 'the API key rule holds');
    const bad = await post({wallet: 'such address'});
    t.is(bad.status, 400);
    t.like(await bad.json(), {error: {param: 'wallet', code: 'invalid_value'}});
    const badChecksum = await post({wallet: anchoringWallet.toLowerCase().replace(/^0x(.)/, (_, digit: string) => `0x${digit === 'a' ? 'B' : 'A'}`)});
    t.is(badChecksum.status, 400);
    t.like(await badChecksum.json(), {error: {code: 'invalid_request'}});
    const stranger = await post({wallet: Wallet.createRandom().address});
    t.is(stranger.status, 409);
    t.like(await stranger.json(), {error: {code: 'nothing_to_revoke'}});

    const revoked = await ledger(['revoke', anchoringWallet]);
    t.is(revoked.code, 0, revoked.stderr);
    t.regex(revoked.stdout, new RegExp(`^revoked the authorization of ${anchoringWallet} valid until \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z \\(\\d+\\), in block \\d+, tx 0x[0-9a-f]{64}\n$`));
    const refused = await ledger(['anchor']);
    t.is(refused.code, 1);
    t.regex(refused.stderr, /409 the log's owner revoked the anchoring wallet/);
    const status = await (await fetch(`${daemon.origin}/api/ledger`, {headers: {authorization: 'Bearer sesame'}})).json() as {anchoring: {lastError: string}};
    t.regex(status.anchoring.lastError, /^NOT_CONFIGURED: the log's owner revoked/);
});
