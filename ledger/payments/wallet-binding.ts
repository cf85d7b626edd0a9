/**
 * A node's EVM wallet bound to its node key (docs/architecture.md, "Payments"): the node signs that the wallet is
 * its own, and the wallet signs that it belongs to the node, for one network, chain and payment contract. Peers find
 * the wallet in its capabilities and know where to look on chain; neither key alone can claim the other.
 */
import crypto from 'hypercore-crypto';
import {getAddress, verifyMessage, type Wallet} from 'ethers';
import {walletBindingSchema, type WalletBinding} from '../../core/wallet-binding-schema.js';
import type {SigningDomain} from '../signing-domain.js';
import {LedgerError} from '../ledger-error.js';

/** The text both keys sign: every field that must not be swapped. */
function statement(nodeId: string, wallet: string, contract: string, {network, chainId}: SigningDomain) {
    return `strongdoge wallet binding\nnode: ${nodeId}\nwallet: ${getAddress(wallet)}\nnetwork: ${network}\nchain: ${chainId}\ncontract: ${getAddress(contract)}`;
}

/** Binds `wallet` to the node `identity` for payments through `contract` on `domain`. */
export function bindWallet(identity: {id: string, secretKey: Buffer}, wallet: Wallet, contract: string, domain: SigningDomain): WalletBinding {
    const text = statement(identity.id, wallet.address, contract, domain);
    return {
        wallet: wallet.address, contract: getAddress(contract),
        nodeSignature: crypto.sign(Buffer.from(text), identity.secretKey).toString('hex'),
        walletSignature: wallet.signMessageSync(text)
    };
}

/**
 * The wallet a peer's binding names, once both signatures check for the peer's node id, this network and chain;
 * INVALID_VOUCHER naming what is wrong otherwise (a peer's binding is hostile input).
 */
export function boundWallet(nodeId: string, candidate: unknown, domain: SigningDomain): WalletBinding {
    const parsed = walletBindingSchema.safeParse(candidate);
    if (!parsed.success)
        throw LedgerError.invalidVoucher(`malformed wallet binding: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
    let binding: WalletBinding;
    try {
        binding = {...parsed.data, wallet: getAddress(parsed.data.wallet), contract: getAddress(parsed.data.contract)};
    } catch {
        // Mixed case that is not the address's checksum: a typo, or a changed address.
        throw LedgerError.invalidVoucher('malformed wallet binding: an address whose checksum does not match');
    }
    const text = statement(nodeId, binding.wallet, binding.contract, domain);
    if (!/^[0-9a-f]{64}$/.test(nodeId) || !crypto.verify(Buffer.from(text), Buffer.from(binding.nodeSignature, 'hex'), Buffer.from(nodeId, 'hex')))
        throw LedgerError.invalidVoucher('the wallet binding is not signed by the node\'s key for this network and chain');
    let signer: string;
    try {
        signer = verifyMessage(text, binding.walletSignature);
    } catch {
        throw LedgerError.invalidVoucher('the wallet binding\'s wallet signature is not a valid signature');
    }
    if (signer !== binding.wallet)
        throw LedgerError.invalidVoucher('the wallet binding is not signed by the wallet it names');
    return binding;
}
