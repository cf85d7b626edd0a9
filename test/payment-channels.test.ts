import {createRequire} from 'node:module';
import test from 'ava';
import {Contract, ContractFactory, Signature, Wallet} from 'ethers';
import {chainProvider} from '../ledger/anchor/chain.js';
import {paymentChannelsAbi} from '../ledger/generated/payment-channels.js';
import {LedgerError} from '../ledger/ledger-error.js';
import {
    channelIdOf, deployPaymentContract, depositToChannel, openChannel, type PaymentSettings, readChannel, redeemVoucher, requestClose, withdrawFromChannel
} from '../ledger/payments/channels.js';
import {parseVoucher, type SignedVoucher, signVoucher, verifyVoucher, voucherJson} from '../ledger/payments/vouchers.js';
import {type EvmNode, startEvmNode} from '../harness/evm-node.js';

/**
 * The payment channel contract (ledger/contracts/PaymentChannels.sol) and its library (ledger/payments/) on a real
 * hardhat EVM with Dogechain's chain id: deposit and top-up, redeeming the latest voucher, every voucher that must be
 * refused (a malleable signature included), a re-entering payee contract, the close and its challenge period (hardhat
 * time travel). Gas is recorded for docs/architecture.md
 * ("Payments (contract)"), asserted only to be a number.
 */

const DOGE = 10n ** 18n;
const CHALLENGE_PERIOD_S = 24 * 60 * 60;

let evm: EvmNode;
let settings: PaymentSettings;
let payer: Wallet;
let payee: Wallet;
let stranger: Wallet;
const gas: Record<string, bigint> = {};

test.before(async () => {
    evm = await startEvmNode();
    [payer, payee, stranger] = evm.accounts.map((key) => new Wallet(key)) as [Wallet, Wallet, Wallet];
    const deployed = await deployPaymentContract({rpcUrl: evm.url, chainId: evm.chainId}, payer);
    gas.deploy = deployed.gasUsed;
    settings = {rpcUrl: evm.url, chainId: evm.chainId, contract: deployed.address};
});

test.after.always(async () => {
    // Shown in the test output, for docs/architecture.md.
    console.log(`gas per call: ${JSON.stringify(Object.fromEntries(Object.entries(gas).map(([name, used]) => [name, Number(used)])))}`);
    await evm?.stop();
});

const domain = () => ({chainId: settings.chainId, contract: settings.contract});
const voucher = (channel: string, amount: bigint, signer = payer, where = domain()) => signVoucher(signer.signingKey, where, {channel, amount});

/** Uncached, as the library's: a cached nonce would be stale after the library's own sends. */
const provider = () => chainProvider({rpcUrl: evm.url, chainId: evm.chainId});

async function balanceOf(address: string) {
    const chain = provider();
    try {
        return await chain.getBalance(address);
    } finally {
        chain.destroy();
    }
}

/** The contract's own answer to `redeem` from the payee, bypassing the library's checks: the name of its error. */
async function contractRefusal(signed: SignedVoucher, contractAddress = settings.contract) {
    const chain = provider();
    try {
        const contract = new Contract(contractAddress, paymentChannelsAbi, payee.connect(chain));
        await contract.getFunction('redeem').staticCall(signed.channel, signed.amount, signed.signature);
        return 'accepted';
    } catch (error) {
        return (error as {revert?: {name: string}}).revert?.name ?? String(error);
    } finally {
        chain.destroy();
    }
}

async function refusalCode(promise: Promise<unknown>) {
    const error = await promise.then(() => undefined, (caught: unknown) => caught);
    return error instanceof LedgerError ? error.code : String(error);
}

test.serial('deposit and top-up: the channel holds both, its id is the contract\'s, and the payee got nothing yet', async (t) => {
    const opened = await openChannel(settings, payer, payee.address, 3n * DOGE);
    gas.open = opened.gasUsed;
    const toppedUp = await depositToChannel(settings, payer, opened.channel, 2n * DOGE);
    gas.deposit = toppedUp.gasUsed;
    const state = await readChannel(settings, opened.channel);
    t.deepEqual(state, {channel: opened.channel, payer: payer.address, payee: payee.address, deposited: 5n * DOGE, redeemed: 0n, closesAt: 0});
    t.is(typeof Number(gas.open), 'number');
    t.is(typeof Number(gas.deposit), 'number');
    t.is(await readChannel(settings, channelIdOf(payer.address, payee.address, `0x${'00'.repeat(32)}`)), null);
    t.is(await refusalCode(depositToChannel(settings, stranger, opened.channel, DOGE)), 'CHANNEL_REFUSED', 'only the payer tops up');
    t.is(await refusalCode(openChannel(settings, payer, payer.address, DOGE)), 'CHANNEL_REFUSED', 'no channel to oneself');
});

