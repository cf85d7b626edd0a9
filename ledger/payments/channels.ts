/**
 * Calls on the payment channel contract (ledger/contracts/PaymentChannels.sol; docs/architecture.md, "Payments
 * (contract)"): deploy, read a channel, open and top up, redeem a voucher, request a close, withdraw. Each call checks
 * the chain id first (`withChain`), is estimated before it is sent, so a call the contract refuses costs no gas and is
 * CHANNEL_REFUSED naming the contract's error, and waits for its receipt.
 */
import {AbiCoder, Contract, getAddress, hexlify, Interface, isHexString, type JsonRpcProvider, keccak256, randomBytes, type TransactionResponse, type Wallet, ZeroAddress} from 'ethers';
import {setTimeout as sleep} from 'node:timers/promises';
import {paymentChannelsAbi, paymentChannelsBytecode} from '../generated/payment-channels.js';
import {type ChainSettings, deployContract, RECEIPT_POLL_MS, shortReason, withChain} from '../anchor/chain.js';
import {LedgerError} from '../ledger-error.js';
import {type SignedVoucher, type VoucherDomain, verifyVoucher} from './vouchers.js';
import {type WalletLockOption, walletLockOf} from '../wallet-lock.js';
import {feeFields} from '../chain-transactions.js';

/** How long a sent payment transaction may take to be mined before the call gives up (defaults to 2 minutes). */
const MINING_TIMEOUT_MS = 120_000;
const PAYMENT_CHANNELS = new Interface(paymentChannelsAbi);

/** `walletLock` is the sending wallet's, for the calls that send (open, deposit, redeem, requestClose, withdraw) and the Redeemer. */
export interface PaymentSettings extends ChainSettings, WalletLockOption {
    /** The payment contract's address. */
    contract: string,
    /** How long to wait for a sent transaction's receipt; defaults to 2 minutes. */
    miningTimeoutMs?: number,
    /** Most a call may pay per gas, in gwei (FEE_TOO_HIGH above it, nothing sent); defaults to no cap. */
    maxFeeGwei?: number
}

export interface ChannelState {
    channel: string,
    payer: string,
    payee: string,
    /** Everything deposited less what `withdraw` returned, in wei. */
    deposited: bigint,
    /** The cumulative amount the payee redeemed (the highest voucher redeemed), in wei. */
    redeemed: bigint,
    /** 0 while open; else the unix time from which the payer may withdraw and the payee may no longer redeem. */
    closesAt: number
}

/** What a sent call came to: its transaction, and the gas it used (docs/architecture.md lists them). */
export interface PaymentOutcome {
    txHash: string,
    blockNumber: number,
    gasUsed: bigint
}

/** The voucher domain of `settings`: its chain and contract. */
export function paymentDomain({chainId, contract}: PaymentSettings): VoucherDomain {
    return {chainId, contract};
}

/** Deploys the payment contract with `wallet`; returns its address, the block it was deployed in, and its gas. */
export function deployPaymentContract(settings: ChainSettings, wallet: Wallet) {
    return deployContract(settings, wallet, paymentChannelsAbi, paymentChannelsBytecode, 'the payment contract');
}

/** The id of the channel `payer` opens to `payee` with `salt` (the contract's `channelId`, computed here). */
export function channelIdOf(payer: string, payee: string, salt: string) {
    return channelIdHash(getAddress(payer), getAddress(payee), checkedBytes32(salt, 'salt'));
}

/** The channel `channel` as the chain has it now, or null when there is none. */
export async function readChannel(settings: PaymentSettings, channel: string) {
    return withChain(settings, 'cannot read the payment channel', (provider) => readChannelOn(provider, settings, channel));
}

/** Opens a channel from `payer` to `payee` with `amount` wei; `salt` defaults to 32 random bytes. */
export async function openChannel(settings: PaymentSettings, payer: Wallet, payee: string, amount: bigint, salt = hexlify(randomBytes(32))) {
    checkAmount(amount);
    const checkedSalt = checkedBytes32(salt, 'salt');
    const checkedPayee = checkedAddress(payee);
    return withChain(settings, 'cannot open the payment channel', async (provider) => {
        const outcome = await call(provider, settings, payer, 'open', [checkedPayee, checkedSalt], amount);
        return {...outcome, channel: channelIdHash(payer.address, checkedPayee, checkedSalt)};
    });
}

/** Adds `amount` wei to the deposit of `payer`'s open channel. */
export async function depositToChannel(settings: PaymentSettings, payer: Wallet, channel: string, amount: bigint) {
    checkAmount(amount);
    const id = checkedBytes32(channel, 'channel');
    return withChain(settings, 'cannot deposit into the payment channel', (provider) => call(provider, settings, payer, 'deposit', [id], amount));
}

/**
 * Redeems `voucher` as the channel's payee: the contract pays what it owes beyond what was redeemed before. The
 * voucher is checked here first (signed by the channel's payer for this chain and contract, INVALID_VOUCHER), so
 * a bad one costs nothing; the contract checks everything again.
 */
export async function redeemVoucher(settings: PaymentSettings, payee: Wallet, voucher: SignedVoucher) {
    const id = checkedBytes32(voucher.channel, 'channel');
    return withChain(settings, 'cannot redeem the voucher', async (provider) => {
        const state = await readChannelOn(provider, settings, id);
        if (state === null)
            throw LedgerError.channelRefused(`there is no channel ${id} on the payment contract ${settings.contract}`);
        verifyVoucher(paymentDomain(settings), voucher, state.payer);
        return call(provider, settings, payee, 'redeem', [id, voucher.amount, voucher.signature]);
    });
}

