/**
 * EIP-712 vouchers of the payment channel contract (ledger/contracts/PaymentChannels.sol; docs/architecture.md,
 * "Payments (contract)"): the payer signs the cumulative amount it owes on one channel, for one chain and one
 * contract, so a voucher is worthless anywhere else.
 */
import {dataSlice, getAddress, isHexString, recoverAddress, Signature, type SigningKey, TypedDataEncoder} from 'ethers';
import {z} from 'zod';
import {LedgerError} from '../ledger-error.js';

/** The contract's EIP-712 name and version: the domain changes with them, and so must these. */
export const VOUCHER_DOMAIN_NAME = 'StrongdogePaymentChannels';
export const VOUCHER_DOMAIN_VERSION = '1';
const VOUCHER_TYPES = {Voucher: [{name: 'channel', type: 'bytes32'}, {name: 'amount', type: 'uint256'}]};
/** Half the secp256k1 order: the contract refuses a signature with a larger s (EIP-2), and so does `verifyVoucher`. */
const HALF_ORDER = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0n;
const UINT256_MAX = (1n << 256n) - 1n;

/** Where a voucher is worth something: one chain, one payment contract. */
export interface VoucherDomain {
    chainId: number,
    /** The payment contract's address. */
    contract: string
}

export interface Voucher {
    /** The channel's id (bytes32 hex). */
    channel: string,
    /** The cumulative amount owed on the channel, in wei. */
    amount: bigint
}

export interface SignedVoucher extends Voucher {
    /** The payer's 65-byte signature, hex. */
    signature: string
}

/** A voucher as a peer sends it (the amount a decimal string): hostile until `verifyVoucher` says otherwise. */
export const voucherSchema = z.object({
    channel: z.string().regex(/^0x[0-9a-fA-F]{64}$/),
    amount: z.string().regex(/^[1-9][0-9]{0,77}$/),
    signature: z.string().regex(/^0x[0-9a-fA-F]{130}$/)
}).strict();

/** A voucher from the wire, its amount a bigint; INVALID_VOUCHER when it does not fit the schema. */
export function parseVoucher(input: unknown): SignedVoucher {
    const parsed = voucherSchema.safeParse(input);
    if (!parsed.success)
        throw LedgerError.invalidVoucher(`malformed voucher: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
    const amount = BigInt(parsed.data.amount);
    if (amount > UINT256_MAX)
        throw LedgerError.invalidVoucher('malformed voucher: the amount does not fit 256 bits');
    return {channel: parsed.data.channel.toLowerCase(), amount, signature: parsed.data.signature.toLowerCase()};
}

/** The wire form of a voucher (`parseVoucher` reads it back). */
export function voucherJson({channel, amount, signature}: SignedVoucher) {
    return {channel, amount: amount.toString(), signature};
}

function typedDomain({chainId, contract}: VoucherDomain) {
    return {name: VOUCHER_DOMAIN_NAME, version: VOUCHER_DOMAIN_VERSION, chainId, verifyingContract: getAddress(contract)};
}

/** The EIP-712 digest the payer signs and the contract recovers from. */
export function voucherDigest(domain: VoucherDomain, {channel, amount}: Voucher) {
    if (!isHexString(channel, 32))
        throw LedgerError.invalidVoucher('the voucher\'s channel is not 32 bytes of hex');
    if (amount <= 0n || amount > UINT256_MAX)
        throw LedgerError.invalidVoucher('the voucher\'s amount must be above 0 and fit 256 bits');
    return TypedDataEncoder.hash(typedDomain(domain), VOUCHER_TYPES, {channel, amount});
}

/** The payer's voucher for `amount` (cumulative) on `channel`, signed with its wallet's key; nothing is sent. */
export function signVoucher(payerKey: SigningKey, domain: VoucherDomain, voucher: Voucher): SignedVoucher {
    // ethers signs with a low s (EIP-2), which the contract requires.
    const signature = payerKey.sign(voucherDigest(domain, voucher)).serialized;
    return {channel: voucher.channel.toLowerCase(), amount: voucher.amount, signature};
}

/** The address that signed `voucher` for `domain`; INVALID_VOUCHER for a signature the contract would refuse. */
export function voucherSigner(domain: VoucherDomain, voucher: SignedVoucher) {
    if (!isHexString(voucher.signature, 65))
        throw LedgerError.invalidVoucher('the voucher\'s signature is not 65 bytes of hex');
    // Read from the bytes: ethers' Signature throws on a high s rather than say so.
    if (BigInt(dataSlice(voucher.signature, 32, 64)) > HALF_ORDER)
        throw LedgerError.invalidVoucher('the voucher\'s signature has a high s (malleable): the contract refuses it');
    let signature: Signature;
    try {
        signature = Signature.from(voucher.signature);
    } catch {
        throw LedgerError.invalidVoucher('the voucher\'s signature is not a valid signature');
    }
    return recoverAddress(voucherDigest(domain, voucher), signature);
}

/**
 * Checks that `payer` signed `voucher` for this chain and contract: a voucher signed by anyone else, or for another
 * chain, contract or channel (all in the signed digest) recovers another address and is INVALID_VOUCHER.
 */
export function verifyVoucher(domain: VoucherDomain, voucher: SignedVoucher, payer: string) {
    if (voucherSigner(domain, voucher) !== getAddress(payer))
        throw LedgerError.invalidVoucher(`the voucher for channel ${voucher.channel} is not signed by its payer ${getAddress(payer)} for chain ${domain.chainId} and contract ${getAddress(domain.contract)}`);
}
