import {stat} from 'node:fs/promises';
import {join} from 'node:path';
import {deployAnchorContract} from '../../ledger/anchor/chain.js';
import {LedgerError} from '../../ledger/ledger-error.js';
import {deployPaymentContract} from '../../ledger/payments/channels.js';
import {NodeLedger, storeAnchorContract, storePaymentContract, walletFromSettings} from '../../node/node-ledger.js';
import type {NodeSettings} from '../../node/node-settings.js';
import {IDENTITY_FILE, loadOrCreateIdentity} from '../../swarm/node-identity.js';
import {ConfigError} from '../config/config-error.js';
import {ensureDataDir} from '../data-dir.js';
import {walletPassword} from '../prompt.js';

/** `strongdoge ledger …` on the data dir of a node that is not running: loaded only then. */

export async function withOfflineLedger<T>(settings: NodeSettings, use: (ledger: NodeLedger) => Promise<T>): Promise<T> {
    if (await stat(join(settings.dataDir, IDENTITY_FILE)).catch(() => undefined) === undefined)
        throw new ConfigError(`no node has run with the data dir ${settings.dataDir}, and no node answers on its port: nothing to show`);
    const {identity} = await loadOrCreateIdentity(settings.dataDir).catch((error: Error) => {
        throw new ConfigError(error.message);
    });
    const password = await walletPassword(settings);
    const ledger = await NodeLedger.open({settings, identity, walletPassword: password, onNotice: (level, message) => {
        if (level === 'warn')
            process.stderr.write(`strongdoge: ${message}\n`);
    }});
    try {
        return await use(ledger);
    } finally {
        await ledger.close();
    }
}

/**
 * `ledger deploy`: the anchoring contract, then the payment channel contract, each stored in the data dir once mined
 * (a failed second deploy leaves the first one stored). The anchoring contract's fields stay at the top, as before
 * the payment contract existed.
 */
export async function deployContract(settings: NodeSettings) {
    const wallet = await walletFromSettings(settings, await walletPassword(settings));
    if (wallet === undefined)
        throw LedgerError.notConfigured('no wallet to pay for the deployment: set STRONGDOGE_WALLET_KEY, or --wallet with STRONGDOGE_WALLET_PASSWORD');
    await ensureDataDir(settings.dataDir);
    const chain = {rpcUrl: settings.chainRpc, chainId: settings.chainId};
    const anchor = await deployAnchorContract(chain, wallet);
    await storeAnchorContract(settings.dataDir, settings.chainId, anchor);
    const payment = await deployPaymentContract(chain, wallet);
    await storePaymentContract(settings.dataDir, settings.chainId, payment);
    // Gas is a bigint: left out, the result is printed as JSON.
    return {chainId: settings.chainId, address: anchor.address, txHash: anchor.txHash, blockNumber: anchor.blockNumber,
        paymentContract: {address: payment.address, txHash: payment.txHash, blockNumber: payment.blockNumber}};
}
