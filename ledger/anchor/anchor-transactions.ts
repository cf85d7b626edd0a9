/**
 * The anchorer's transactions: `authorize` and `anchor` on the anchoring contract, signed within the fee cap, sent,
 * and awaited (docs/architecture.md, "Anchoring", steps 3 to 5). What is saved when is the anchorer's business.
 */
import {Contract, type ContractTransaction, type JsonRpcProvider, Transaction, type Wallet} from 'ethers';
import {contributionAnchorAbi} from '../generated/contribution-anchor.js';
import {setTimeout as sleep} from 'node:timers/promises';
import {LedgerError} from '../ledger-error.js';
import type {PendingAnchor} from './anchor-state.js';
import {RECEIPT_POLL_MS, shortReason} from './chain.js';

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

/** How long to wait for a transaction to be mined and confirmed, and how deep. */
export interface ConfirmationSettings {
    /** Blocks on top of the transaction's, its own included, before it counts. */
    confirmations: number,
    miningTimeoutMs: number
}

/** What the owner signed: `wallet` may anchor the log `core` until `validUntil` (unix seconds). */
export interface OwnerStatement {
    owner: string,
    core: string,
    wallet: string,
    validUntil: number,
    /** The owner's ed25519 signature, hex. */
    signature: string
}

/**
 * Publishes the owner's permission for the sending wallet to anchor its log (`statement.wallet` is the sender),
 * and waits until it is confirmed: anchors before its confirmation would not count.
 */
export async function publishAuthorization(provider: JsonRpcProvider, wallet: Wallet, settings: TransactionSettings & ConfirmationSettings,
    {owner, core, validUntil, signature}: OwnerStatement) {
    const contract = new Contract(settings.contract, contributionAnchorAbi, wallet);
    const populated = await contract.authorize!.populateTransaction(`0x${owner}`, `0x${core}`, validUntil, `0x${signature}`);
    return sendAndConfirm(provider, await signWithinCap(provider, wallet, populated, settings), settings, 'the authorization of this wallet');
}

/** Publishes the owner's revocation of `statement.wallet`'s authorization, sent by `wallet` (any wallet), and waits until it is confirmed. */
export async function publishRevocation(provider: JsonRpcProvider, wallet: Wallet, settings: TransactionSettings & ConfirmationSettings,
    {owner, core, wallet: revoked, validUntil, signature}: OwnerStatement) {
    const contract = new Contract(settings.contract, contributionAnchorAbi, wallet);
    const populated = await contract.revoke!.populateTransaction(`0x${owner}`, `0x${core}`, revoked, validUntil, `0x${signature}`);
    return sendAndConfirm(provider, await signWithinCap(provider, wallet, populated, settings), settings, 'the revocation');
}

async function sendAndConfirm(provider: JsonRpcProvider, signed: {rawTx: string, txHash: string}, settings: ConfirmationSettings, what: string) {
    const receipt = await sendPending(provider, signed, settings);
    if (receipt === null)
        throw LedgerError.chainUnavailable(`${what} (transaction ${signed.txHash}) is not confirmed yet`);
    if (receipt.status !== 1)
        throw LedgerError.reverted(`${what} (transaction ${signed.txHash}) reverted in block ${receipt.blockNumber}`);
    return receipt;
}

/** Builds and signs the anchor of the log `coreKey`'s first `logLength` records within the fee cap; nothing is sent yet. */
export async function signAnchor(provider: JsonRpcProvider, wallet: Wallet, settings: TransactionSettings,
    {coreKey, logLength, treeHash}: {coreKey: string, logLength: number, treeHash: string}): Promise<PendingAnchor> {
    const contract = new Contract(settings.contract, contributionAnchorAbi, wallet);
    const populated = await contract.anchor!.populateTransaction(`0x${coreKey}`, logLength, `0x${treeHash}`);
    const signed = await signWithinCap(provider, wallet, populated, settings);
    return {...signed, logLength, treeHash, chainId: settings.chainId, contract: settings.contract, wallet: wallet.address};
}

/** Sends a signed transaction; one the chain knows already (sent before, maybe by an attempt that failed later) is fine. */
async function broadcast(provider: JsonRpcProvider, {rawTx, txHash}: {rawTx: string, txHash: string}) {
    try {
        await provider.broadcastTransaction(rawTx);
    } catch (error) {
        // The chain refuses a transaction it knows, each chain in its own words. Anything else is a failure to send.
        if (await provider.getTransaction(txHash).catch(() => null) === null)
            throw LedgerError.chainUnavailable(`cannot send transaction ${txHash}: ${shortReason(error)}`);
    }
}

/**
 * Sends the signed transaction unless the chain has it, and waits until it is `confirmations` deep: its receipt, or
 * null if that takes longer than `miningTimeoutMs`. A transaction that a reorganization dropped (its receipt gone,
 * its nonce free again) is sent again, the same bytes, and awaited anew (docs/architecture.md, "Anchoring").
 */
export async function sendPending(provider: JsonRpcProvider, pending: Pick<PendingAnchor, 'rawTx' | 'txHash'>, {confirmations, miningTimeoutMs}: ConfirmationSettings) {
    const deadline = Date.now() + miningTimeoutMs;
    let sent = false;
    for (;;) {
        const receipt = await provider.getTransactionReceipt(pending.txHash).catch(() => null);
        if (receipt === null) {
            if (!sent || await provider.getTransaction(pending.txHash).catch(() => null) === null)
                await broadcast(provider, pending);
            sent = true;
        } else if (receipt.status !== 1 || await provider.getBlockNumber() - receipt.blockNumber + 1 >= confirmations) {
            return receipt;
        }
        if (Date.now() >= deadline)
            return null;
        await sleep(Math.min(RECEIPT_POLL_MS, Math.max(0, deadline - Date.now())));
    }
}
