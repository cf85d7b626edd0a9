import test, {type ExecutionContext} from 'ava';
import {getAddress, hexlify, parseEther, Signature, Wallet} from 'ethers';
import {LedgerError} from '../ledger/ledger-error.js';
import type {ChannelState} from '../ledger/payments/channels.js';
import {PayeeBook, type SavedPayeeChannel} from '../ledger/payments/payee-book.js';
import {PayerBook, type SavedPayerChannel} from '../ledger/payments/payer-book.js';
import {dogeToWei, jobCostWei, priceWeiPerMillion, stageCostWei, weiToDoge} from '../ledger/payments/pricing.js';
import {type SignedVoucher, signVoucher, verifyVoucher} from '../ledger/payments/vouchers.js';
import {bindWallet, boundWallet} from '../ledger/payments/wallet-binding.js';
import {DEFAULT_SIGNING_DOMAIN} from '../ledger/signing-domain.js';
import {keyPair} from '../harness/ledger-fixture.js';
import {SeededRandom} from '../harness/seeded-random.js';

/**
 * The pure side of payments (docs/architecture.md, "Payments (contract)"; issue 27), no chain: prices and costs in
 * exact wei, the wallet bound to a node key, what peers owe this node (PayeeBook) and what this node pays through its
 * channels (PayerBook). Property loops are seeded: the same cases on every run.
 */

const DOGE = 10n ** 18n;
const GRACE_MS = 10_000;
const CONTRACT = getAddress('0x5fbdb2315678afecb367f032d93f642f64180aa3');
const VOUCHERS = {chainId: DEFAULT_SIGNING_DOMAIN.chainId, contract: CONTRACT};

/** A fresh random wallet as a plain Wallet (what bindWallet takes). */
const randomWallet = () => new Wallet(Wallet.createRandom().privateKey);
const randomChannel = (random?: SeededRandom) =>
    hexlify(Uint8Array.from({length: 32}, () => (random === undefined ? Math.floor(Math.random() * 256) : random.int(0, 255))));

function refusedWith(t: ExecutionContext, run: () => unknown, code: LedgerError['code'], message?: RegExp) {
    const error = t.throws(run, {instanceOf: LedgerError});
    t.is(error?.code, code);
    if (message !== undefined)
        t.regex(error?.message ?? '', message);
}

// Prices and costs.

test('prices in DOGE per million tokens are exact wei per million, decimals written out', (t) => {
    t.is(priceWeiPerMillion(0.1), 10n ** 17n);
    t.is(priceWeiPerMillion(1e-7), 10n ** 11n);
    t.is(priceWeiPerMillion(123.456789), 123_456_789n * 10n ** 12n);
    t.is(priceWeiPerMillion(1e12), 10n ** 30n);
    t.is(priceWeiPerMillion(0), 0n);
    t.is(priceWeiPerMillion(0.3), 3n * 10n ** 17n);
    t.is(priceWeiPerMillion(1e-18), 1n);
    // A double with more decimals (peers announce prices too) is rounded to the nearest wei, the same on both sides.
    t.is(priceWeiPerMillion(1e-19), 0n);
    t.is(priceWeiPerMillion(1.5e-18), 2n);
    t.is(priceWeiPerMillion(0.0010000000000000002), 10n ** 15n);
    for (const junk of [-1, -1e-18, Number.NaN, Number.POSITIVE_INFINITY])
        refusedWith(t, () => priceWeiPerMillion(junk), 'INVALID_REQUEST', /non-negative/);
});

test('every price a peer may announce converts, the same on both sides, exactly when it has 15 digits or fewer', (t) => {
    const random = new SeededRandom(27);
    for (let round = 0; round < 2000; round++) {
        // A decimal as a person writes it: up to 12 whole digits and 18 decimals, 15 significant digits at most.
        const wholeDigits = random.int(0, 12);
        const whole = wholeDigits === 0 ? '0' : String(random.int(1, 9)) + Array.from({length: wholeDigits - 1}, () => random.int(0, 9)).join('');
        const decimals = random.int(0, Math.min(18, 15 - wholeDigits));
        const text = decimals === 0 ? whole : `${whole}.${Array.from({length: decimals}, () => random.int(0, 9)).join('')}`;
        const price = Number(text);
        t.is(priceWeiPerMillion(price), parseEther(text), text);
        t.is(dogeToWei(price), parseEther(text), text);
        t.is(Number(weiToDoge(priceWeiPerMillion(price))), price, text);
    }
    // Any double the capabilities schema lets through (0 to 1e12) converts without throwing, never below 0.
    for (let round = 0; round < 2000; round++) {
        const price = random.next() * 10 ** random.int(-20, 12);
        const wei = priceWeiPerMillion(price);
        t.true(wei >= 0n && wei === priceWeiPerMillion(price));
    }
});

test('dogeToWei takes decimals of at most 18 places and refuses anything else', (t) => {
    t.is(dogeToWei('1'), DOGE);
    t.is(dogeToWei(' 2.25 '), 225n * 10n ** 16n);
    t.is(dogeToWei('0.000000000000000001'), 1n);
    t.is(dogeToWei('0.123456789012345678'), 123456789012345678n);
    t.is(dogeToWei('0'), 0n);
    t.is(dogeToWei(0.1), 10n ** 17n);
    t.is(dogeToWei(1e5), 100_000n * DOGE);
    t.is(dogeToWei(1e-7), 10n ** 11n);
    for (const junk of ['1e5', '-1', '0.1234567890123456789', ' ', '', 'abc', '1.', '.5', '0x10', '1,000', '1 000', 'NaN', 'Infinity', '+1', '1.2.3'])
        refusedWith(t, () => dogeToWei(junk), 'INVALID_REQUEST', /not an amount of DOGE/);
    for (const junk of [-1, Number.NaN, Number.POSITIVE_INFINITY])
        refusedWith(t, () => dogeToWei(junk), 'INVALID_REQUEST');
});

test('weiToDoge and dogeToWei are inverse', (t) => {
    t.is(weiToDoge(10n ** 17n), '0.1');
    t.is(weiToDoge(1n), '0.000000000000000001');
    t.is(weiToDoge(0n), '0.0');
    const random = new SeededRandom(28);
    for (let round = 0; round < 500; round++) {
        const wei = BigInt(random.int(0, 2 ** 30)) * BigInt(random.int(0, 2 ** 30)) * 10n ** BigInt(random.int(0, 20));
        t.is(dogeToWei(weiToDoge(wei)), wei);
    }
});

