/**
 * Runs one redeem of the vouchers given in a process of its own, for a test that kills it between sending and
 * recording. Usage: node --import tsx redeemer-process.ts '<json>', the JSON holding rpcUrl, chainId, contract,
 * payeeKey, statePath, logDirectory, ownerSecretKey (hex), confirmations and vouchers (their wire form, with payer).
 * Prints `started`, then `redeemed <count>` or `failed <code>: <message>`.
 */
import {Wallet} from 'ethers';
import {ContributionLog} from '../ledger/contribution-log.js';
import {LedgerError} from '../ledger/ledger-error.js';
import {Redeemer} from '../ledger/payments/redeemer.js';
import {parseVoucher} from '../ledger/payments/vouchers.js';

const settings = JSON.parse(process.argv[2]!) as {
    rpcUrl: string, chainId: number, contract: string, payeeKey: string, statePath: string, logDirectory: string, ownerSecretKey: string,
    confirmations: number, vouchers: {voucher: unknown, payer: string}[]
};
const secretKey = Buffer.from(settings.ownerSecretKey, 'hex');
const log = await ContributionLog.open({directory: settings.logDirectory, identity: {publicKey: secretKey.subarray(32), secretKey}});
const vouchers = settings.vouchers.map(({voucher, payer}) => ({voucher: parseVoucher(voucher), payer}));
const redeemer = new Redeemer({
    rpcUrl: settings.rpcUrl, chainId: settings.chainId, contract: settings.contract, wallet: new Wallet(settings.payeeKey), log,
    statePath: settings.statePath, maxFeeGwei: 1000, confirmations: settings.confirmations, intervalMs: 3_600_000, thresholdWei: 0n,
    vouchers: () => vouchers, miningTimeoutMs: 600_000
});
process.stdout.write('started\n');
try {
    process.stdout.write(`redeemed ${(await redeemer.redeemNow()).length}\n`);
} catch (error) {
    process.stdout.write(`failed ${error instanceof LedgerError ? error.code : 'ERROR'}: ${(error as Error).message}\n`);
}
await log.close();
