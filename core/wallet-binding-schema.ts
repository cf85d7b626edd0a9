import {z} from 'zod';

/**
 * A node's payment wallet as it announces it (docs/architecture.md, "Payments"): the shape only, which the swarm
 * checks on every capabilities message; the signatures are checked by ledger/payments/wallet-binding.ts.
 */
export const walletBindingSchema = z.object({
    wallet: z.string().regex(/^0x[0-9a-fA-F]{40}$/),
    /** The payment contract the wallet is paid through. */
    contract: z.string().regex(/^0x[0-9a-fA-F]{40}$/),
    /** The node key's ed25519 signature of the binding statement, hex. */
    nodeSignature: z.string().regex(/^[0-9a-f]{128}$/),
    /** The wallet's EIP-191 signature of the same statement, hex. */
    walletSignature: z.string().regex(/^0x[0-9a-fA-F]{130}$/)
}).strict();

export type WalletBinding = z.infer<typeof walletBindingSchema>;
