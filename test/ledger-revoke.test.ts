import {mkdtemp, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import test from 'ava';
import {Contract, Wallet} from 'ethers';
import {type EventReadSettings, readAnchorEvents} from '../ledger/anchor/anchor-events.js';
import {chainProvider, deployAnchorContract} from '../ledger/anchor/chain.js';
import {type RevocationSettings, revokeWallet} from '../ledger/anchor/wallet-revocation.js';
import {Anchorer, type AnchorerOptions} from '../ledger/anchorer.js';
import {ContributionLog} from '../ledger/contribution-log.js';
import {contributionAnchorAbi} from '../ledger/generated/contribution-anchor.js';
import {LedgerError} from '../ledger/ledger-error.js';
import {verifyLog} from '../ledger/verify-log.js';
import {runCli} from '../harness/cli-process.js';
import {type EvmNode, startEvmNode} from '../harness/evm-node.js';
import {countersignedReceipt, type KeyPair, keyPair, servedRecord} from '../harness/ledger-fixture.js';
import {loadOrCreateIdentity} from '../swarm/node-identity.js';

/**
 * `strongdoge ledger revoke` against a real local EVM JSON-RPC node (hardhat) with Dogechain's chain id: the owner's
 * authorizations of a wallet are revoked on the chain, anchors by it after the revocation count for nothing (earlier
 * ones still do), and the anchorer of a revoked wallet stops rather than authorize it again.
 */

let evm: EvmNode;
let contract: string;
let deployBlock: number;
const peer = keyPair();
const cleanups: (() => Promise<unknown>)[] = [];

test.before(async () => {
    evm = await startEvmNode();
    ({address: contract, blockNumber: deployBlock} = await deployAnchorContract({rpcUrl: evm.url, chainId: evm.chainId}, new Wallet(evm.accounts[0]!)));
});

test.after.always(async () => {
    for (const cleanup of cleanups.reverse())
        await cleanup().catch(() => undefined);
    await evm?.stop();
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

async function freshLog(records: number) {
    const owner = keyPair();
    const directory = await tempDir('strongdoge-revoke-');
    const log = await ContributionLog.open({directory, identity: owner});
    cleanups.push(() => log.close());
    await grow(log, owner, records);
    return {log, directory, owner};
}

async function grow(log: ContributionLog, owner: KeyPair, records: number) {
    for (let index = 0; index < records; index++)
        log.append(servedRecord(countersignedReceipt(owner, peer)));
    await log.flush();
}

function anchorer(log: ContributionLog, directory: string, key: string, options: Partial<AnchorerOptions> = {}) {
    return new Anchorer({
        log, wallet: new Wallet(key), contract, rpcUrl: evm.url, chainId: evm.chainId, statePath: join(directory, 'anchor-state.json'), maxFeeGwei: 1000,
        fromBlock: deployBlock, rpcTimeoutMs: 5_000, ...options
    });
}

const revocationSettings = (): RevocationSettings => ({rpcUrl: evm.url, chainId: evm.chainId, contract, fromBlock: deployBlock, maxFeeGwei: 1000,
    confirmations: 1, miningTimeoutMs: 60_000});
const events = (log: ContributionLog, options: Partial<EventReadSettings> = {}) => readAnchorEvents(
    {rpcUrl: evm.url, chainId: evm.chainId, contract, confirmations: 1, fromBlock: deployBlock, ...options}, {core: log.key, owner: log.owner, network: log.domain.network});
const provider = () => chainProvider({rpcUrl: evm.url, chainId: evm.chainId});
const nonceOf = (key: string) => provider().getTransactionCount(new Wallet(key).address, 'latest');

/** The funded account `key` anchors `log` at its length itself, as a wallet that ignores the revocation would. */
async function anchorDirectly(log: ContributionLog, key: string) {
    const anchoring = new Contract(contract, contributionAnchorAbi, new Wallet(key, provider()));
    const receipt = await (await anchoring.getFunction('anchor')(`0x${log.key}`, log.length, `0x${await log.treeHash()}`)).wait();
    return receipt.blockNumber as number;
}

test.serial('revoking a wallet: its later anchors count for nothing, earlier ones still do; its anchorer stops; nothing left to revoke', async (t) => {
    const {log, directory, owner} = await freshLog(4);
    const anchoringKey = await fundedKey();
    const anchoringWallet = new Wallet(anchoringKey).address;
    const first = await anchorer(log, directory, anchoringKey).anchorNow();
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
    const before = await nonceOf(anchoringKey);
    const stopped = anchorer(log, directory, anchoringKey);
    const error = await t.throwsAsync(stopped.anchorNow(), {instanceOf: LedgerError});
    t.is(error!.code, 'NOT_CONFIGURED');
    t.regex(error!.message, new RegExp(`revoked the anchoring wallet ${anchoringWallet} in block ${revoked[0]!.blockNumber}: .*configure another wallet`));
    t.is(stopped.status().nextAttemptAt, null);
    t.is(await nonceOf(anchoringKey), before, 'no new authorization, no anchor');
    t.is(log.anchors.length, 1);

    // Another wallet anchors the log again: the owner authorizes it, and its anchor counts.
    const next = await anchorer(log, directory, await fundedKey()).anchorNow();
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
    t.is((await anchorer(log, directory, anchoringKey).anchorNow()).status, 'anchored');
    await grow(log, owner, 2);
    const rpc = provider();
    await rpc.send('evm_setAutomine', [false]);
    let pendingTx: string;
    try {
        // Signed, saved and sent, but not mined: then it is dropped from the mempool, as a busy chain may.
        await t.throwsAsync(anchorer(log, directory, anchoringKey, {miningTimeoutMs: 1_000}).anchorNow(), {message: /not mined and confirmed yet/});
        pendingTx = (await rpc.send('eth_getBlockByNumber', ['pending', false]) as {transactions: string[]}).transactions[0]!;
        t.truthy(pendingTx);
        t.true(await evm.send('hardhat_dropTransaction', [pendingTx]) as boolean);
    } finally {
        await rpc.send('evm_setAutomine', [true]);
    }
    await revokeWallet(revocationSettings(), log, new Wallet(await fundedKey()), new Wallet(anchoringKey).address);
    // The restarted anchorer sends its saved transaction again; it is mined after the revocation: no record.
    const restarted = anchorer(log, directory, anchoringKey);
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
