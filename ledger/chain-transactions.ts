/**
 * The ledger's own transactions, whoever sends them (the anchorer, the redeemer): signed within the fee cap, sent,
 * sent again the same bytes when a failure or a reorganization lost them, and awaited by hand (docs/architecture.md,
 * "Anchoring", steps 4 and 5, and "Settlement"). What is saved when is the caller's business.
 */
import {type ContractTransaction, type JsonRpcProvider, Transaction, type Wallet} from 'ethers';
import {setTimeout as sleep} from 'node:timers/promises';
import {RECEIPT_POLL_MS, shortReason} from './anchor/chain.js';
import {LedgerError} from './ledger-error.js';

/** Gas estimates are raised by this much: a transaction that runs out of gas still costs its fee. */
const GAS_MARGIN = 1.2;

export interface SigningSettings {
    chainId: number,
    /** Most a transaction may pay per gas, in gwei. */
    maxFeeGwei: number
}

/** How long to wait for a transaction to be mined and confirmed, and how deep. */
export interface ConfirmationSettings {
    /** Blocks on top of the transaction's, its own included, before it counts. */
    confirmations: number,
    miningTimeoutMs: number
}

/** A transaction signed and not sent yet: what a caller saves before sending it. */
export interface SignedTransaction {
    rawTx: string,
    txHash: string,
    nonce: number
}

/** The fee fields of a transaction within the cap, or FEE_TOO_HIGH. */
export async function feeFields(provider: JsonRpcProvider, maxFeeGwei: number) {
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

/**
 * Signs `populated` within the fee cap, its gas estimated (a call the contract refuses throws there, and nothing is
 * signed), at `nonce`, which defaults to the wallet's next one; nothing is sent.
 */
export async function signWithinCap(provider: JsonRpcProvider, wallet: Wallet, populated: ContractTransaction, {chainId, maxFeeGwei}: SigningSettings,
    nonce?: number): Promise<SignedTransaction> {
    const fees = await feeFields(provider, maxFeeGwei);
    const gasLimit = BigInt(Math.ceil(Number(await provider.estimateGas({...populated, from: wallet.address})) * GAS_MARGIN));
    const next = nonce ?? await provider.getTransactionCount(wallet.address, 'pending');
    const rawTx = await wallet.signTransaction({...populated, ...fees, gasLimit, nonce: next, chainId});
    return {rawTx, txHash: Transaction.from(rawTx).hash!, nonce: next};
}

/** Sends a signed transaction; one the chain knows already (sent before, maybe by an attempt that failed later) is fine. */
export async function broadcast(provider: JsonRpcProvider, {rawTx, txHash}: Pick<SignedTransaction, 'rawTx' | 'txHash'>) {
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
export async function sendPending(provider: JsonRpcProvider, pending: Pick<SignedTransaction, 'rawTx' | 'txHash'>,
    {confirmations, miningTimeoutMs}: ConfirmationSettings) {
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

/**
 * Whether a saved transaction can never be mined: it is not on the chain and the wallet's nonce moved past it
 * (another transaction of the wallet took its nonce: the wallet is shared, or the settings changed in between).
 */
export async function superseded(provider: JsonRpcProvider, {txHash, nonce, wallet}: {txHash: string, nonce: number, wallet: string}) {
    // The nonce first: the other way round, the transaction itself mined between the two reads would look superseded.
    return await provider.getTransactionCount(wallet, 'latest') > nonce && await provider.getTransactionReceipt(txHash) === null;
}
