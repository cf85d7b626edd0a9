import {readFile, rename, stat} from 'node:fs/promises';
import {join} from 'node:path';
import test from 'ava';
import Corestore from 'corestore';
import type {Testnet} from 'hyperdht/testnet.js';
import {runCli, waitFor, type DaemonHandle} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {type EvmNode, startEvmNode} from '../harness/evm-node.js';
import {fetchStatus} from '../harness/node-status.js';
import {nodeIdOf, startSwarmDaemon, startTestnet, waitForPeers} from '../harness/swarm-fixture.js';

/**
 * Two daemons that serve each other's requests log what they served and consumed, anchor their logs on a local
 * Dogechain-id EVM node, and each verifies its own log and the other's (replicated over their connection).
 */

let testnet: Testnet;
let evm: EvmNode;
const cleanups: (() => Promise<unknown>)[] = [];
interface Node {
    daemon: DaemonHandle,
    dataDir: string,
    env: Record<string, string>,
    model: string
}
let a: Node;
let b: Node;

const chainFlags = () => ['--chain-rpc', evm.url, '--chain-id', String(evm.chainId), '--confirmations', '1'];
const portOf = (node: Node) => new URL(node.daemon.origin).port;
const cli = (node: Node, args: string[]) => runCli([...args, '--data-dir', node.dataDir, '--port', portOf(node), ...chainFlags()], node.env);

/** The anchoring contract the network uses: deployed once, by the first node's operator. */
let contract: string;
/** What `ledger deploy --json` printed: the anchoring contract at the top, the payment contract beside it. */
interface DeployOutput {
    chainId: number, address: string, txHash: string, blockNumber: number,
    paymentContract: {address: string, txHash: string, blockNumber: number}
}
let deployment: {dataDir: string, output: DeployOutput};

async function startNode(model: string, walletKey: string): Promise<Node> {
    const fixture = await createDataDirWithDemoModel({layers: 2, width: 64, headCount: 4, feedForwardLength: 64});
    cleanups.push(fixture.cleanup);
    await rename(fixture.modelPath, join(fixture.dataDir, 'models', `${model}.gguf`));
    const env = {STRONGDOGE_WALLET_KEY: walletKey};
    const deploysHere = contract === undefined;
    if (deploysHere) {
        // `ledger deploy` remembers the address in the data dir: this node needs no --anchor-contract.
        const deployed = await runCli(['ledger', 'deploy', '--json', '--data-dir', fixture.dataDir, ...chainFlags()], env);
        if (deployed.code !== 0)
            throw new Error(`deploy failed: ${deployed.stderr}`);
        deployment = {dataDir: fixture.dataDir, output: JSON.parse(deployed.stdout) as DeployOutput};
        contract = deployment.output.address;
    }
    const daemon = await startSwarmDaemon(testnet.bootstrap.map(({host, port}) => `${host}:${port}`).join(','), fixture.dataDir,
        ['--model', model, ...chainFlags(), ...(deploysHere ? [] : ['--anchor-contract', contract])], {env});
    cleanups.push(() => daemon.stop());
    return {daemon, dataDir: fixture.dataDir, env, model};
}

test.before(async () => {
    ({testnet} = await startTestnet());
    evm = await startEvmNode();
    a = await startNode('alpha', evm.accounts[0]!);
    b = await startNode('beta', evm.accounts[1]!);
    const [aId, bId] = await Promise.all([nodeIdOf(a.daemon), nodeIdOf(b.daemon)]);
    await waitForPeers(a.daemon, [bId], 30_000, (peers) => peers.every((peer) => peer.capabilities.models.some((model) => model.loaded)));
    await waitForPeers(b.daemon, [aId], 30_000, (peers) => peers.every((peer) => peer.capabilities.models.some((model) => model.loaded)));
});

test.after.always(async () => {
    for (const cleanup of cleanups.reverse())
        await cleanup().catch(() => undefined);
    await evm?.stop();
    await testnet?.destroy();
});

test.serial('ledger deploy deployed the anchoring and the payment contract and stored both for the chain, readable by the owner only', async (t) => {
    const {dataDir, output} = deployment;
    t.is(output.chainId, evm.chainId);
    t.not(output.paymentContract.address, output.address);
    const stored = async (file: string) => {
        const path = join(dataDir, 'ledger', file);
        t.is((await stat(path)).mode & 0o777, 0o600, file);
        return JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
    };
    t.like(await stored('anchor-contract.json'), {chainId: evm.chainId, address: output.address, txHash: output.txHash, blockNumber: output.blockNumber});
    t.deepEqual(await stored('payment-contract.json'), {chainId: evm.chainId, ...output.paymentContract});
    for (const address of [output.address, output.paymentContract.address])
        t.not(await evm.send('eth_getCode', [address, 'latest']), '0x', `a contract at ${address}`);
});

