import {randomBytes} from 'node:crypto';
import crypto from 'hypercore-crypto';
import {RECEIPT_VERSION, signReceiptBody, type Receipt, type ReceiptBody} from '../ledger/receipt.js';
import {DEFAULT_SIGNING_DOMAIN} from '../ledger/signing-domain.js';
import {LEDGER_RECORD_VERSION, type LedgerRecord} from '../ledger/records.js';

/** Key pairs and real, signed receipts and records for ledger tests. */

export function keyPair() {
    const pair = crypto.keyPair();
    return {...pair, id: pair.publicKey.toString('hex')};
}

export type KeyPair = ReturnType<typeof keyPair>;

/** The signing domain of a node with the default settings: the public network on Dogechain. */
export const DEFAULT_DOMAIN = DEFAULT_SIGNING_DOMAIN;

/** A receipt the requester signed and the provider countersigned, as the jobs protocol leaves it. */
export function countersignedReceipt(provider: KeyPair, requester: KeyPair, overrides: Partial<ReceiptBody> = {}): Receipt {
    const body: ReceiptBody = {
        version: RECEIPT_VERSION, ...DEFAULT_DOMAIN, kind: 'generate', jobId: randomBytes(16).toString('hex'), model: 'demo',
        modelSha256: 'ab'.repeat(32), modelBytes: 2e9, promptTokens: 12,
        completionTokens: 40, promptMs: 5, generationMs: 50, provider: provider.id, requester: requester.id,
        completedAt: new Date().toISOString(), ...overrides
    };
    return {body, requesterSignature: signReceiptBody(body, requester.secretKey), providerSignature: signReceiptBody(body, provider.secretKey)};
}

export function servedRecord(receipt: Receipt): LedgerRecord {
    return {version: LEDGER_RECORD_VERSION, type: 'served', at: new Date().toISOString(), receipt};
}

export function consumedRecord(receipt: Receipt): LedgerRecord {
    return {version: LEDGER_RECORD_VERSION, type: 'consumed', at: new Date().toISOString(), receipt};
}