test('a job costs its tokens at the price, rounded down to wei', (t) => {
    const price = priceWeiPerMillion(0.1);
    t.is(jobCostWei(1000, price), 10n ** 14n);
    t.is(jobCostWei(0, price), 0n);
    t.is(jobCostWei(1_000_000, price), price);
    t.is(jobCostWei(333_333, 3n), 0n); // 0.999999 wei
    t.is(jobCostWei(1_000_001, 999_999n), 999_999n); // 999_999.999999 wei
    t.is(jobCostWei(7, 1_000_000n), 7n);
    t.is(jobCostWei(2 ** 31, priceWeiPerMillion(1e12)), 2n ** 31n * 10n ** 24n);
    t.is(jobCostWei(1000, 0n), 0n);
    const random = new SeededRandom(29);
    for (let round = 0; round < 1000; round++) {
        const tokens = random.int(0, 2_000_000);
        const priceWei = BigInt(random.int(0, 2 ** 31)) * 10n ** BigInt(random.int(0, 12));
        const cost = jobCostWei(tokens, priceWei);
        // The largest whole wei not above the exact cost.
        t.true(cost * 1_000_000n <= BigInt(tokens) * priceWei && (cost + 1n) * 1_000_000n > BigInt(tokens) * priceWei);
    }
    for (const junk of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY])
        refusedWith(t, () => jobCostWei(junk, price), 'INVALID_REQUEST');
    refusedWith(t, () => jobCostWei(10, -1n), 'INVALID_REQUEST');
});

test('pipeline stages cost their share of the layers, rounded down, never more than the whole job together', (t) => {
    const price = priceWeiPerMillion(0.1);
    t.is(stageCostWei(1000, price, 32, 32), jobCostWei(1000, price));
    t.is(stageCostWei(1000, price, 0, 32), 0n);
    t.is(stageCostWei(1000, price, 16, 32), jobCostWei(1000, price) / 2n);
    t.is(stageCostWei(1, 10n ** 6n, 1, 3), 0n); // a third of a wei
    t.is(stageCostWei(1, 3n * 10n ** 6n, 1, 3), 1n);
    const random = new SeededRandom(30);
    for (let round = 0; round < 1000; round++) {
        const totalLayers = random.int(1, 120);
        const tokens = random.int(0, 100_000);
        const priceWei = BigInt(random.int(0, 10 ** 9)) * 10n ** BigInt(random.int(0, 9));
        // Split the layers into 1 to 8 stages.
        const cuts = [...new Set(Array.from({length: random.int(0, 7)}, () => random.int(1, totalLayers)))].sort((a, b) => a - b);
        const bounds = [0, ...cuts.filter((cut) => cut < totalLayers), totalLayers];
        const stages = bounds.slice(1).map((end, index) => end - bounds[index]!);
        const shares = stages.map((layers) => stageCostWei(tokens, priceWei, layers, totalLayers));
        const whole = jobCostWei(tokens, priceWei);
        const sum = shares.reduce((total, share) => total + share, 0n);
        t.true(sum <= whole, `${sum} > ${whole}`);
        // Each share loses less than a wei to rounding.
        t.true(whole - sum <= BigInt(stages.length), `${whole} - ${sum} with ${stages.length} stages`);
    }
    for (const [layers, total] of [[1, 0], [-1, 32], [33, 32], [1.5, 32], [1, 32.5], [Number.NaN, 32]] as const)
        refusedWith(t, () => stageCostWei(1000, price, layers, total), 'INVALID_REQUEST');
    refusedWith(t, () => stageCostWei(-1, price, 1, 32), 'INVALID_REQUEST');
});

// The wallet bound to a node key.

test('a wallet binding checks for its node, network and chain, and names its wallet and contract checksummed', (t) => {
    const node = keyPair();
    const wallet = randomWallet();
    const binding = bindWallet(node, wallet, CONTRACT.toLowerCase(), DEFAULT_SIGNING_DOMAIN);
    t.deepEqual(binding, {wallet: wallet.address, contract: CONTRACT, nodeSignature: binding.nodeSignature, walletSignature: binding.walletSignature});
    // As it travels, in the capabilities' JSON.
    t.deepEqual(boundWallet(node.id, JSON.parse(JSON.stringify(binding)), DEFAULT_SIGNING_DOMAIN), binding);
    // Addresses in lower case are the same addresses.
    t.deepEqual(boundWallet(node.id, {...binding, wallet: binding.wallet.toLowerCase(), contract: binding.contract.toLowerCase()}, DEFAULT_SIGNING_DOMAIN), binding);
});

