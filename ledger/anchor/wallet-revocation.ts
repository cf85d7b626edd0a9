/**
 * `strongdoge ledger revoke <wallet>` (docs/architecture.md, "Anchoring"): finds the owner's authorizations of a wallet
 * for this log that can still make an anchor count, and publishes the owner's signed revocation of each, sent by the
 * configured wallet (any wallet may send one: the signature is the owner's).
 */
import {getAddress, isAddress, type JsonRpcProvider, type Wallet} from 'ethers';
import type {ContributionLog} from '../contribution-log.js';
import {LedgerError} from '../ledger-error.js';
import {readWalletEventsOn} from './anchor-events.js';
import {publishRevocation, type ConfirmationSettings, type TransactionSettings} from './anchor-transactions.js';
import {authorizationWindows} from './authorization-windows.js';
import {type ChainSettings, withChain} from './chain.js';

export interface RevocationSettings extends ChainSettings, TransactionSettings, ConfirmationSettings {
    /** The first block read: the contract's deployment. Defaults to 0. */
    fromBlock?: number,
    /** Blocks per `eth_getLogs` call; defaults to 10,000. */
    pageBlocks?: number
}

/** One authorization revoked: the wallet, until when it was valid (unix seconds), and the confirmed revocation. */
export interface Revocation {
    wallet: string,
    validUntil: number,
    txHash: string,
    blockNumber: number
}

/** `wallet` as a checksummed address, or INVALID_REQUEST. */
export function walletAddress(wallet: string) {
    if (!isAddress(wallet))
        throw LedgerError.invalidRequest(`'${String(wallet).slice(0, 100)}' is not a wallet address (0x and 40 hex digits, with a valid checksum if mixed case)`);
    return getAddress(wallet);
}

/**
 * The owner's authorizations of `wallet` for `log` on this contract that a revocation would end: signed by the owner,
 * not revoked, and not expired by the chain's clock (anchors are judged by block time). Read up to the head, not
 * the confirmation depth: an authorization not yet confirmed may become so, and is revoked too.
 */
export async function revocableAuthorizations(provider: JsonRpcProvider, settings: RevocationSettings, log: ContributionLog, wallet: string) {
    const head = await provider.getBlock('latest');
    if (head === null)
        throw LedgerError.chainUnavailable('the chain RPC gives no latest block');
    const events = await readWalletEventsOn(provider, settings, {owner: log.owner, core: log.key, wallet}, settings.fromBlock ?? 0, head.number);
    return authorizationWindows(events, log.owner, {network: log.domain.network, chainId: settings.chainId, contract: settings.contract})
        .filter((window) => window.until === null && window.validUntil >= head.timestamp);
}

/**
 * Revokes every authorization of `wallet` for `log` that can still make an anchor count, one transaction each sent
 * by `payer` (signed and sent under `settings.walletLock`, the payer's: ledger/wallet-lock.ts) and awaited to the
 * confirmation depth; NOTHING_TO_REVOKE when there is none.
 */
export async function revokeWallet(settings: RevocationSettings, log: ContributionLog, payer: Wallet, wallet: string): Promise<Revocation[]> {
    const revoked = walletAddress(wallet);
    if (log.domain.chainId !== settings.chainId)
        throw LedgerError.notConfigured(`this log was started for chain ${log.domain.chainId}, not the configured ${settings.chainId}: its owner signs for that chain only`);
    return withChain(settings, 'cannot revoke', async (provider) => {
        const windows = await revocableAuthorizations(provider, settings, log, revoked);
        if (windows.length === 0)
            throw LedgerError.nothingToRevoke(`no authorization of ${revoked} to anchor the log ${log.key} is valid on contract ${settings.contract}`
                + ` (chain ${settings.chainId}): nothing to revoke`);
        const sender = payer.connect(provider);
        const revocations: Revocation[] = [];
        for (const {validUntil} of windows) {
            const receipt = await publishRevocation(provider, sender, settings, {owner: log.owner, core: log.key, wallet: revoked, validUntil,
                signature: log.revokeAnchoring(revoked, settings.contract, validUntil)});
            revocations.push({wallet: revoked, validUntil, txHash: receipt.hash, blockNumber: receipt.blockNumber});
        }
        return revocations;
    });
}