async function complete(client: Node, model: string) {
    const response = await fetch(`${client.daemon.baseUrl}/completions`, {
        method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify({model, prompt: 'ledger me', max_tokens: 12, temperature: 0})
    });
    if (response.status !== 200)
        throw new Error(`${response.status} ${await response.text()}`);
}

test.serial('jobs served both ways are logged on both sides, anchored, and verify; each node verifies the other\'s log too', async (t) => {
    for (let round = 0; round < 3; round++) {
        await complete(a, b.model); // b serves a
        await complete(b, a.model); // a serves b
    }
    // Each side: a header, 3 served and 3 consumed records, once the receipts are countersigned.
    for (const node of [a, b])
        await waitFor(async () => (await fetchStatus(node.daemon, '/api/ledger')).length === 7, 15_000);
    const ledgerA = await fetchStatus(a.daemon, '/api/ledger');
    t.like(ledgerA.tally, {servedJobs: 3, consumedJobs: 3, servedTokens: 36});
    t.is(ledgerA.points, 36, 'a small model counts as 1 GB: one point per token served');
    t.true(ledgerA.anchoring.enabled);
    t.is((await fetchStatus(a.daemon, '/api/node')).ledger?.core, ledgerA.core);
    // The requester's consumed records match the provider's served ones, job by job.
    const served = (await fetchStatus(b.daemon, '/api/ledger')).recent.flatMap((record) => record.type === 'served' ? [record.receipt.body.jobId] : []);
    const consumed = ledgerA.recent.flatMap((record) => record.type === 'consumed' ? [record.receipt.body.jobId] : []);
    t.deepEqual([...consumed].sort(), [...served].sort());

    for (const node of [a, b]) {
        const anchored = await cli(node, ['ledger', 'anchor']);
        t.is(anchored.code, 0, anchored.stderr);
        t.regex(anchored.stdout, /anchored 7 records in block \d+, tx 0x[0-9a-f]{64}/);
    }
    const verified = await cli(a, ['ledger', 'verify']);
    t.is(verified.code, 0, verified.stdout + verified.stderr);
    t.regex(verified.stdout, /^OK: log [0-9a-f]{64} of [0-9a-f]{64}: 8 records, 1 anchors match, 36 points/);

    // a audits b: b's log reaches a over their connection, read-only, and is checked against b's anchors.
    const coreB = (await fetchStatus(b.daemon, '/api/ledger')).core;
    const audit = await cli(a, ['ledger', 'verify', '--core', coreB, '--json']);
    t.is(audit.code, 0, audit.stdout + audit.stderr);
    t.like(JSON.parse(audit.stdout), {core: coreB, owner: await nodeIdOf(b.daemon), length: 8, anchorsChecked: 1, problems: []});
});

test.serial('ledger show works through the running node and on the data dir of a stopped one, with the same numbers', async (t) => {
    const live = await cli(a, ['ledger', 'show', '--json']);
    t.is(live.code, 0, live.stderr);
    const liveLedger = JSON.parse(live.stdout) as {core: string, length: number, points: number};
    await a.daemon.stop();
    const offline = await runCli(['ledger', 'show', '--json', '--data-dir', a.dataDir, '--port', '9', ...chainFlags()], a.env);
    t.is(offline.code, 0, offline.stderr);
    t.like(JSON.parse(offline.stdout), {core: liveLedger.core, length: liveLedger.length, points: liveLedger.points});
    const verify = () => runCli(['ledger', 'verify', '--data-dir', a.dataDir, '--port', '9', ...chainFlags()], a.env);
    const verified = await verify();
    t.is(verified.code, 0, verified.stdout + verified.stderr);
    t.regex(verified.stdout, /^OK: .*8 records, 1 anchors match/);

    // The operator rewrites history on disk: the last records replaced by others.
    const store = new Corestore(join(a.dataDir, 'ledger', 'corestore'));
    const core = store.get<unknown>({name: 'contributions', valueEncoding: 'json'});
    await core.ready();
    const kept = [];
    for (let index = 0; index < 4; index++)
        kept.push(await core.get(index));
    await core.truncate(4);
    await core.append([kept[1], kept[2], kept[3], kept[1]]);
    await store.close();
    const tampered = await verify();
    t.is(tampered.code, 1);
    t.regex(tampered.stdout, /^FAILED: log [0-9a-f]{64}: anchor of length 7 in block \d+ \(transaction 0x[0-9a-f]{64}, sent by 0x[0-9a-fA-F]{40}\): the log's first 7 records differ/);
});
