/**
 * The anchorer's transactions: `authorize`, `revoke` and `anchor` on the anchoring contract, signed within the fee cap
 * and sent by ledger/chain-transactions.ts (docs/architecture.md, "Anchoring", steps 3 to 5). What is saved when is
 * the anchorer's business.
 */
import {Contract, type ContractTransaction, type JsonRpcProvider, type Wallet} from 'ethers';
import {broadcast, type ConfirmationSettings, sendPending, type SigningSettings, signWithinCap} from '../chain-transactions.js';
import {contributionAnchorAbi} from '../generated/contribution-anchor.js';
import {LedgerError} from '../ledger-error.js';
import {type WalletLockOption, walletLockOf} from '../wallet-lock.js';
import type {PendingAnchor} from './anchor-state.js';

export type {ConfirmationSettings} from '../chain-transactions.js';

export interface TransactionSettings extends SigningSettings, WalletLockOption {
    /** The anchoring contract's address. */
    contract: string
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
    return sendAndConfirm(provider, wallet, populated, settings, 'the authorization of this wallet');
}

/** Publishes the owner's revocation of `statement.wallet`'s authorization, sent by `wallet` (any wallet), and waits until it is confirmed. */
export async function publishRevocation(provider: JsonRpcProvider, wallet: Wallet, settings: TransactionSettings & ConfirmationSettings,
    {owner, core, wallet: revoked, validUntil, signature}: OwnerStatement) {
    const contract = new Contract(settings.contract, contributionAnchorAbi, wallet);
    const populated = await contract.revoke!.populateTransaction(`0x${owner}`, `0x${core}`, revoked, validUntil, `0x${signature}`);
    return sendAndConfirm(provider, wallet, populated, settings, 'the revocation');
}

/** Signs and broadcasts `populated` under the wallet's lock (ledger/wallet-lock.ts), then waits, without it, until it is confirmed. */
async function sendAndConfirm(provider: JsonRpcProvider, wallet: Wallet, populated: ContractTransaction, settings: TransactionSettings & ConfirmationSettings,
    what: string) {
    const signed = await walletLockOf(settings).run(async () => {
        const transaction = await signWithinCap(provider, wallet, populated, settings);
        await broadcast(provider, transaction);
        return transaction;
    });
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