test.serial('redeeming the latest voucher pays the difference; a replayed or older voucher pays nothing', async (t) => {
    const {channel} = await openChannel(settings, payer, payee.address, 10n * DOGE);
    const first = voucher(channel, 1n * DOGE);
    const second = voucher(channel, 3n * DOGE);
    const latest = voucher(channel, 4n * DOGE);
    // Vouchers travel as JSON; the one read back verifies as the one signed.
    const wired = parseVoucher(JSON.parse(JSON.stringify(voucherJson(latest))));
    t.deepEqual(wired, latest);
    t.notThrows(() => verifyVoucher(domain(), wired, payer.address));

    const before = await balanceOf(payee.address);
    const one = await redeemVoucher(settings, payee, first);
    gas.redeemFirst = one.gasUsed;
    const two = await redeemVoucher(settings, payee, wired);
    gas.redeem = two.gasUsed;
    const after = await balanceOf(payee.address);
    t.is(after - before + await feesOf(one.txHash, two.txHash), 4n * DOGE, 'paid the latest voucher\'s amount, once');
    t.is((await readChannel(settings, channel))?.redeemed, 4n * DOGE);
    t.is(typeof Number(gas.redeem), 'number');

    t.is(await refusalCode(redeemVoucher(settings, payee, wired)), 'CHANNEL_REFUSED', 'the same voucher again');
    t.is(await refusalCode(redeemVoucher(settings, payee, second)), 'CHANNEL_REFUSED', 'an older voucher');
    t.is(await contractRefusal(wired), 'AlreadyRedeemed');
    t.is(await contractRefusal(second), 'AlreadyRedeemed');
    t.is((await readChannel(settings, channel))?.redeemed, 4n * DOGE);
});

/** What the transactions cost their sender in fees (gas used × the price each paid). */
async function feesOf(...hashes: string[]) {
    const chain = provider();
    try {
        const receipts = await Promise.all(hashes.map((hash) => chain.getTransactionReceipt(hash)));
        return receipts.reduce((sum, receipt) => sum + receipt!.gasUsed * receipt!.gasPrice, 0n);
    } finally {
        chain.destroy();
    }
}

test.serial('a voucher beyond the deposit, signed by someone else, for another channel, chain id or contract is refused', async (t) => {
    const {channel} = await openChannel(settings, payer, payee.address, 2n * DOGE);
    const {channel: other} = await openChannel(settings, payer, payee.address, 2n * DOGE);
    const {address: otherContract} = await deployPaymentContract({rpcUrl: evm.url, chainId: evm.chainId}, payer);

    const beyond = voucher(channel, 2n * DOGE + 1n);
    t.is(await refusalCode(redeemVoucher(settings, payee, beyond)), 'CHANNEL_REFUSED');
    t.is(await contractRefusal(beyond), 'BeyondDeposit');

    const byStranger = voucher(channel, DOGE, stranger);
    t.is(await refusalCode(redeemVoucher(settings, payee, byStranger)), 'INVALID_VOUCHER');
    t.is(await contractRefusal(byStranger), 'BadSignature');

    // Signed for `other`, presented for `channel`.
    const forOther = voucher(other, DOGE);
    const moved = {...forOther, channel};
    t.is(await refusalCode(redeemVoucher(settings, payee, moved)), 'INVALID_VOUCHER');
    t.is(await contractRefusal(moved), 'BadSignature');

    const otherChain = voucher(channel, DOGE, payer, {...domain(), chainId: 1});
    t.is(await refusalCode(redeemVoucher(settings, payee, otherChain)), 'INVALID_VOUCHER');
    t.is(await contractRefusal(otherChain), 'BadSignature');

    const forOtherContract = voucher(channel, DOGE, payer, {...domain(), contract: otherContract});
    t.is(await refusalCode(redeemVoucher(settings, payee, forOtherContract)), 'INVALID_VOUCHER');
    t.is(await contractRefusal(forOtherContract), 'BadSignature');
    // …and this contract's voucher is nothing on the other contract, where no such channel exists.
    t.is(await contractRefusal(voucher(channel, DOGE), otherContract), 'NoChannel');

    // A redeem by anyone but the payee is refused, even with a good voucher.
    const good = voucher(channel, DOGE);
    t.is(await refusalCode(redeemVoucher(settings, stranger, good)), 'CHANNEL_REFUSED');
    t.is(await refusalCode(redeemVoucher(settings, payee, {...good, signature: '0x1234'})), 'INVALID_VOUCHER');
    t.throws(() => parseVoucher({...voucherJson(good), amount: '-1'}), {instanceOf: LedgerError});
    t.is((await readChannel(settings, channel))?.redeemed, 0n, 'nothing was paid');
    await redeemVoucher(settings, payee, good);
    t.is((await readChannel(settings, channel))?.redeemed, DOGE, 'the good voucher still pays');
});

