import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import test from 'ava';
import {AnchorStateFile, authorizationKey, type PendingAnchor} from '../ledger/anchor/anchor-state.js';
import {LedgerError} from '../ledger/ledger-error.js';

async function stateFile(t: {teardown(fn: () => Promise<void>): void}) {
    const directory = await mkdtemp(join(tmpdir(), 'strongdoge-anchor-state-'));
    t.teardown(() => rm(directory, {recursive: true, force: true}));
    return new AnchorStateFile(join(directory, 'ledger', 'anchor-state.json'));
}

const pending: PendingAnchor = {
    rawTx: `0x02${'ab'.repeat(100)}`, txHash: `0x${'1f'.repeat(32)}`, nonce: 7, logLength: 21, treeHash: 'c3'.repeat(32), chainId: 2000,
    contract: `0x${'Aa'.repeat(20)}`, wallet: `0x${'bB'.repeat(20)}`
};

test('no file: nothing pending; what is saved is loaded back', async (t) => {
    const file = await stateFile(t);
    t.deepEqual(await file.load(), {pending: null, authorizations: []});
    const state = {pending, authorizations: [{key: authorizationKey(2000, pending.contract, pending.wallet), validUntil: 1_900_000_000}]};
    await file.save(state);
    t.deepEqual(await file.load(), state);
    t.deepEqual(JSON.parse(await readFile(file.path, 'utf8')), state, 'the file is plain JSON');
});

test('a file missing a field takes its default, as older files do', async (t) => {
    const file = await stateFile(t);
    await file.save({pending: null, authorizations: []});
    await writeFile(file.path, JSON.stringify({pending}));
    t.deepEqual(await file.load(), {pending, authorizations: []});
});

test('a damaged or hostile file is a STORAGE error naming the file and what is wrong, never a reset', async (t) => {
    const file = await stateFile(t);
    await file.save({pending: null, authorizations: []});
    const cases: [string, RegExp][] = [
        ['{"pending": {"rawTx', /not JSON/],
        ['null', /top level/],
        [JSON.stringify({pending: {...pending, nonce: -1}}), /pending\.nonce/],
        [JSON.stringify({pending: {...pending, txHash: 'not a hash'}}), /pending\.txHash/],
        [JSON.stringify({pending: {...pending, rawTx: 42}}), /pending\.rawTx/],
        [JSON.stringify({pending: {...pending, extra: true}}), /pending/],
        [JSON.stringify({pending: null, authorizations: 'all'}), /authorizations/],
        [JSON.stringify({pending: null, authorizations: [{key: '2000:anything', validUntil: 1}]}), /authorizations\.0\.key/],
        [JSON.stringify({pending: null, authorizations: [{key: authorizationKey(2000, pending.contract, pending.wallet)}]}), /authorizations\.0\.validUntil/]
    ];
    for (const [text, reason] of cases) {
        await writeFile(file.path, text);
        const error = await t.throwsAsync(file.load(), {instanceOf: LedgerError}, text);
        t.is(error?.code, 'STORAGE');
        t.true(error!.message.startsWith(`${file.path} is damaged (`), error!.message);
        t.regex(error!.message, reason);
        t.regex(error!.message, /if no anchoring transaction is pending, remove it/);
        t.is(await readFile(file.path, 'utf8'), text, 'left as it was');
    }
});
