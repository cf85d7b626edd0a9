import {readFile} from 'node:fs/promises';
import {Wallet} from 'ethers';
import {LedgerError} from './ledger-error.js';

export interface WalletSource {
    /** A private key (0x hex), from the environment: never from a file in plain text, never from config.json. */
    privateKey?: string,
    /** An encrypted ethers/Ethereum JSON keystore. */
    keystorePath?: string,
    /** The keystore's password. */
    password?: string
}

/** The wallet that pays for anchors, or undefined when none is configured (anchoring is then off). */
export async function loadWallet({privateKey, keystorePath, password}: WalletSource): Promise<Wallet | undefined> {
    if (privateKey !== undefined && privateKey !== '') {
        try {
            return new Wallet(privateKey);
        } catch {
            // The key itself is never echoed.
            throw LedgerError.notConfigured('STRONGDOGE_WALLET_KEY is not a valid private key (64 hex digits)');
        }
    }
    if (keystorePath === undefined)
        return undefined;
    if (password === undefined)
        throw LedgerError.notConfigured(`the keystore ${keystorePath} needs its password: set STRONGDOGE_WALLET_PASSWORD (or run in a terminal to be asked)`);
    let json: string;
    try {
        json = await readFile(keystorePath, 'utf8');
    } catch (error) {
        throw LedgerError.notConfigured(`cannot read the keystore ${keystorePath}: ${(error as Error).message}`);
    }
    try {
        const wallet = await Wallet.fromEncryptedJson(json, password);
        return wallet instanceof Wallet ? wallet : new Wallet(wallet.privateKey);
    } catch (error) {
        throw LedgerError.notConfigured(`cannot open the keystore ${keystorePath}: ${(error as Error).message.split('(')[0]!.trim()}`);
    }
}