test.serial('close: the payee still redeems during the challenge period, the payer withdraws the rest only after it', async (t) => {
    const {channel} = await openChannel(settings, payer, payee.address, 5n * DOGE);
    await redeemVoucher(settings, payee, voucher(channel, DOGE));
    const closing = await requestClose(settings, payer, channel);
    gas.requestClose = closing.gasUsed;
    t.is(typeof Number(gas.requestClose), 'number');
    const state = await readChannel(settings, channel);
    t.true(state!.closesAt > 0);
    t.is(await refusalCode(depositToChannel(settings, payer, channel, DOGE)), 'CHANNEL_REFUSED', 'no top-up while closing');
    t.is(await refusalCode(requestClose(settings, stranger, channel)), 'CHANNEL_REFUSED');

    t.is(await refusalCode(withdrawFromChannel(settings, payer, channel)), 'CHANNEL_REFUSED', 'withdraw before the period');
    await evm.send('evm_increaseTime', [CHALLENGE_PERIOD_S - 60]);
    await evm.send('evm_mine');
    t.is(await refusalCode(withdrawFromChannel(settings, payer, channel)), 'CHANNEL_REFUSED', 'withdraw a minute before its end');
    const late = await redeemVoucher(settings, payee, voucher(channel, 2n * DOGE));
    gas.redeemWhileClosing = late.gasUsed;
    t.is((await readChannel(settings, channel))?.redeemed, 2n * DOGE, 'a redeem during the period still pays');

    await evm.send('evm_increaseTime', [120]);
    await evm.send('evm_mine');
    t.is(await refusalCode(redeemVoucher(settings, payee, voucher(channel, 3n * DOGE))), 'CHANNEL_REFUSED', 'no redeem after the period');
    t.is(await refusalCode(withdrawFromChannel(settings, stranger, channel)), 'CHANNEL_REFUSED', 'only the payer withdraws');
    const before = await balanceOf(payer.address);
    const withdrawn = await withdrawFromChannel(settings, payer, channel);
    gas.withdraw = withdrawn.gasUsed;
    const after = await balanceOf(payer.address);
    t.is(after - before + await feesOf(withdrawn.txHash), 3n * DOGE, 'the payer got back what was not redeemed');
    t.deepEqual(await readChannel(settings, channel), {...state!, deposited: 2n * DOGE, redeemed: 2n * DOGE});
    t.is(await refusalCode(withdrawFromChannel(settings, payer, channel)), 'CHANNEL_REFUSED', 'nothing to withdraw twice');
    t.is(typeof Number(gas.withdraw), 'number');
    // Each call is an event naming the channel, payer and payee, and the amount it moved (a close: what it left to redeem).
    const events = await evm.onChain(async (chain) => {
        const contract = new Contract(settings.contract, paymentChannelsAbi, chain);
        return (await contract.queryFilter('*' as never)).flatMap((log) => {
            const parsed = contract.interface.parseLog(log);
            if (parsed === null || parsed.args[0] !== channel)
                return [];
            const amount = parsed.name === 'Opened' ? null : parsed.args[parsed.name === 'CloseRequested' ? 4 : 3] as bigint;
            return [{name: parsed.name, payer: parsed.args[1] as string, payee: parsed.args[2] as string, amount}];
        });
    });
    t.deepEqual(events, [['Opened', null], ['Deposited', 5n * DOGE], ['Redeemed', DOGE], ['CloseRequested', 4n * DOGE], ['Redeemed', DOGE],
        ['Withdrawn', 3n * DOGE]].map(([name, amount]) => ({name, payer: payer.address, payee: payee.address, amount})));
});

