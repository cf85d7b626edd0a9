import test from 'ava';
import crypto from 'hypercore-crypto';
import {RECEIPT_VERSION, ReceiptError, signReceiptBody, verifyReceipt, type ReceiptBody} from '../ledger/receipt.js';

const provider = crypto.keyPair();
const requester = crypto.keyPair();
const stranger = crypto.keyPair();

const body: ReceiptBody = {
    version: RECEIPT_VERSION,
    network: 'public',
    chainId: 2000,
    kind: 'generate',
    jobId: 'ab'.repeat(16),
    model: 'demo',
    modelSha256: 'cd'.repeat(32),
    modelBytes: 11_000_000,
    promptTokens: 31,
    completionTokens: 40,
    promptMs: 12.5,
    generationMs: 80.25,
    provider: provider.publicKey.toString('hex'),
    requester: requester.publicKey.toString('hex'),
    completedAt: '2026-11-25T10:00:00.000Z'
};

function signed(overrides: Partial<ReceiptBody> = {}) {
    const signedBody = {...body, ...overrides};
    return {
        body: signedBody,
        requesterSignature: signReceiptBody(signedBody, requester.secretKey),
        providerSignature: signReceiptBody(signedBody, provider.secretKey)
    };
}

test('a receipt signed by both parties verifies', (t) => {
    t.deepEqual(verifyReceipt(signed()), signed());
});

test('a receipt the provider has not countersigned verifies only when that is allowed', (t) => {
    const receipt = {...signed(), providerSignature: null};
    t.throws(() => verifyReceipt(receipt), {instanceOf: ReceiptError, message: /not countersigned/});
    t.notThrows(() => verifyReceipt(receipt, {countersigned: false}));
});

const altered: [string, (receipt: ReturnType<typeof signed>) => unknown][] = [
    ['more completion tokens', (receipt) => ({...receipt, body: {...receipt.body, completionTokens: 4000}})],
    ['fewer prompt tokens', (receipt) => ({...receipt, body: {...receipt.body, promptTokens: 1}})],
    ['another model', (receipt) => ({...receipt, body: {...receipt.body, model: 'llama-70b'}})],
    ['a larger model', (receipt) => ({...receipt, body: {...receipt.body, modelBytes: receipt.body.modelBytes * 2}})],
    ['another provider', (receipt) => ({...receipt, body: {...receipt.body, provider: stranger.publicKey.toString('hex')}})],
    ['a provider signature by a stranger', (receipt) => ({...receipt, providerSignature: signReceiptBody(receipt.body, stranger.secretKey)})],
    ['a requester signature by the provider', (receipt) => ({...receipt, requesterSignature: signReceiptBody(receipt.body, provider.secretKey)})],
    ['signatures swapped', (receipt) => ({...receipt, requesterSignature: receipt.providerSignature, providerSignature: receipt.requesterSignature})],
    ['a flipped signature bit', (receipt) => ({...receipt, providerSignature: (receipt.providerSignature[0] === 'a' ? 'b' : 'a') + receipt.providerSignature.slice(1)})],
    ['negative tokens', () => signed({completionTokens: -1})],
    ['fractional tokens', () => signed({promptTokens: 1.5})],
    ['an unknown version', () => signed({version: 4 as 3})],
    ['the version before', () => signed({version: 2 as 3})],
    ['another network', (receipt) => ({...receipt, body: {...receipt.body, network: 'testnet'}})],
    ['another chain', (receipt) => ({...receipt, body: {...receipt.body, chainId: 31337}})],
    ['another model file', (receipt) => ({...receipt, body: {...receipt.body, modelSha256: 'ef'.repeat(32)}})],
    ['dated in the future', () => signed({completedAt: '2099-01-01T00:00:00.000Z'})],
    ['dated before the ledger existed', () => signed({completedAt: '2020-01-01T00:00:00.000Z'})],
    ['an embedding with generated tokens', () => signed({kind: 'embed'})],
    ['self-dealing', () => signed({provider: requester.publicKey.toString('hex')})],
    ['an extra field', (receipt) => ({...receipt, body: {...receipt.body, bonus: 1}})],
    ['a malformed job id', () => signed({jobId: 'nope'})],
    ['not an object', () => 'receipt'],
    ['a truncated signature', (receipt) => ({...receipt, requesterSignature: receipt.requesterSignature.slice(0, 64)})]
];

for (const [name, alter] of altered) {
    test(`a forged or altered receipt is rejected: ${name}`, (t) => {
        t.throws(() => verifyReceipt(alter(signed())), {instanceOf: ReceiptError});
    });
}
