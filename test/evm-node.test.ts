import test from 'ava';
import {type BaseContract, ContractFactory, EventLog, JsonRpcProvider, Wallet, id} from 'ethers';
import {contributionAnchorAbi, contributionAnchorBytecode} from '../ledger/generated/contribution-anchor.js';
import {type EvmNode, startEvmNode} from '../harness/evm-node.js';

let node: EvmNode;
let provider: JsonRpcProvider;
let wallet: Wallet;

test.before(async () => {
    node = await startEvmNode();
    // Without cacheTimeout -1, ethers reuses a cached nonce between quick transactions: "Nonce too low".
    provider = new JsonRpcProvider(node.url, node.chainId, {staticNetwork: true, cacheTimeout: -1});
    wallet = new Wallet(node.accounts[0]!, provider);
});

test.after.always(async () => {
    provider?.destroy();
    await node?.stop();
});

/** Sends `anchor(...)` and returns the gas it used once mined. */
async function anchor(contract: BaseContract, core: string, logLength: bigint, treeHash: string) {
    const tx = await contract.getFunction('anchor')(core, logLength, treeHash);
    const receipt = await tx.wait();
    return receipt.gasUsed as bigint;
}

test.serial('ContributionAnchor deploys on a local Dogechain-id node and its anchors read back from logs', async (t) => {
    t.is((await provider.getNetwork()).chainId, 2000n);

    const factory = new ContractFactory(contributionAnchorAbi, contributionAnchorBytecode, wallet);
    const contract = await factory.deploy();
    await contract.waitForDeployment();

    const core = id('core-a');
    const otherCore = id('core-b');
    const anchors = [
        {logLength: 5n, treeHash: id('tree-5')},
        {logLength: 9n, treeHash: id('tree-9')}
    ];
    for (const {logLength, treeHash} of anchors)
        t.log(`gas per anchor: ${await anchor(contract, core, logLength, treeHash)}`);
    // Another core by the same sender: the indexed `core` topic must filter it out.
    await anchor(contract, otherCore, 1n, id('tree-other'));

    const events = await contract.queryFilter(contract.filters.Anchored!(wallet.address, core));
    t.is(events.length, 2);
    for (const [i, event] of events.entries()) {
        if (!(event instanceof EventLog))
            return t.fail('log not decoded against the ABI');
        const block = await event.getBlock();
        t.is(event.args.sender, wallet.address);
        t.is(event.args.core, core);
        t.is(event.args.logLength, anchors[i]!.logLength);
        t.is(event.args.treeHash, anchors[i]!.treeHash);
        t.is(event.args.timestamp, BigInt(block.timestamp));
    }
});

test.serial('the node can be paused, resumed and restarted on the same port', async (t) => {
    node.pause();
    // The abort rejects with a DOMException, which ava only accepts with `any`.
    await t.throwsAsync(fetch(node.url, {method: 'POST', signal: AbortSignal.timeout(300)}), {any: true});
    node.resume();
    t.is(Number(await provider.send('eth_chainId', [])), 2000);

    await node.restart();
    // Hardhat keeps its chain in memory: a restart starts from the genesis block again.
    t.is(await provider.getBlockNumber(), 0);
});
