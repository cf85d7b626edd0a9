/**
 * The ledger's one error type: a code for each way the log, its anchoring or its verification can fail. Codes are
 * SCREAMING_CASE like Holepunch's; the HTTP API answers them in lower case (`proxy/api-error.ts`).
 */

export type LedgerErrorCode =
    /** A record that does not fit the schema, or whose receipt does not verify: never appended. */
    | 'INVALID_RECORD'
    /** The log on disk cannot be opened or read. */
    | 'STORAGE'
    /** No wallet, no contract, or a setting that cannot work. */
    | 'NOT_CONFIGURED'
    /** An argument that cannot be right (a wallet that is not an address). */
    | 'INVALID_REQUEST'
    /** `ledger revoke`: the wallet has no authorization for this log that is still valid. */
    | 'NOTHING_TO_REVOKE'
    /** The chain RPC answers a chain id other than the one configured: nothing is sent. */
    | 'WRONG_CHAIN'
    /** The chain's fee is above `--max-fee-gwei`. */
    | 'FEE_TOO_HIGH'
    /** The chain RPC cannot be reached, or did not answer in time. */
    | 'CHAIN_UNAVAILABLE'
    /** The anchoring transaction was mined but reverted. */
    | 'REVERTED'
    /** A payment voucher that does not verify: another signer, chain, contract or channel, or a malformed one. */
    | 'INVALID_VOUCHER'
    /** The payment contract refuses the call (a voucher redeemed before or beyond the deposit, a close not yet due). */
    | 'CHANNEL_REFUSED';

export class LedgerError extends Error {
    constructor(readonly code: LedgerErrorCode, message: string) {
        super(message);
        this.name = 'LedgerError';
    }

    static invalidRecord(message: string) {
        return new LedgerError('INVALID_RECORD', message);
    }

    static storage(message: string) {
        return new LedgerError('STORAGE', message);
    }

    static notConfigured(message: string) {
        return new LedgerError('NOT_CONFIGURED', message);
    }

    static invalidRequest(message: string) {
        return new LedgerError('INVALID_REQUEST', message);
    }

    static nothingToRevoke(message: string) {
        return new LedgerError('NOTHING_TO_REVOKE', message);
    }

    static wrongChain(message: string) {
        return new LedgerError('WRONG_CHAIN', message);
    }

    static feeTooHigh(message: string) {
        return new LedgerError('FEE_TOO_HIGH', message);
    }

    static chainUnavailable(message: string) {
        return new LedgerError('CHAIN_UNAVAILABLE', message);
    }

    static reverted(message: string) {
        return new LedgerError('REVERTED', message);
    }

    static invalidVoucher(message: string) {
        return new LedgerError('INVALID_VOUCHER', message);
    }

    static channelRefused(message: string) {
        return new LedgerError('CHANNEL_REFUSED', message);
    }
}
