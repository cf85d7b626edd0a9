/**
 * The anchorer's transactions: `authorize` and `anchor` on the anchoring contract, signed within the fee cap, sent,
 * and awaited (docs/architecture.md, "Anchoring", steps 3 to 5). What is saved when is the anchorer's business.
 */
import {Contract, type ContractTransaction, type JsonRpcProvider, Transaction, type Wallet} from 'ethers';
import {contributionAnchorAbi} from '../generated/contribution-anchor.js';
import {LedgerError} from '../ledger-error.js';
import {queryAuthorized} from './anchor-events.js';
import type {PendingAnchor} from './anchor-state.js';
import {shortReason, waitForReceipt} from './chain.js';

/** Gas estimates are raised by this much: a transaction that runs out of gas still costs its fee. */
const GAS_MARGIN = 1.2;

export interface TransactionSettings {
    chainId: number,
    /** The anchoring contract's address. */
    contract: string,
    /** Most a transaction may pay per gas, in gwei. */
    maxFeeGwei: number
}

/** The fee fields of a transaction within the cap, or FEE_TOO_HIGH. */
async function feeFields(provider: JsonRpcProvider, maxFeeGwei: number) {
    const fee = await provider.getFeeData();
    const perGas = fee.maxFeePerGas ?? fee.gasPrice;
    if (perGas === null)
        throw LedgerError.chainUnavailable('the chain RPC gives no fee data');
    if (perGas > BigInt(Math.round(maxFeeGwei * 1e9)))
        throw LedgerError.feeTooHigh(`the chain asks ${Number(perGas) / 1e9} gwei per gas, above --max-fee-gwei ${maxFeeGwei}`);
    return fee.maxFeePerGas !== null
        ? {type: 2, maxFeePerGas: fee.maxFeePerGas, maxPriorityFeePerGas: fee.maxPriorityFeePerGas ?? 0n}
        : {type: 0, gasPrice: fee.gasPrice};
}

/** Signs `populated` within the fee cap, its gas estimated, at the wallet's next nonce; nothing is sent. */
async function signWithinCap(provider: JsonRpcProvider, wallet: Wallet, populated: ContractTransaction, {chainId, maxFeeGwei}: TransactionSettings) {
    const fees = await feeFields(provider, maxFeeGwei);
    const gasLimit = BigInt(Math.ceil(Number(await provider.estimateGas({...populated, from: wallet.address})) * GAS_MARGIN));
    const nonce = await provider.getTransactionCount(wallet.address, 'pending');
    const rawTx = await wallet.signTransaction({...populated, ...fees, gasLimit, nonce, chainId});
    return {rawTx, txHash: Transaction.from(rawTx).hash!, nonce};
}

/** Whether the owner's permission for `wallet` to anchor the log `coreKey` is on the contract already. */
export async function authorizationPublished(provider: JsonRpcProvider, {contract}: TransactionSettings, coreKey: string, wallet: string) {
    return (await queryAuthorized(new Contract(contract, contributionAnchorAbi, provider), coreKey, wallet)).length > 0;
}

/** Publishes the owner's `signature` (hex) letting `wallet` anchor the log `coreKey`, and waits until it is mined. */
export async function publishAuthorization(provider: JsonRpcProvider, wallet: Wallet, settings: TransactionSettings & {miningTimeoutMs: number},
    coreKey: string, signature: string) {
    const contract = new Contract(settings.contract, contributionAnchorAbi, wallet);
    const {rawTx, txHash} = await signWithinCap(provider, wallet, await contract.authorize!.populateTransaction(`0x${coreKey}`, `0x${signature}`), settings);
    await provider.broadcastTransaction(rawTx);
    const receipt = await waitForReceipt(provider, txHash, settings.miningTimeoutMs);
    if (receipt === null || receipt.status !== 1)
        throw LedgerError.chainUnavailable('the authorization of this wallet is not mined yet');
}

/** Builds and signs the anchor of the log `coreKey`'s first `logLength` records within the fee cap; nothing is sent yet. */
export async function signAnchor(provider: JsonRpcProvider, wallet: Wallet, settings: TransactionSettings,
    {coreKey, logLength, treeHash}: {coreKey: string, logLength: number, treeHash: string}): Promise<PendingAnchor> {
    const contract = new Contract(settings.contract, contributionAnchorAbi, wallet);
    const populated = await contract.anchor!.populateTransaction(`0x${coreKey}`, logLength, `0x${treeHash}`);
    const signed = await signWithinCap(provider, wallet, populated, settings);
    return {...signed, logLength, treeHash, chainId: settings.chainId, contract: settings.contract, wallet: wallet.address};
}

/**
 * Sends the signed transaction (again, if it was sent before) unless it is mined already, and waits for it: its
 * receipt, or null if it is not mined within `miningTimeoutMs`.
 */
export async function sendPending(provider: JsonRpcProvider, pending: PendingAnchor, miningTimeoutMs: number) {
    const receipt = await provider.getTransactionReceipt(pending.txHash);
    if (receipt !== null)
        return receipt;
    try {
        await provider.broadcastTransaction(pending.rawTx);
    } catch (error) {
        // Sent before by an attempt that failed later: the chain refuses it again (each chain in its own words)
        // but knows it. Anything else is a failure to send.
        if (await provider.getTransaction(pending.txHash).catch(() => null) === null)
            throw LedgerError.chainUnavailable(`cannot send the anchoring transaction: ${shortReason(error)}`);
    }
    return waitForReceipt(provider, pending.txHash, miningTimeoutMs);
}
