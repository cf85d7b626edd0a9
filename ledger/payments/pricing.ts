/**
 * What a job costs in wei (docs/architecture.md, "Payments"): `--price` is DOGE per million tokens, a job costs its
 * receipt's tokens at the price announced when it started, rounded down to wei, and a pipeline stage its share of the
 * layers. Pure: both sides of a channel compute the same numbers.
 */
import {formatEther, parseEther} from 'ethers';
import {LedgerError} from '../ledger-error.js';

const MILLION = 1_000_000n;

/**
 * A price in DOGE per million tokens as wei per million tokens, exact for any price written with 18 decimals or fewer.
 * A double with more (1e-19) is rounded to the nearest wei, not refused: peers announce prices, and both sides round
 * the same number the same way.
 */
export function priceWeiPerMillion(price: number): bigint {
    if (!Number.isFinite(price) || price < 0)
        throw LedgerError.invalidRequest(`a price must be a non-negative number of DOGE, not ${price}`);
    return parseEther(plainDecimal(price));
}

/** A number in plain decimals rounded to 18 places (never 1e-7), so that 0.1 is exactly 0.1 DOGE: the shortest form that reads back as it. */
function plainDecimal(value: number) {
    return value.toLocaleString('en-US', {useGrouping: false, maximumFractionDigits: 18});
}

/** DOGE as wei, for amounts users type (`wallet deposit <peer> <DOGE>`, `--auto-deposit`); INVALID_REQUEST if not one. */
export function dogeToWei(doge: number | string): bigint {
    const text = typeof doge === 'number' ? plainDecimal(doge) : doge.trim();
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
    checkCount(tokens, 'tokens');
    checkPrice(priceWei);
    return BigInt(tokens) * priceWei / MILLION;
}

/**
 * A pipeline stage's cost: its share of the layers (`stageLayers` of `totalLayers`) of `tokens` at the host's
 * `priceWei` per million, rounded down.
 */
export function stageCostWei(tokens: number, priceWei: bigint, stageLayers: number, totalLayers: number): bigint {
    if (!Number.isSafeInteger(stageLayers) || !Number.isSafeInteger(totalLayers) || totalLayers <= 0 || stageLayers < 0 || stageLayers > totalLayers)
        throw LedgerError.invalidRequest(`a stage of ${stageLayers} layers out of ${totalLayers}`);
    checkCount(tokens, 'tokens');
    checkPrice(priceWei);
    return BigInt(tokens) * priceWei * BigInt(stageLayers) / (MILLION * BigInt(totalLayers));
}

// A negative count or price would make a negative cost, which would count down what a channel owes or signed.
function checkCount(count: number, what: string) {
    if (!Number.isSafeInteger(count) || count < 0)
        throw LedgerError.invalidRequest(`${what} must be a whole number of at least 0, not ${count}`);
}

function checkPrice(priceWei: bigint) {
    if (priceWei < 0n)
        throw LedgerError.invalidRequest(`a price must be at least 0 wei, not ${priceWei}`);
}
