import {z} from 'zod';

/**
 * What every signed ledger message names and every time it carries is held to (docs/architecture.md, "Ledger"): a
 * signature made on one network or chain is worthless on another, and a record cannot be dated before strongdoge
 * existed or far in the checker's future.
 */

/** The swarm network and the chain a signature was made for. */
export interface SigningDomain {
    network: string,
    chainId: number
}

/** A node's domain with the default settings: the public network on Dogechain (chain id 2000). */
export const DEFAULT_SIGNING_DOMAIN: SigningDomain = {network: 'public', chainId: 2000};

/** The domain's fields, as each signed body's schema spreads them. */
export const signingDomainFields = {
    network: z.string().min(1).max(128).regex(/^[\w.-]+$/),
    chainId: z.number().int().positive().max(2 ** 31)
};

/** Why a signed body's domain is not `expected`, or undefined when it is. */
export function domainProblem(body: SigningDomain, expected: SigningDomain): string | undefined {
    if (body.network !== expected.network)
        return `it was signed for network '${body.network.slice(0, 32)}', not '${expected.network}'`;
    if (body.chainId !== expected.chainId)
        return `it was signed for chain ${body.chainId}, not ${expected.chainId}`;
    return undefined;
}

/** No record is older than this: the first release of the ledger. */
export const EARLIEST_RECORD_TIME = Date.parse('2026-01-01T00:00:00Z');
/** How far ahead of the checker's clock a time may be: clocks of peers differ. */
export const MAX_CLOCK_SKEW_MS = 10 * 60_000;

/** A time a record carries: ISO 8601 in UTC, not before EARLIEST_RECORD_TIME. */
export const recordTime = z.iso.datetime().refine((at) => Date.parse(at) >= EARLIEST_RECORD_TIME, 'dated before the ledger existed');

/** Why `at` is too far in the future of `now`, or undefined. */
export function futureTimeProblem(at: string, now = Date.now()): string | undefined {
    return Date.parse(at) > now + MAX_CLOCK_SKEW_MS ? `it is dated ${at}, in the future` : undefined;
}
