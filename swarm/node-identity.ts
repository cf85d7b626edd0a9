import {chmod, readFile, stat, writeFile} from 'node:fs/promises';
import {join} from 'node:path';
import crypto from 'hypercore-crypto';
import z32 from 'z32';

export const IDENTITY_FILE = 'identity.json';
/** Owner read/write only: the secret key is the node's identity. */
const KEY_FILE_MODE = 0o600;

export interface NodeIdentity {
    publicKey: Buffer,
    secretKey: Buffer,
    /** Hex public key: the node id. */
    id: string,
    /** z-base32 of the public key's first bytes, for people. */
    shortId: string
}

export class IdentityError extends Error {
    constructor(message: string) {
        super(message);
        this.name = 'IdentityError';
    }
}

export function shortNodeId(publicKey: Buffer) {
    return z32.encode(publicKey.subarray(0, 5));
}

function toIdentity(publicKey: Buffer, secretKey: Buffer): NodeIdentity {
    return {publicKey, secretKey, id: publicKey.toString('hex'), shortId: shortNodeId(publicKey)};
}

/**
 * The node's ed25519 key pair: created on first start, kept in `<data dir>/identity.json` (mode 0600).
 * A damaged file is an error, never silently replaced: that would change who this node is.
 */
export async function loadOrCreateIdentity(dataDir: string): Promise<{identity: NodeIdentity, created: boolean, permissionsFixed: boolean}> {
    const path = join(dataDir, IDENTITY_FILE);
    let text: string;
    try {
        text = await readFile(path, 'utf8');
    } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT')
            throw new IdentityError(`${path}: cannot read: ${(error as Error).message}`);
        const {publicKey, secretKey} = crypto.keyPair();
        await writeFile(path, JSON.stringify({publicKey: publicKey.toString('hex'), secretKey: secretKey.toString('hex')}) + '\n',
            {mode: KEY_FILE_MODE, flag: 'wx'});
        return {identity: toIdentity(publicKey, secretKey), created: true, permissionsFixed: false};
    }

    let stored: unknown;
    try {
        stored = JSON.parse(text);
    } catch {
        throw new IdentityError(`${path}: not valid JSON; move it away to create a new identity`);
    }
    if (stored === null || typeof stored !== 'object' || Array.isArray(stored))
        throw new IdentityError(`${path}: must hold a JSON object with "publicKey" and "secretKey"; move it away to create a new identity`);
    if (!('publicKey' in stored) || !('secretKey' in stored) || typeof stored.publicKey !== 'string' || !/^[0-9a-f]{64}$/.test(stored.publicKey)
        || typeof stored.secretKey !== 'string' || !/^[0-9a-f]{128}$/.test(stored.secretKey))
        throw new IdentityError(`${path}: missing or malformed keys; move it away to create a new identity`);
    const publicKey = Buffer.from(stored.publicKey, 'hex');
    const secretKey = Buffer.from(stored.secretKey, 'hex');
    if (!secretKey.subarray(32).equals(publicKey))
        throw new IdentityError(`${path}: the secret key does not belong to the public key`);

    let permissionsFixed = false;
    if (((await stat(path)).mode & 0o077) !== 0) {
        await chmod(path, KEY_FILE_MODE);
        permissionsFixed = true;
    }
    return {identity: toIdentity(publicKey, secretKey), created: false, permissionsFixed};
}
