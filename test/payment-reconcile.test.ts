/**
 * A node never loses a channel it pays through (docs/architecture.md, "Payments"): an `open` whose id was kept
 * before it was sent is found on chain at the next start, and deposits made before a crash count.
 */
import {mkdir, mkdtemp, rm, writeFile} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import test from 'ava';
import {hexlify, randomBytes} from 'ethers';
import {resolveNodeSettings} from '../cli/config/node-config.js';
import {waitFor} from '../harness/cli-process.js';
import {type EvmNode, startEvmNode} from '../harness/evm-node.js';
import {keyPair} from '../harness/ledger-fixture.js';
import {ContributionLog} from '../ledger/contribution-log.js';
import {channelIdOf, deployPaymentContract, depositToChannel, openChannel} from '../ledger/payments/channels.js';
import {NodePayments} from '../node/node-payments.js';
import {shortNodeId} from '../swarm/node-identity.js';

let evm: EvmNode;
let contract: string;

test.before(async () => {
    evm = await startEvmNode();
    ({address: contract} = await deployPaymentContract({rpcUrl: evm.url, chainId: evm.chainId}, await evm.fundedWallet()));
});

test.after.always(async () => {
    await evm?.stop();
});

test('a channel whose open was kept but not tracked, and a deposit made before a crash, are found on chain at the next start', async (t) => {
    const dataDir = await mkdtemp(join(tmpdir(), 'strongdoge-reconcile-'));
    t.teardown(() => rm(dataDir, {recursive: true, force: true, maxRetries: 5}));
    const payer = await evm.fundedWallet();
    const payee = (await evm.fundedWallet()).address;
    const peer = keyPair().id;
    const chain = {rpcUrl: evm.url, chainId: evm.chainId, contract};
    // What a node that crashed while its open was on its way left: the channel's id, kept before the open was sent.
    const salt = hexlify(randomBytes(32));
    const pending = channelIdOf(payer.address, payee, salt).toLowerCase();
    await openChannel(chain, payer, payee, 3n * 10n ** 18n, salt);
    // And a channel it tracked, topped up on chain after its state was last saved.
    const {channel: tracked} = await openChannel(chain, payer, payee, 10n ** 18n);
    await depositToChannel(chain, payer, tracked, 10n ** 18n);
    await mkdir(join(dataDir, 'ledger'), {recursive: true});
    await writeFile(join(dataDir, 'ledger', 'payments.json'), JSON.stringify({
        payer: [{channel: tracked.toLowerCase(), payee, peer, deposited: String(10n ** 18n), signed: '0', redeemed: '0', closesAt: 0}],
        opening: [{channel: pending, payee, peer}, {channel: `0x${'ab'.repeat(32)}`, payee, peer}]
    }));

    const keys = keyPair();
    const log = await ContributionLog.open({directory: join(dataDir, 'log'), identity: keys, domain: {network: 'public', chainId: evm.chainId}});
    t.teardown(() => log.close());
    const settings = resolveNodeSettings(dataDir, {flags: {chainRpc: evm.url, chainId: evm.chainId, confirmations: 1, paymentContract: contract}, env: {}});
    const payments = await NodePayments.open({settings, identity: {...keys, shortId: shortNodeId(keys.publicKey)}, log, wallet: {wallet: payer}, contract,
        peerCapabilities: () => undefined, onNotice: () => undefined});
    t.teardown(() => payments.stop());
    await waitFor(async () => (await payments.describe()).paying.length === 2, 15_000, 50);
    const paying = (await payments.describe()).paying;
    t.like(paying.find((entry) => entry.channel === pending), {peer, payee, deposited: '3.0', paid: '0.0'});
    t.like(paying.find((entry) => entry.channel === tracked.toLowerCase()), {peer, deposited: '2.0'});
});