test('a wallet binding is refused on another network or chain, or with its contract or wallet changed', (t) => {
    const node = keyPair();
    const wallet = randomWallet();
    const binding = bindWallet(node, wallet, CONTRACT, DEFAULT_SIGNING_DOMAIN);
    refusedWith(t, () => boundWallet(node.id, binding, {...DEFAULT_SIGNING_DOMAIN, network: 'lab'}), 'INVALID_VOUCHER', /node's key/);
    refusedWith(t, () => boundWallet(node.id, binding, {...DEFAULT_SIGNING_DOMAIN, chainId: 31337}), 'INVALID_VOUCHER', /node's key/);
    refusedWith(t, () => boundWallet(node.id, {...binding, contract: getAddress(`0x${'12'.repeat(20)}`)}, DEFAULT_SIGNING_DOMAIN), 'INVALID_VOUCHER');
    refusedWith(t, () => boundWallet(node.id, {...binding, wallet: randomWallet().address}, DEFAULT_SIGNING_DOMAIN), 'INVALID_VOUCHER');
    // One made honestly for another contract names it: the node compares it with its own (node/node-payments.ts).
    const other = getAddress(`0x${'ab'.repeat(20)}`);
    t.is(boundWallet(node.id, bindWallet(node, wallet, other, DEFAULT_SIGNING_DOMAIN), DEFAULT_SIGNING_DOMAIN).contract, other);
    // Made on a lab network, it checks there.
    const lab = {network: 'lab', chainId: 31337};
    t.is(boundWallet(node.id, bindWallet(node, wallet, CONTRACT, lab), lab).wallet, wallet.address);
});

test('signatures swapped between nodes or wallets, and a node claiming another\'s wallet, are refused', (t) => {
    const [alice, bob] = [keyPair(), keyPair()];
    const [aliceWallet, bobWallet] = [randomWallet(), randomWallet()];
    const aliceBinding = bindWallet(alice, aliceWallet, CONTRACT, DEFAULT_SIGNING_DOMAIN);
    const bobBinding = bindWallet(bob, bobWallet, CONTRACT, DEFAULT_SIGNING_DOMAIN);
    // Alice's wallet bound to Bob too (one operator, two nodes): each binding is its own node's.
    const sharedBinding = bindWallet(bob, aliceWallet, CONTRACT, DEFAULT_SIGNING_DOMAIN);
    t.is(boundWallet(bob.id, sharedBinding, DEFAULT_SIGNING_DOMAIN).wallet, aliceWallet.address);
    const refused = (nodeId: string, candidate: unknown, message?: RegExp) => refusedWith(t, () => boundWallet(nodeId, candidate, DEFAULT_SIGNING_DOMAIN), 'INVALID_VOUCHER', message);
    // Node signatures swapped between nodes with the same wallet.
    refused(alice.id, {...aliceBinding, nodeSignature: sharedBinding.nodeSignature}, /node's key/);
    refused(bob.id, {...sharedBinding, nodeSignature: aliceBinding.nodeSignature}, /node's key/);
    // Wallet signatures swapped between wallets of one node.
    const aliceOther = bindWallet(alice, bobWallet, CONTRACT, DEFAULT_SIGNING_DOMAIN);
    refused(alice.id, {...aliceBinding, walletSignature: aliceOther.walletSignature}, /not signed by the wallet/);
    refused(alice.id, {...aliceOther, walletSignature: aliceBinding.walletSignature}, /not signed by the wallet/);
    // Bob claims Alice's wallet: her binding as is, or his own node signature with her wallet's signature.
    refused(bob.id, aliceBinding, /node's key/);
    const claimed = bindWallet(bob, randomWallet(), CONTRACT, DEFAULT_SIGNING_DOMAIN);
    const forged = {...aliceBinding, nodeSignature: bindWallet(bob, aliceWallet, CONTRACT, DEFAULT_SIGNING_DOMAIN).nodeSignature};
    t.is(forged.walletSignature, aliceBinding.walletSignature);
    refused(bob.id, forged, /not signed by the wallet/);
    refused(bob.id, {...claimed, wallet: aliceWallet.address}, /node's key/);
    refused(bob.id, {...bobBinding, walletSignature: aliceBinding.walletSignature}, /not signed by the wallet/);
});

test('a malformed wallet binding is INVALID_VOUCHER, never another error', (t) => {
    const node = keyPair();
    const wallet = randomWallet();
    const binding = bindWallet(node, wallet, CONTRACT, DEFAULT_SIGNING_DOMAIN);
    // The same letters in the other case: a checksum that does not match.
    const badChecksum = (address: string) => `0x${[...address.slice(2)].map((c) => (c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase())).join('')}`;
    const signature = Signature.from(binding.walletSignature);
    const highS = `${binding.walletSignature.slice(0, 66)}${(0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n - BigInt(signature.s)).toString(16).padStart(64, '0')}${signature.v === 27 ? '1c' : '1b'}`;
    const candidates: unknown[] = [
        null, undefined, 'binding', 42, [], {},
        {...binding, extra: true},
        {wallet: binding.wallet, contract: binding.contract, nodeSignature: binding.nodeSignature},
        {...binding, wallet: 'not an address'},
        {...binding, wallet: binding.wallet.slice(0, -1)},
        {...binding, wallet: 42},
        {...binding, contract: `${binding.contract}00`},
        {...binding, nodeSignature: binding.nodeSignature.toUpperCase()},
        {...binding, nodeSignature: binding.nodeSignature.slice(2)},
        {...binding, nodeSignature: '00'.repeat(64)},
        {...binding, walletSignature: binding.walletSignature.slice(0, -2)},
        {...binding, walletSignature: `0x${'00'.repeat(64)}1b`},
        {...binding, walletSignature: `${binding.walletSignature.slice(0, -2)}05`},
        {...binding, walletSignature: highS},
        ...(badChecksum(binding.wallet) === binding.wallet ? [] : [{...binding, wallet: badChecksum(binding.wallet)}]),
        {...binding, contract: badChecksum(binding.contract)}
    ];
    for (const candidate of candidates)
        refusedWith(t, () => boundWallet(node.id, candidate, DEFAULT_SIGNING_DOMAIN), 'INVALID_VOUCHER');
    for (const nodeId of ['', node.id.toUpperCase(), node.id.slice(2), `${node.id}00`, 'zz'.repeat(32)])
        refusedWith(t, () => boundWallet(nodeId, binding, DEFAULT_SIGNING_DOMAIN), 'INVALID_VOUCHER');
});

// What peers owe this node.

interface PayeeFixture {
    book: PayeeBook,
    payee: Wallet,
    payer: Wallet,
    peer: string,
    state: ChannelState,
    voucher: (amount: bigint, channel?: string, signer?: Wallet) => SignedVoucher
}

function payeeFixture(deposited = DOGE): PayeeFixture {
    const payee = randomWallet();
    const payer = randomWallet();
    const state = {channel: randomChannel(), payer: payer.address, payee: payee.address, deposited, redeemed: 0n, closesAt: 0};
    return {
        book: new PayeeBook(payee.address, GRACE_MS), payee, payer, peer: keyPair().id, state,
        voucher: (amount, channel = state.channel, signer = payer) => signVoucher(signer.signingKey, VOUCHERS, {channel, amount})
    };
}

test('PayeeBook.admit refuses a missing channel, another payee or payer, a closing channel', (t) => {
    const {book, payer, peer, state} = payeeFixture();
    t.regex(book.admit(peer, payer.address, null, 'job', 1n) ?? '', /does not exist/);
    t.regex(book.admit(peer, payer.address, {...state, payee: randomWallet().address}, 'job', 1n) ?? '', /not this node's wallet/);
    t.regex(book.admit(peer, randomWallet().address, state, 'job', 1n) ?? '', /is not the wallet the requester announces/);
    t.regex(book.admit(peer, payer.address, {...state, closesAt: 1_900_000_000}, 'job', 1n) ?? '', /closing/);
    t.is(book.channelOf('job'), undefined);
    t.deepEqual(book.all(), []);
    // Addresses in any case are the same addresses.
    t.is(book.admit(peer, payer.address.toLowerCase(), {...state, payee: state.payee.toLowerCase()}, 'job', 1n), undefined);
    t.is(book.channelOf('job'), state.channel);
    t.is(book.get(state.channel)?.peer, peer);
    t.is(book.get(state.channel)?.payer, payer.address);
});

test('PayeeBook.admit holds each running job\'s worst case against the deposit', (t) => {
    const {book, payer, peer, state} = payeeFixture(100n);
    const now = 1_000_000;
    t.is(book.admit(peer, payer.address, state, 'a', 60n, now), undefined);
    t.regex(book.admit(peer, payer.address, state, 'b', 50n, now) ?? '', /deposit leaves 0.00000000000000004 DOGE, less than this job's worst case of 0.00000000000000005 DOGE/);
    t.is(book.channelOf('b'), undefined);
    t.is(book.admit(peer, payer.address, state, 'b', 40n, now), undefined);
    t.regex(book.admit(peer, payer.address, state, 'c', 1n, now) ?? '', /deposit leaves 0.0 DOGE/);
    // A job ended: its worst case is freed, what it cost is owed (within the grace: no debt yet).
    book.served('a', 30n, now);
    t.is(book.get(state.channel)?.owed, 30n);
    t.is(book.channelOf('a'), undefined);
    t.truthy(book.admit(peer, payer.address, state, 'c', 31n, now));
    t.is(book.admit(peer, payer.address, state, 'c', 30n, now), undefined);
    book.served('b', 0n, now);
    book.served('c', 0n, now);
    t.is(book.get(state.channel)?.owed, 30n);
    // What is owed counts: 100 - 30 left.
    t.truthy(book.admit(peer, payer.address, state, 'd', 71n, now));
    t.is(book.admit(peer, payer.address, state, 'd', 70n, now), undefined);
    book.served('d', 0n, now);
});

test('PayeeBook.admit counts the higher of what is owed and the voucher held', (t) => {
    const {book, payer, peer, state, voucher} = payeeFixture(100n);
    const now = 1_000_000;
    t.is(book.admit(peer, payer.address, state, 'a', 50n, now), undefined);
    book.served('a', 30n, now);
    // Paid ahead: a voucher of 80 for 30 owed.
    t.is(book.voucher(peer, voucher(80n)), undefined);
    t.truthy(book.admit(peer, payer.address, state, 'b', 21n, now));
    t.is(book.admit(peer, payer.address, state, 'b', 20n, now), undefined);
    // A deposit topped up, as the chain reads it.
    t.truthy(book.admit(peer, payer.address, state, 'c', 50n, now));
    t.is(book.admit(peer, payer.address, {...state, deposited: 150n}, 'c', 50n, now), undefined);
    t.is(book.get(state.channel)?.deposited, 150n);
});

test('PayeeBook.served adds what jobs cost to what the peer owes', (t) => {
    const {book, payer, peer, state} = payeeFixture();
    t.is(book.admit(peer, payer.address, state, 'a', 1000n, 5000), undefined);
    t.is(book.admit(peer, payer.address, state, 'b', 1000n, 5000), undefined);
    book.served('a', 400n, 6000);
    t.like(book.get(state.channel), {owed: 400n, unpaidSince: 6000, short: false});
    book.served('b', 300n, 7000);
    t.like(book.get(state.channel), {owed: 700n, unpaidSince: 6000});
    // Ended already, or never admitted: nothing more.
    book.served('a', 400n, 8000);
    book.served('never', 400n, 8000);
    t.is(book.get(state.channel)?.owed, 700n);
    // A cost of 0 frees the job, owes nothing.
    t.is(book.admit(peer, payer.address, state, 'c', 1000n, 8000), undefined);
    book.served('c', 0n, 8000);
    t.is(book.channelOf('c'), undefined);
    t.is(book.get(state.channel)?.owed, 700n);
    // What is owed is never lowered.
    t.is(book.admit(peer, payer.address, state, 'd', 1000n, 8000), undefined);
    book.served('d', -500n, 8000);
    t.is(book.get(state.channel)?.owed, 700n);
});

test('PayeeBook.voucher: a higher voucher that covers clears what is owed; one that comes short is debt at once', (t) => {
    const {book, payer, peer, state, voucher} = payeeFixture();
    const now = 1_000_000;
    t.is(book.admit(peer, payer.address, state, 'a', 1000n, now), undefined);
    book.served('a', 400n, now);
    // Short: kept (it is worth redeeming), and the peer owes at once, grace or not.
    t.regex(book.voucher(peer, voucher(300n)) ?? '', /short/);
    t.is(book.get(state.channel)?.voucher?.amount, 300n);
    t.regex(book.debt(peer, now) ?? '', /owes 0.0000000000000001 DOGE .* send a voucher of 0.0000000000000004 DOGE/);
    t.regex(book.admit(peer, payer.address, state, 'b', 1n, now) ?? '', /owes/);
    // Covering: kept, nothing owed, however late.
    const covering = voucher(400n);
    t.is(book.voucher(peer, covering), undefined);
    t.deepEqual(book.get(state.channel)?.voucher, covering);
    t.like(book.get(state.channel), {unpaidSince: null, short: false});
    t.is(book.debt(peer, now + 100 * GRACE_MS), undefined);
    t.is(book.admit(peer, payer.address, state, 'b', 1n, now + 100 * GRACE_MS), undefined);
    // Above what is owed is fine too (paid ahead).
    book.served('b', 0n);
    t.is(book.voucher(peer, voucher(500n)), undefined);
    t.is(book.get(state.channel)?.voucher?.amount, 500n);
});

test('PayeeBook.voucher: a replayed or lower voucher is refused while the peer owes, fine while it does not', (t) => {
    const {book, payer, peer, state, voucher} = payeeFixture();
    const now = 1_000_000;
    t.is(book.admit(peer, payer.address, state, 'a', 1000n, now), undefined);
    book.served('a', 400n, now);
    const first = voucher(400n);
    t.is(book.voucher(peer, first), undefined);
    // Nothing owed: a replay or an older voucher pays nothing, and needs to pay nothing.
    t.is(book.voucher(peer, first), undefined);
    t.is(book.voucher(peer, voucher(100n)), undefined);
    t.deepEqual(book.get(state.channel)?.voucher, first);
    t.is(book.debt(peer, now), undefined);
    // Owing again: the same voucher pays nothing of it, and the debt counts at once.
    t.is(book.admit(peer, payer.address, state, 'b', 1000n, now), undefined);
    book.served('b', 250n, now);
    t.is(book.debt(peer, now), undefined);
    t.regex(book.voucher(peer, first) ?? '', /not above the 0.0000000000000004 DOGE held already: it pays nothing of the 0.00000000000000025 DOGE owed/);
    t.deepEqual(book.get(state.channel)?.voucher, first);
    t.truthy(book.debt(peer, now));
    t.regex(book.voucher(peer, voucher(399n)) ?? '', /not above/);
    t.deepEqual(book.get(state.channel)?.voucher, first);
    t.is(book.voucher(peer, voucher(650n)), undefined);
    t.is(book.debt(peer, now), undefined);
});

test('PayeeBook.voucher refuses one beyond the deposit, or for a channel the peer never paid through', (t) => {
    const {book, payer, peer, state, voucher} = payeeFixture(1000n);
    const now = 1_000_000;
    t.is(book.admit(peer, payer.address, state, 'a', 1000n, now), undefined);
    book.served('a', 400n, now);
    // Beyond the deposit: worth nothing on chain, so it pays nothing, and the debt counts at once.
    t.regex(book.voucher(peer, voucher(1001n)) ?? '', /beyond the channel's deposit of 0.000000000000001 DOGE/);
    t.is(book.get(state.channel)?.voucher, null);
    t.truthy(book.debt(peer, now));
    // A channel this node never saw, or one the peer never used here.
    t.regex(book.voucher(peer, voucher(400n, randomChannel())) ?? '', /which this peer never paid this node through/);
    const other = payeeFixture();
    const otherBook = new PayeeBook(other.payee.address, GRACE_MS);
    t.is(otherBook.admit(other.peer, other.payer.address, other.state, 'x', 10n, now), undefined);
    t.regex(otherBook.voucher(peer, other.voucher(10n)) ?? '', /never paid this node through/);
    t.is(otherBook.get(other.state.channel)?.voucher, null);
    // Another peer's channel in this book: refused, and what that channel holds is untouched.
    const stranger = keyPair().id;
    t.regex(book.voucher(stranger, voucher(400n)) ?? '', /never paid this node through/);
    t.is(book.get(state.channel)?.voucher, null);
    t.is(book.debt(stranger, now + 100 * GRACE_MS), undefined);
    // The peer's own good voucher still clears it.
    t.is(book.voucher(peer, voucher(400n)), undefined);
    t.is(book.debt(peer, now), undefined);
});

test('PayeeBook.debt counts unpaid work only after the grace period, and only for that peer', (t) => {
    const {book, payer, peer, state, voucher} = payeeFixture();
    const start = 1_000_000;
    t.is(book.admit(peer, payer.address, state, 'a', 1000n, start), undefined);
    book.served('a', 400n, start);
    t.is(book.debt(peer, start), undefined);
    t.is(book.debt(peer, start + GRACE_MS), undefined);
    t.regex(book.debt(peer, start + GRACE_MS + 1) ?? '', new RegExp(`owes 0.0000000000000004 DOGE for jobs served on channel ${state.channel.slice(0, 10)}`));
    // Within the grace another job runs; past it, none.
    t.is(book.admit(peer, payer.address, state, 'b', 100n, start + GRACE_MS), undefined);
    book.served('b', 0n);
    t.regex(book.admit(peer, payer.address, state, 'b', 100n, start + GRACE_MS + 1) ?? '', /owes/);
    t.is(book.channelOf('b'), undefined);
    // Another peer on its own channel owes nothing.
    const other = keyPair().id;
    const otherPayer = randomWallet();
    const otherState = {...state, channel: randomChannel(), payer: otherPayer.address};
    t.is(book.debt(other, start + 100 * GRACE_MS), undefined);
    t.is(book.admit(other, otherPayer.address, otherState, 'c', 100n, start + 100 * GRACE_MS), undefined);
    // Later work keeps the first unpaid moment: the grace is not renewed by serving more.
    t.is(book.voucher(peer, voucher(400n)), undefined);
    t.is(book.admit(peer, payer.address, state, 'd', 100n, start + 2 * GRACE_MS), undefined);
    book.served('d', 50n, start + 2 * GRACE_MS);
    t.is(book.admit(peer, payer.address, state, 'e', 100n, start + 3 * GRACE_MS - 1), undefined);
    book.served('e', 50n, start + 3 * GRACE_MS - 1);
    t.is(book.debt(peer, start + 3 * GRACE_MS), undefined);
    t.truthy(book.debt(peer, start + 3 * GRACE_MS + 1));
});

test('PayeeBook.missingVoucher makes what is owed a debt at once, for that peer only', (t) => {
    const {book, payer, peer, state, voucher} = payeeFixture();
    const now = 1_000_000;
    book.missingVoucher(peer);
    t.is(book.debt(peer, now), undefined);
    t.is(book.admit(peer, payer.address, state, 'a', 1000n, now), undefined);
    book.served('a', 400n, now);
    book.missingVoucher(keyPair().id);
    t.is(book.debt(peer, now), undefined);
    book.missingVoucher(peer);
    t.truthy(book.debt(peer, now));
    t.is(book.voucher(peer, voucher(400n)), undefined);
    t.is(book.debt(peer, now), undefined);
    // Nothing owed: a missing voucher is no debt, now or after the next job.
    book.missingVoucher(peer);
    t.is(book.admit(peer, payer.address, state, 'b', 1000n, now), undefined);
    book.served('b', 100n, now);
    t.is(book.debt(peer, now), undefined);
});

test('PayeeBook.refresh takes the chain\'s view of known channels only', (t) => {
    const {book, payer, peer, state} = payeeFixture(100n);
    book.refresh({...state, deposited: 10_000n});
    t.is(book.get(state.channel), undefined);
    t.is(book.admit(peer, payer.address, state, 'a', 100n, 0), undefined);
    book.served('a', 0n);
    book.refresh({...state, deposited: 500n, redeemed: 40n});
    t.like(book.get(state.channel), {deposited: 500n, redeemed: 40n, closesAt: 0});
    book.refresh({...state, deposited: 500n, redeemed: 40n, closesAt: 1_900_000_000});
    t.is(book.get(state.channel)?.closesAt, 1_900_000_000);
});

test('PayeeBook save and restore keep what is owed and the voucher; unpaid work is due at once after a restart', (t) => {
    const {book, payee, payer, peer, state, voucher} = payeeFixture(1000n);
    const paid = payeeFixture(1000n);
    const now = Date.now();
    // Owing 100 within the grace when the node stops.
    t.is(book.admit(peer, payer.address, state, 'a', 500n, now), undefined);
    t.is(book.admit(peer, payer.address, state, 'a2', 500n, now), undefined);
    book.served('a2', 300n, now);
    t.is(book.voucher(peer, voucher(300n)), undefined);
    book.served('a', 100n, now);
    t.is(book.debt(peer, now), undefined);
    // A second peer, all paid, on a second channel to this node.
    const paidState = {...paid.state, payee: payee.address};
    t.is(book.admit(paid.peer, paid.payer.address, paidState, 'b', 100n, now), undefined);
    book.served('b', 100n, now);
    const paidVoucher = paid.voucher(100n);
    t.is(book.voucher(paid.peer, paidVoucher), undefined);
    // A job running at the restart is not kept: it ends with the node.
    t.is(book.admit(paid.peer, paid.payer.address, paidState, 'c', 100n, now), undefined);

    const saved = JSON.parse(JSON.stringify(book.save())) as SavedPayeeChannel[];
    t.is(saved.length, 2);
    const restored = new PayeeBook(payee.address, GRACE_MS, saved);
    t.like(restored.get(state.channel), {peer, payer: payer.address, owed: 400n, deposited: 0n});
    t.is(restored.get(state.channel)?.voucher?.amount, 300n);
    t.is(restored.get(state.channel)?.voucher?.signature, book.get(state.channel)?.voucher?.signature);
    // The voucher still verifies: it is redeemable after the restart.
    t.notThrows(() => verifyVoucher(VOUCHERS, restored.get(paidState.channel)!.voucher!, paid.payer.address));
    t.deepEqual(restored.get(paidState.channel)?.voucher, paidVoucher);
    t.is(restored.channelOf('c'), undefined);
    // Owed before the restart: due at once, grace or not. The paid peer owes nothing.
    t.truthy(restored.debt(peer, now));
    t.regex(restored.admit(peer, payer.address, state, 'd', 1n, now) ?? '', /owes 0.0000000000000001 DOGE/);
    t.is(restored.debt(paid.peer, now), undefined);
    t.is(restored.admit(paid.peer, paid.payer.address, paidState, 'd', 100n, now), undefined);
    t.is(restored.get(paidState.channel)?.deposited, 1000n);
    // A voucher of what is owed settles it; lower ones do not.
    restored.refresh(state);
    t.regex(restored.voucher(peer, voucher(300n)) ?? '', /not above/);
    t.is(restored.voucher(peer, voucher(400n)), undefined);
    t.is(restored.admit(peer, payer.address, state, 'e', 600n, now), undefined);
    t.truthy(restored.admit(peer, payer.address, state, 'f', 1n, now));
    // Saved again, as it is now.
    t.deepEqual(new PayeeBook(payee.address, GRACE_MS, restored.save()).save(), restored.save());
});

test('PayeeBook, random sequences: what a peer owes and what runs never exceed the deposit, and no job is admitted while it owes', (t) => {
    const random = new SeededRandom(31);
    const seen = {admitted: 0, owing: 0, deposit: 0, paid: 0, voucherRefused: 0};
    for (let round = 0; round < 40; round++) {
        const {book, payer, peer, state, voucher} = payeeFixture(BigInt(random.int(1, 5000)));
        let now = 1_000_000;
        let deposited = state.deposited;
        let vouched = 0n;
        const running = new Map<string, bigint>();
        for (let step = 0; step < 150; step++) {
            now += random.int(0, GRACE_MS / 2);
            const move = random.int(0, 9);
            if (move <= 3) {
                const id = `${round}-${step}`;
                const worst = BigInt(random.int(0, 1500));
                const owing = book.debt(peer, now);
                const refusal = book.admit(peer, payer.address, {...state, deposited}, id, worst, now);
                if (owing !== undefined)
                    t.is(refusal, owing);
                if (refusal === undefined)
                    running.set(id, worst);
                seen[refusal === undefined ? 'admitted' : owing === undefined ? 'deposit' : 'owing']++;
            } else if (move <= 6 && running.size > 0) {
                const id = random.pick([...running.keys()]);
                // What a job costs is at most its worst case.
                book.served(id, BigInt(random.int(0, Number(running.get(id)!))), now);
                running.delete(id);
            } else if (move <= 8) {
                const channel = book.get(state.channel);
                if (channel === undefined)
                    continue;
                // The payer pays what it owes, or some of it, or replays its last voucher.
                const amount = random.pick([channel.owed, channel.owed - BigInt(random.int(0, 50)), vouched]);
                if (amount <= 0n)
                    continue;
                const expected = amount > deposited ? false : amount <= vouched ? channel.owed <= vouched : amount >= channel.owed;
                t.is(book.voucher(peer, voucher(amount)) === undefined, expected);
                seen[expected ? 'paid' : 'voucherRefused']++;
                if (amount > vouched && amount <= deposited)
                    vouched = amount;
            } else if (random.chance(0.5)) {
                deposited += BigInt(random.int(0, 2000));
                book.refresh({...state, deposited});
            }
            const channel = book.get(state.channel);
            if (channel === undefined)
                continue;
            const held = [...running.values()].reduce((sum, worst) => sum + worst, 0n);
            const spent = channel.owed > vouched ? channel.owed : vouched;
            t.true(spent + held <= deposited, `round ${round} step ${step}: ${spent} + ${held} > ${deposited}`);
            t.is(channel.voucher?.amount ?? 0n, vouched);
        }
    }
    // Every branch was taken.
    for (const [what, count] of Object.entries(seen))
        t.true(count > 10, `${what}: ${count}`);
});

// What this node pays.

function payerFixture() {
    const payee = randomWallet().address;
    const book = new PayerBook();
    const track = (deposited: bigint, options: {closesAt?: number, to?: string, peer?: string | null} = {}) => {
        const channel = randomChannel();
        book.track({channel, payee: options.to ?? payee, deposited, redeemed: 0n, closesAt: options.closesAt ?? 0},
            options.peer === undefined ? 'peer' : options.peer);
        return channel;
    };
    return {book, payee, track};
}

test('PayerBook.channelTo picks the open channel to the payee with the most left, never a closing one', (t) => {
    const {book, payee, track} = payerFixture();
    t.is(book.channelTo(payee), undefined);
    const small = track(100n);
    const large = track(300n);
    track(5000n, {closesAt: 1_900_000_000});
    track(9000n, {to: randomWallet().address});
    t.is(book.channelTo(payee)?.channel, large);
    t.is(book.channelTo(payee.toLowerCase())?.channel, large);
    t.is(book.left(book.get(large)!), 300n);
    // Held by a running job, the large one has less left.
    t.true(book.reserve('a', large, 250n));
    t.is(book.channelTo(payee)?.channel, small);
    book.release('a');
    t.is(book.channelTo(payee)?.channel, large);
    // Signed away, likewise.
    t.true(book.reserve('b', large, 250n));
    t.deepEqual(book.pay('b', 250n), {channel: large, amount: 250n});
    t.is(book.channelTo(payee)?.channel, small);
    // Closing: never picked, however much it has.
    book.track({channel: small, payee, deposited: 100n, redeemed: 0n, closesAt: 1_900_000_000}, null);
    book.track({channel: large, payee, deposited: 300n, redeemed: 0n, closesAt: 1_900_000_000}, null);
    t.is(book.channelTo(payee), undefined);
    const random = new SeededRandom(32);
    for (let round = 0; round < 200; round++) {
        const fixture = payerFixture();
        // Few distinct amounts: many ties.
        const channels = Array.from({length: random.int(1, 12)}, () => fixture.track(BigInt(random.int(0, 4)) * 100n, {closesAt: random.chance(0.2) ? 1 : 0}));
        const open = channels.map((channel) => fixture.book.get(channel)!).filter((channel) => channel.closesAt === 0);
        const most = open.map((channel) => channel.deposited).sort((a, b) => (a < b ? 1 : a > b ? -1 : 0))[0];
        const chosen = fixture.book.channelTo(fixture.payee);
        t.is(chosen?.deposited, most);
        t.is(chosen?.closesAt, open.length === 0 ? undefined : 0);
    }
});

test('PayerBook.reserve refuses beyond what is left, counting other reservations', (t) => {
    const {book, track} = payerFixture();
    const channel = track(100n);
    const closing = track(100n, {closesAt: 1_900_000_000});
    t.false(book.reserve('x', randomChannel(), 1n));
    t.false(book.reserve('x', closing, 1n));
    t.false(book.reserve('x', channel, 101n));
    t.true(book.reserve('a', channel, 60n));
    t.false(book.reserve('b', channel, 41n));
    t.true(book.reserve('b', channel, 40n));
    t.false(book.reserve('c', channel, 1n));
    t.true(book.reserve('c', channel, 0n));
    t.is(book.left(book.get(channel)!), 0n);
    book.release('a');
    t.is(book.left(book.get(channel)!), 60n);
    t.true(book.reserve('c', channel, 60n));
    // Released twice, or never reserved: nothing changes.
    book.release('a');
    book.release('never');
    t.is(book.left(book.get(channel)!), 0n);
});

test('PayerBook.pay counts the cumulative amount up and returns it; a job costing nothing signs nothing', (t) => {
    const {book, track} = payerFixture();
    const channel = track(DOGE);
    t.true(book.reserve('a', channel, 500n));
    t.deepEqual(book.pay('a', 300n), {channel, amount: 300n});
    t.is(book.get(channel)?.signed, 300n);
    // Paid once only: the reservation is gone.
    t.is(book.pay('a', 300n), undefined);
    t.is(book.get(channel)?.signed, 300n);
    t.true(book.reserve('b', channel, 500n));
    t.deepEqual(book.pay('b', 200n), {channel, amount: 500n});
    t.is(book.left(book.get(channel)!), DOGE - 500n);
    // Cost 0: no voucher, and the reservation is freed.
    t.true(book.reserve('c', channel, 500n));
    t.is(book.pay('c', 0n), undefined);
    t.is(book.get(channel)?.signed, 500n);
    t.is(book.left(book.get(channel)!), DOGE - 500n);
    // Never reserved, or released: no voucher.
    t.is(book.pay('never', 100n), undefined);
    t.true(book.reserve('d', channel, 500n));
    book.release('d');
    t.is(book.pay('d', 100n), undefined);
    // The cumulative amount is never lowered.
    t.true(book.reserve('e', channel, 500n));
    t.is(book.pay('e', -100n), undefined);
    t.is(book.get(channel)?.signed, 500n);
    // A voucher of each amount checks for the payee (the cumulative amounts pay each job once).
    const payer = randomWallet();
    const signed = signVoucher(payer.signingKey, VOUCHERS, {channel, amount: book.get(channel)!.signed});
    t.notThrows(() => verifyVoucher(VOUCHERS, signed, payer.address));
});

test('PayerBook.track keeps what was signed and the peer; the chain\'s redemptions are a floor', (t) => {
    const {book, payee, track} = payerFixture();
    const channel = track(1000n, {peer: 'alice'});
    t.true(book.reserve('a', channel, 400n));
    book.pay('a', 400n);
    book.track({channel, payee, deposited: 3000n, redeemed: 400n, closesAt: 0}, null);
    t.like(book.get(channel), {peer: 'alice', deposited: 3000n, signed: 400n, redeemed: 400n, payee: getAddress(payee)});
    // The chain redeemed more than this book recalls (state lost): the next voucher must count up from there.
    book.track({channel, payee, deposited: 3000n, redeemed: 900n, closesAt: 0}, 'alice');
    t.is(book.get(channel)?.signed, 900n);
    t.true(book.reserve('b', channel, 100n));
    t.deepEqual(book.pay('b', 100n), {channel, amount: 1000n});
});

test('PayerBook save and restore keep the signed amounts, never lowered', (t) => {
    const {book, payee, track} = payerFixture();
    const first = track(1000n, {peer: 'alice'});
    const second = track(2000n, {peer: null, closesAt: 1_900_000_000});
    t.true(book.reserve('a', first, 400n));
    book.pay('a', 250n);
    // Running at the restart: not kept (the job ended with the node).
    t.true(book.reserve('b', first, 700n));
    const saved = JSON.parse(JSON.stringify(book.save())) as SavedPayerChannel[];
    const restored = new PayerBook(saved);
    t.like(restored.get(first), {payee: getAddress(payee), peer: 'alice', deposited: 1000n, signed: 250n, redeemed: 0n, closesAt: 0});
    t.like(restored.get(second), {peer: null, deposited: 2000n, signed: 0n, closesAt: 1_900_000_000});
    t.is(restored.left(restored.get(first)!), 750n);
    t.is(restored.pay('b', 100n), undefined);
    t.true(restored.reserve('c', first, 750n));
    t.deepEqual(restored.pay('c', 100n), {channel: first, amount: 350n});
    // Read from the chain after the restart (the deposit as it is there): still counts up from what was signed.
    restored.track({channel: first, payee, deposited: 1000n, redeemed: 0n, closesAt: 0}, null);
    t.is(restored.get(first)?.signed, 350n);
    t.deepEqual(new PayerBook(restored.save()).save(), restored.save());
});

test('PayerBook, random sequences: with costs within their worst cases nothing signed exceeds the deposit', (t) => {
    const random = new SeededRandom(33);
    for (let round = 0; round < 40; round++) {
        const fixture = payerFixture();
        const {payee, track} = fixture;
        let {book} = fixture;
        const channels = Array.from({length: random.int(1, 4)}, () => track(BigInt(random.int(0, 10_000))));
        const running = new Map<string, bigint>();
        const lastAmount = new Map<string, bigint>();
        for (let step = 0; step < 200; step++) {
            const move = random.int(0, 9);
            if (move <= 3) {
                const id = `${round}-${step}`;
                const worst = BigInt(random.int(0, 3000));
                const chosen = random.chance(0.7) ? book.channelTo(payee)?.channel : random.pick(channels);
                if (chosen === undefined)
                    continue;
                const before = book.left(book.get(chosen)!);
                const reserved = book.reserve(id, chosen, worst);
                t.is(reserved, before >= worst);
                if (reserved)
                    running.set(id, worst);
            } else if (move <= 6 && running.size > 0) {
                const id = random.pick([...running.keys()]);
                const cost = BigInt(random.int(0, Number(running.get(id)!)));
                running.delete(id);
                const next = book.pay(id, cost);
                t.is(next === undefined, cost === 0n);
                if (next !== undefined) {
                    t.true(next.amount > (lastAmount.get(next.channel) ?? 0n));
                    lastAmount.set(next.channel, next.amount);
                }
            } else if (move === 7 && running.size > 0) {
                const id = random.pick([...running.keys()]);
                running.delete(id);
                book.release(id);
            } else if (move === 8) {
                const chosen = book.get(random.pick(channels))!;
                book.track({...chosen, deposited: chosen.deposited + BigInt(random.int(0, 2000))}, null);
            } else {
                // A restart: running jobs end with the node.
                book = new PayerBook(JSON.parse(JSON.stringify(book.save())) as SavedPayerChannel[]);
                running.clear();
            }
            for (const channel of book.all()) {
                t.true(channel.signed <= channel.deposited, `round ${round} step ${step}: ${channel.signed} > ${channel.deposited}`);
                t.true(book.left(channel) >= 0n);
                t.is(channel.signed, lastAmount.get(channel.channel) ?? 0n);
            }
        }
    }
});

test('PayeeBook.voucher holds a voucher to the work up to its own job: one overtaken by later work is not short, and the grace runs from the oldest job left unpaid', (t) => {
    const {book, payer, peer, state, voucher} = payeeFixture();
    const now = 1_000_000;
    t.is(book.admit(peer, payer.address, state, 'a', 1000n, now), undefined);
    book.served('a', 100n, now);
    t.is(book.admit(peer, payer.address, state, 'b', 1000n, now + 1), undefined);
    book.served('b', 50n, now + 2);
    // a's voucher arrives after b was served: it pays all of a, and b's is on its way.
    t.is(book.voucher(peer, voucher(100n), 'a'), undefined);
    t.like(book.get(state.channel), {short: false, unpaidSince: now + 2});
    t.is(book.debt(peer, now + 2 + GRACE_MS), undefined);
    t.regex(book.debt(peer, now + 3 + GRACE_MS) ?? '', /owes 0.00000000000000005 DOGE/);
    t.is(book.voucher(peer, voucher(150n), 'b'), undefined);
    t.like(book.get(state.channel), {short: false, unpaidSince: null});
    // Out of order the other way: b's voucher first covers a too, and a's coming last is no replay.
    book.admit(peer, payer.address, state, 'c', 1000n, now);
    book.served('c', 10n, now);
    book.admit(peer, payer.address, state, 'd', 1000n, now);
    book.served('d', 20n, now);
    t.is(book.voucher(peer, voucher(180n), 'd'), undefined);
    t.is(book.voucher(peer, voucher(160n), 'c'), undefined);
    t.is(book.debt(peer, now + 100 * GRACE_MS), undefined);
    // A voucher short of its own job's work is debt at once.
    book.admit(peer, payer.address, state, 'e', 1000n, now);
    book.served('e', 10n, now);
    book.admit(peer, payer.address, state, 'f', 1000n, now);
    book.served('f', 10n, now);
    t.regex(book.voucher(peer, voucher(185n), 'e') ?? '', /for work worth 0.00000000000000019 DOGE: 0.000000000000000005 DOGE short/);
    t.regex(book.debt(peer, now) ?? '', /owes/);
});

test('PayerBook.pay never signs more for a job than was held for it', (t) => {
    const {book, track} = payerFixture();
    const channel = track(1000n);
    t.true(book.reserve('job', channel, 100n));
    t.deepEqual(book.pay('job', 5000n), {channel, amount: 100n});
    t.is(book.get(channel)?.signed, 100n);
});

test('PayeeBook.admit: a channel pays for one node\'s jobs only, not another node of the same wallet', (t) => {
    const {book, payer, peer, state} = payeeFixture();
    t.is(book.admit(peer, payer.address, state, 'a', 10n), undefined);
    t.regex(book.admit(keyPair().id, payer.address, state, 'b', 10n) ?? '', /pays for another node's jobs/);
    t.is(book.channelOf('b'), undefined);
});