/** Starts the challenge period of `payer`'s channel: after it, `withdrawFromChannel` returns what was not redeemed. */
export async function requestClose(settings: PaymentSettings, payer: Wallet, channel: string) {
    const id = checkedBytes32(channel, 'channel');
    return withChain(settings, 'cannot request the channel\'s close', (provider) => call(provider, settings, payer, 'requestClose', [id]));
}

/** Returns to `payer` what its closed channel holds beyond what was redeemed, once the challenge period is over. */
export async function withdrawFromChannel(settings: PaymentSettings, payer: Wallet, channel: string) {
    const id = checkedBytes32(channel, 'channel');
    return withChain(settings, 'cannot withdraw from the channel', (provider) => call(provider, settings, payer, 'withdraw', [id]));
}

function channelIdHash(payer: string, payee: string, salt: string) {
    // Same as the contract's keccak256(abi.encode(payer, payee, salt)).
    return keccak256(AbiCoder.defaultAbiCoder().encode(['address', 'address', 'bytes32'], [payer, payee, salt]));
}

/** `readChannel` on a provider whose chain id was checked. */
export async function readChannelOn(provider: JsonRpcProvider, settings: Pick<PaymentSettings, 'contract'>, channel: string): Promise<ChannelState | null> {
    const id = checkedBytes32(channel, 'channel');
    const contract = new Contract(settings.contract, paymentChannelsAbi, provider);
    const [payer, closesAt, payee, deposited, redeemed] = await contract.getFunction('channels').staticCall(id) as [string, bigint, string, bigint, bigint];
    if (payer === ZeroAddress)
        return null;
    return {channel: id, payer, payee, deposited, redeemed, closesAt: Number(closesAt)};
}

/**
 * Sends `method(args)` from `wallet` and waits for its receipt. Gas is estimated first: a call the contract
 * refuses throws there, with the contract's error decoded from the ABI, and nothing is sent.
 */
async function call(provider: JsonRpcProvider, settings: PaymentSettings, wallet: Wallet, method: string, args: unknown[], value = 0n): Promise<PaymentOutcome> {
    const contract = new Contract(settings.contract, paymentChannelsAbi, wallet.connect(provider));
    const fn = contract.getFunction(method);
    let gasLimit: bigint;
    try {
        gasLimit = await fn.estimateGas(...args, {value});
    } catch (error) {
        throw refusal(error, method) ?? error;
    }
    // Raised by a fifth: a transaction that runs out of gas still costs its fee. Signed at the wallet's next nonce and
    // sent under its lock (ledger/wallet-lock.ts); the receipt is awaited without it.
    const fees = settings.maxFeeGwei === undefined ? {} : await feeFields(provider, settings.maxFeeGwei);
    const sent = await walletLockOf(settings).run(() => fn.send(...args, {value, gasLimit: gasLimit + gasLimit / 5n, ...fees})) as TransactionResponse;
    const receipt = await receiptOf(provider, sent.hash, settings.miningTimeoutMs ?? MINING_TIMEOUT_MS);
    if (receipt.status !== 1)
        throw LedgerError.reverted(`the payment contract's ${method} (${sent.hash}) was mined but reverted`);
    return {txHash: sent.hash, blockNumber: receipt.blockNumber, gasUsed: receipt.gasUsed};
}

/** CHANNEL_REFUSED naming the contract's custom error, when `error` is the contract refusing the call. */
export function refusal(error: unknown, method: string) {
    const {code, data} = error as {code?: string, data?: unknown};
    if (code !== 'CALL_EXCEPTION' || typeof data !== 'string')
        return undefined;
    // Decoded here: ethers leaves a custom error from an estimate undecoded (`revert: null`).
    const decoded = PAYMENT_CHANNELS.parseError(data);
    const reason = decoded === null ? `an unknown error (${data.slice(0, 74)})` : `${decoded.name}(${decoded.args.map(String).join(', ')})`;
    return LedgerError.channelRefused(`the payment contract refuses ${method}: ${reason}`);
}

/** Polled by hand, as the anchorer does (ledger/anchor/chain.ts, RECEIPT_POLL_MS): ethers' own wait logs to stdout. */
async function receiptOf(provider: JsonRpcProvider, txHash: string, timeoutMs: number) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        try {
            const receipt = await provider.getTransactionReceipt(txHash);
            if (receipt !== null)
                return receipt;
        } catch (error) {
            if (Date.now() >= deadline)
                throw LedgerError.chainUnavailable(`no receipt for ${txHash}: ${shortReason(error)}`);
        }
        if (Date.now() >= deadline)
            throw LedgerError.chainUnavailable(`${txHash} was not mined within ${timeoutMs} ms`);
        await sleep(RECEIPT_POLL_MS);
    }
}

function checkAmount(amount: bigint) {
    if (amount <= 0n)
        throw LedgerError.invalidRequest(`an amount must be above 0 wei, not ${amount}`);
}

function checkedBytes32(value: string, what: string) {
    if (!isHexString(value, 32))
        throw LedgerError.invalidRequest(`the ${what} must be 32 bytes of hex, not ${JSON.stringify(value).slice(0, 80)}`);
    return value.toLowerCase();
}

function checkedAddress(value: string) {
    try {
        return getAddress(value);
    } catch {
        throw LedgerError.invalidRequest(`not an address: ${JSON.stringify(value).slice(0, 80)}`);
    }
}
