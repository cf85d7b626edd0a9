/**
 * What a job costs in wei (docs/architecture.md, "Payments"): `--price` is DOGE per million tokens, a job costs its
 * receipt's tokens at the price announced when it started, rounded down to wei, and a pipeline stage its share of the
 * layers. Pure: both sides of a channel compute the same numbers.
 */
import {formatEther, parseEther} from 'ethers';
import {LedgerError} from '../ledger-error.js';

const MILLION = 1_000_000n;

/** A price in DOGE per million tokens as wei per million tokens; decimals beyond 18 places are an error, not rounded. */
export function priceWeiPerMillion(price: number): bigint {
    if (!Number.isFinite(price) || price < 0)
        throw LedgerError.invalidRequest(`a price must be a non-negative number of DOGE, not ${price}`);
    // Written out in plain decimals (never 1e-7) so that 0.1 is exactly 0.1 DOGE.
    const text = price.toLocaleString('en-US', {useGrouping: false, maximumFractionDigits: 18});
    return parseEther(text);
}

/** DOGE as wei, for amounts users type (`wallet deposit <peer> <DOGE>`, `--auto-deposit`); INVALID_REQUEST if not one. */
export function dogeToWei(doge: number | string): bigint {
    const text = typeof doge === 'number' ? doge.toLocaleString('en-US', {useGrouping: false, maximumFractionDigits: 18}) : doge.trim();
    if (!/^\d+(\.\d{1,18})?$/.test(text))
        throw LedgerError.invalidRequest(`not an amount of DOGE: ${JSON.stringify(String(doge)).slice(0, 40)}`);
    return parseEther(text);
}

/** Wei as DOGE, in decimals (for people and JSON; amounts stay bigint wei everywhere else). */
export function weiToDoge(wei: bigint) {
    return formatEther(wei);
}

/** A whole job's cost: `tokens` (prompt + completion, as its receipt states them) at `priceWei` per million, rounded down. */
export function jobCostWei(tokens: number, priceWei: bigint): bigint {
    return BigInt(tokens) * priceWei / MILLION;
}

/**
 * A pipeline stage's cost: its share of the layers (`stageLayers` of `totalLayers`) of `tokens` at the host's
 * `priceWei` per million, rounded down.
 */
export function stageCostWei(tokens: number, priceWei: bigint, stageLayers: number, totalLayers: number): bigint {
    if (totalLayers <= 0 || stageLayers < 0 || stageLayers > totalLayers)
        throw LedgerError.invalidRequest(`a stage of ${stageLayers} layers out of ${totalLayers}`);
    return BigInt(tokens) * priceWei * BigInt(stageLayers) / (MILLION * BigInt(totalLayers));
}