test.serial('a malleable twin of a good signature (high s) is refused', async (t) => {
    const {channel} = await openChannel(settings, payer, payee.address, DOGE);
    const good = voucher(channel, DOGE);
    const signature = Signature.from(good.signature);
    const twinS = SECP256K1_ORDER - BigInt(signature.s);
    const twin = {...good, signature: `0x${signature.r.slice(2)}${twinS.toString(16).padStart(64, '0')}${(55 - signature.v).toString(16)}`};
    t.is(await contractRefusal(twin), 'BadSignature');
    t.is(await refusalCode(redeemVoucher(settings, payee, twin)), 'INVALID_VOUCHER');
    t.is(await contractRefusal(good), 'accepted');
});

const SECP256K1_ORDER = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

/** A payee contract that re-enters `redeem` with the same voucher when paid, and records whether that was refused. */
const REENTRANT_PAYEE = `
pragma solidity ^0.8.20;
interface IPaymentChannels { function redeem(bytes32 channel, uint256 amount, bytes calldata signature) external; }
contract ReentrantPayee {
    IPaymentChannels immutable channels;
    bytes32 channel; uint256 amount; bytes signature;
    uint256 public entries; bool public reentryRefused;
    constructor(IPaymentChannels target) { channels = target; }
    function attack(bytes32 c, uint256 a, bytes calldata s) external { channel = c; amount = a; signature = s; channels.redeem(c, a, s); }
    receive() external payable {
        entries++;
        if (entries > 1) return;
        try channels.redeem(channel, amount, signature) {} catch { reentryRefused = true; }
    }
}`;

function compileReentrantPayee() {
    const solc = createRequire(import.meta.url)('solc') as {compile(input: string): string};
    const input = {language: 'Solidity', sources: {'ReentrantPayee.sol': {content: REENTRANT_PAYEE}},
        settings: {evmVersion: 'paris', outputSelection: {'*': {ReentrantPayee: ['abi', 'evm.bytecode.object']}}}};
    const output = JSON.parse(solc.compile(JSON.stringify(input))) as {contracts: Record<string, Record<string, {abi: unknown[], evm: {bytecode: {object: string}}}>>};
    const compiled = output.contracts['ReentrantPayee.sol']!.ReentrantPayee!;
    return {abi: compiled.abi as never, bytecode: `0x${compiled.evm.bytecode.object}`};
}

test.serial('a payee contract that re-enters redeem when paid is refused the second payment', async (t) => {
    const chain = provider();
    t.teardown(() => chain.destroy());
    const {abi, bytecode} = compileReentrantPayee();
    const attacker = await (await new ContractFactory(abi, bytecode, stranger.connect(chain)).deploy(settings.contract)).waitForDeployment();
    const attackerAddress = await attacker.getAddress();
    const {channel} = await openChannel(settings, payer, attackerAddress, 3n * DOGE);
    const signed = voucher(channel, DOGE);
    await (await attacker.getFunction('attack').send(signed.channel, signed.amount, signed.signature)).wait();
    t.true(await attacker.getFunction('reentryRefused').staticCall() as boolean);
    t.is(await chain.getBalance(attackerAddress), DOGE, 'paid once');
    t.is((await readChannel(settings, channel))?.redeemed, DOGE);
});

test.serial('the library checks its inputs and the chain id before anything is sent', async (t) => {
    t.is(await refusalCode(openChannel(settings, payer, 'not an address', DOGE)), 'INVALID_REQUEST');
    t.is(await refusalCode(openChannel(settings, payer, payee.address, 0n)), 'INVALID_REQUEST');
    t.is(await refusalCode(readChannel(settings, '0x12')), 'INVALID_REQUEST');
    t.is(await refusalCode(readChannel({...settings, chainId: 1}, `0x${'00'.repeat(32)}`)), 'WRONG_CHAIN');
});
