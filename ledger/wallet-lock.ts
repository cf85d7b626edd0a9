/**
 * One wallet's transactions, one at a time from "sign at the next nonce" to "the chain has it" (docs/architecture.md,
 * "Anchoring", steps 4 and 5, and "Settlement"): the anchorer, the redeemer, the channel calls and revocations each
 * take the wallet's next nonce from the chain's pending count, so two signing at once would sign the same nonce and
 * one would be refused. Waiting for confirmations is not under the lock: once the chain has a transaction in its
 * pool, the pending count has moved past its nonce and the next signer sees it.
 */
import type {JsonRpcProvider} from 'ethers';
import {broadcast, type SignedTransaction} from './chain-transactions.js';

export interface WalletLockOption {
    /**
     * The lock of the sending wallet, shared by everything that sends with it (the node makes one per wallet:
     * `NodeLedger.walletLock()`); defaults to a private one, which keeps only this caller's transactions in line.
     */
    walletLock?: WalletLock
}

/** A promise-chain mutex: each `run` starts once every earlier one has settled. */
export class WalletLock {
    private tail: Promise<unknown> = Promise.resolve();

    /**
     * Runs `send` (sign at the wallet's next nonce, save, broadcast) alone, after those queued before it; resolves or
     * rejects as it does. Not reentrant: `send` must not take the same lock.
     */
    run<T>(send: () => Promise<T>): Promise<T> {
        const result = this.tail.then(send);
        // A failure is the caller's; the next one in line starts all the same.
        this.tail = result.catch(() => undefined);
        return result;
    }
}

/** `option`'s lock, or a private one. */
export function walletLockOf(option: WalletLockOption) {
    return option.walletLock ?? new WalletLock();
}

/**
 * Sends a saved transaction again unless it is mined, so that its nonce counts as used before anyone signs the next
 * one (under the wallet's lock); one the chain has in its pool already is fine (`broadcast`).
 */
export async function resendSaved(provider: JsonRpcProvider, saved: Pick<SignedTransaction, 'rawTx' | 'txHash'>) {
    if (await provider.getTransactionReceipt(saved.txHash) === null)
        await broadcast(provider, saved);
}
