import {spawn} from 'node:child_process';
import {mkdtemp, readdir, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {createInterface} from 'node:readline';
import test from 'ava';
import Corestore from 'corestore';
import {ContributionLog} from '../ledger/contribution-log.js';
import {modelFactor, tallyPoints} from '../ledger/points.js';
import {checkRecord} from '../ledger/record-check.js';
import {LEDGER_RECORD_VERSION, type LedgerRecord} from '../ledger/records.js';
import {countersignShardReceipt, signShardReceipt, verifyShardReceipt} from '../ledger/shard-receipt.js';
import {verifyLog} from '../ledger/verify-log.js';
import {consumedRecord, countersignedReceipt, keyPair, servedRecord} from '../harness/ledger-fixture.js';

const owner = keyPair();
const peer = keyPair();
const stranger = keyPair();

async function temporaryDir(t: {teardown(fn: () => Promise<void>): void}) {
    const dir = await mkdtemp(join(tmpdir(), 'strongdoge-ledger-'));
    t.teardown(() => rm(dir, {recursive: true, force: true}));
    return dir;
}

async function openLog(t: Parameters<typeof temporaryDir>[0], dir?: string) {
    const directory = dir ?? await temporaryDir(t);
    const log = await ContributionLog.open({directory, identity: owner});
    return {log, directory};
}

test('points: tokens × layer share × model size in GB, only for the owner\'s own work, once', (t) => {
    const served = servedRecord(countersignedReceipt(owner, peer, {completionTokens: 100, modelBytes: 7e9}));
    const small = servedRecord(countersignedReceipt(owner, peer, {completionTokens: 100, modelBytes: 1e8}));
    const shard = {version: LEDGER_RECORD_VERSION, type: 'shard', at: new Date().toISOString(), receipt: countersignShardReceipt(verifyShardReceipt(signShardReceipt({
        version: 2, network: 'test', chainId: 31337, session: 'a'.repeat(64), sequence: 1, model: 'big', modelBytes: 40e9, modelSha256: null,
        layerCount: 32, firstLayer: 8, lastLayer: 15, tokens: 200, computeMs: 900, host: owner.id, coordinator: peer.id, completedAt: new Date().toISOString()
    }, peer.secretKey), {countersigned: false}), owner.secretKey)} satisfies LedgerRecord;
    const tally = tallyPoints(owner.id, [
        served, small, shard,
        served, // the same job again
        servedRecord(countersignedReceipt(peer, stranger)), // another node's work
        consumedRecord(countersignedReceipt(peer, owner, {completionTokens: 999})) // what the owner used
    ]);
    t.is(modelFactor(7e9), 7);
    t.is(modelFactor(1e8), 1, 'small models count as 1 GB');
    t.is(tally.points, 100 * 7 + 100 * 1 + 200 * (8 / 32) * 40);
    t.like(tally, {servedJobs: 2, servedTokens: 200, shardSessions: 1, shardTokens: 200, consumedJobs: 1, consumedTokens: 999,
        ignored: {selfDealt: 0, duplicate: 1, notOwner: 1}});
    // The same records in any order give the same points.
    t.is(tallyPoints(owner.id, [shard, consumedRecord(countersignedReceipt(peer, owner)), small, served]).points, tally.points);
});

test('points from sock puppets are bare claims: only work done for a node the counter stands behind is witnessed', (t) => {
    // Two identities cost nothing: a puppet "requests" jobs that never ran and both sign. The records verify...
    const puppet = keyPair();
    const claims = [1, 2, 3].map(() => servedRecord(countersignedReceipt(owner, puppet, {completionTokens: 1000})));
    const forPeer = servedRecord(countersignedReceipt(owner, peer, {completionTokens: 10, modelBytes: 0}));
    const records = [...claims, forPeer];
    for (const [index, record] of records.entries())
        t.notThrows(() => checkRecord(record, {owner: owner.id, coreKey: 'c'.repeat(64), index: index + 1}));
    // ...and earn points, but none a third party stands behind; work done for a trusted peer is witnessed.
    const unwitnessed = tallyPoints(owner.id, records);
    t.is(unwitnessed.points, 3 * 1000 * 2 + 10);
    t.is(unwitnessed.witnessedPoints, 0);
    t.is(tallyPoints(owner.id, records, {witnesses: new Set([peer.id])}).witnessedPoints, 10, 'a model nobody vouched for counts at 1 GB');
});

test('embeddings earn a tenth of a point per input token and GB; totals are exact integers whatever the order and size', (t) => {
    const embedding = servedRecord(countersignedReceipt(owner, peer, {kind: 'embed', promptTokens: 500, completionTokens: 0, modelBytes: 0}));
    t.like(tallyPoints(owner.id, [embedding]), {points: 50, embeddedJobs: 1, embeddedTokens: 500, servedJobs: 0});
    // Records whose thousandths pass 2^53: a sum in floating point would depend on the order.
    const huge = [9_999_999, 7_777_777, 3].map((tokens) => servedRecord(countersignedReceipt(owner, peer, {completionTokens: tokens, modelBytes: 2 ** 50})));
    const small = servedRecord(countersignedReceipt(owner, peer, {completionTokens: 1, modelBytes: 1}));
    const forward = tallyPoints(owner.id, [...huge, small]);
    const backward = tallyPoints(owner.id, [small, ...huge].reverse());
    const exact = [9_999_999n, 7_777_777n, 3n].reduce((sum, tokens) => sum + tokens * 2n ** 50n * 1000n / 1_000_000_000n, 1000n);
    t.is(forward.milliPoints, exact.toString());
    t.is(backward.milliPoints, forward.milliPoints);
    t.true(BigInt(forward.milliPoints) > BigInt(Number.MAX_SAFE_INTEGER));
});

test('a receipt signed for another network or chain, or a record dated in the future, never reaches the log', async (t) => {
    const {log} = await openLog(t);
    t.teardown(() => log.close());
    const rejected: string[] = [];
    log.on('rejected', (reason) => rejected.push(reason));
    t.false(log.append(servedRecord(countersignedReceipt(owner, peer, {network: 'testnet'}))));
    t.false(log.append(servedRecord(countersignedReceipt(owner, peer, {chainId: 31337}))));
    t.false(log.append({...servedRecord(countersignedReceipt(owner, peer)), at: '2099-01-01T00:00:00.000Z'}));
    t.true(log.append(servedRecord(countersignedReceipt(owner, peer))));
    t.is(rejected.length, 3);
    t.regex(rejected[0]!, /another domain.*network 'testnet'/);
    t.regex(rejected[1]!, /another domain.*chain 31337/);
    t.regex(rejected[2]!, /in the future/);
});

test('forged, altered and self-issued receipts never reach the log; good ones do, once', async (t) => {
    const {log} = await openLog(t);
    t.teardown(() => log.close());
    const rejected: string[] = [];
    log.on('rejected', (reason) => rejected.push(reason));
    const good = countersignedReceipt(owner, peer);
    const altered = {...good, body: {...good.body, completionTokens: good.body.completionTokens * 10}};
    const strangersSignature = {...countersignedReceipt(owner, peer), providerSignature: countersignedReceipt(stranger, peer).providerSignature};
    const notCountersigned = {...countersignedReceipt(owner, peer), providerSignature: null};
    const selfIssued = countersignedReceipt(owner, owner);
    const someoneElses = countersignedReceipt(stranger, peer);
    t.true(log.append(servedRecord(good)));
    for (const receipt of [altered, strangersSignature, notCountersigned, selfIssued, someoneElses, good])
        t.false(log.append(servedRecord(receipt)));
    t.false(log.append(consumedRecord(countersignedReceipt(peer, stranger))), 'consumed by someone else');
    t.true(log.append(consumedRecord(countersignedReceipt(peer, owner))));
    await log.flush();
    t.is(log.length, 3, 'the header, the served and the consumed record');
    t.is(rejected.length, 7);
    t.regex(rejected.join('\n'), /signature does not match[\s\S]*not countersigned[\s\S]*cannot serve itself[\s\S]*provider is not this log's owner[\s\S]*in the log already/);
    t.is(log.tally.points, 40 * 2);
});

test('a burst of 10,000 records is written in batches, and a reopened log replays to the same points', async (t) => {
    const {log, directory} = await openLog(t);
    let batches = 0;
    log.on('appended', () => batches++);
    for (let index = 0; index < 10_000; index++)
        t.true(log.append(servedRecord(countersignedReceipt(owner, peer, {completionTokens: index % 7}))) || t.fail());
    await log.flush();
    t.is(log.length, 10_001);
    t.true(batches <= 20, `${batches} batches`);
    const {points} = log.tally;
    const key = log.key;
    await log.close();
    const reopened = await ContributionLog.open({directory, identity: owner});
    t.teardown(() => reopened.close());
    t.is(reopened.key, key);
    t.is(reopened.length, 10_001);
    t.is(reopened.tally.points, points);
});

test('SIGKILL during a burst: the reopened log has a consistent length, every record reads back, points equal a replay', async (t) => {
    const directory = await temporaryDir(t);
    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'harness', 'ledger-burst.ts'), directory,
        owner.secretKey.toString('hex'), '10000'], {stdio: ['ignore', 'pipe', 'inherit']});
    // Killed once a few thousand records are on disk and more are being written.
    await new Promise<void>((resolve, reject) => {
        createInterface({input: child.stdout}).on('line', (line) => {
            if (Number(line) >= 3000) {
                child.kill('SIGKILL');
                resolve();
            }
        });
        child.once('exit', () => reject(new Error('the burst ended before it could be killed')));
    });
    await new Promise((resolve) => child.once('exit', resolve));
    const log = await ContributionLog.open({directory, identity: owner});
    t.teardown(() => log.close());
    t.true(log.length >= 3000 && log.length <= 10_001, `length ${log.length}`);
    const report = await verifyLog(log.hypercore, {anchors: [], authorizations: []});
    t.deepEqual(report.problems, []);
    t.is(report.length, log.length);
    t.is(report.tally!.servedJobs, log.length - 1, 'every record reads back and verifies');
    t.is(report.tally!.points, log.tally.points);
});

test('a log replicated over a stream verifies on the other side, read-only', async (t) => {
    const {log} = await openLog(t);
    t.teardown(() => log.close());
    for (let index = 0; index < 50; index++)
        log.append(servedRecord(countersignedReceipt(owner, peer)));
    await log.flush();
    const auditorStore = new Corestore(await temporaryDir(t));
    t.teardown(() => auditorStore.close());
    const ours = log.corestore.replicate(true) as NodeJS.ReadWriteStream;
    const theirs = auditorStore.replicate(false) as NodeJS.ReadWriteStream;
    ours.pipe(theirs).pipe(ours);
    const copy = auditorStore.get({key: Buffer.from(log.key, 'hex'), valueEncoding: 'json'});
    await copy.ready();
    await copy.update({wait: true});
    await copy.download({start: 0, end: copy.length}).done();
    t.false(copy.writable);
    const report = await verifyLog(copy, {anchors: [], authorizations: []});
    t.deepEqual(report.problems, []);
    t.is(report.owner, owner.id);
    t.is(report.length, 51);
    t.is(report.tally!.points, log.tally.points);
});

test('a data dir whose log is of record version 1 has it moved aside and a new log started, naming its signing domain', async (t) => {
    const parent = await temporaryDir(t);
    const directory = join(parent, 'corestore');
    const old = new Corestore(directory);
    const core = old.get<unknown>({name: 'contributions', valueEncoding: 'json'});
    await core.ready();
    const oldKey = core.key!.toString('hex');
    await core.append([{version: 1, type: 'header', at: new Date().toISOString(), owner: owner.id, core: oldKey, signature: 'ab'.repeat(64)},
        {version: 1, type: 'served', at: new Date().toISOString(), receipt: {}}]);
    await old.close();

    const log = await ContributionLog.open({directory, identity: owner, domain: {network: 'testnet', chainId: 568}});
    t.teardown(() => log.close());
    const movedTo = `${directory}-v1-${new Date().toISOString().slice(0, 10)}`;
    t.deepEqual(log.replacedLog, {version: 1, movedTo});
    t.deepEqual(await readdir(parent), ['corestore', `corestore-v1-${new Date().toISOString().slice(0, 10)}`]);
    t.not(log.key, oldKey);
    t.is(log.length, 1);
    t.like(await log.hypercore.get(0), {version: LEDGER_RECORD_VERSION, type: 'header', owner: owner.id, network: 'testnet', chainId: 568});
    t.deepEqual(log.domain, {network: 'testnet', chainId: 568});
    const report = await verifyLog(log.hypercore, {anchors: [], authorizations: []}, {domain: {network: 'testnet', chainId: 568}});
    t.deepEqual(report.problems, []);
    t.regex((await verifyLog(log.hypercore, {anchors: [], authorizations: []}, {domain: {network: 'public', chainId: 2000}})).problems[0]!,
        /the log was started for network 'testnet' on chain 568, not 'public' on chain 2000/);

    // The old log is kept as it was; verifying it says what it is.
    const kept = new Corestore(movedTo);
    t.teardown(() => kept.close());
    const oldCore = kept.get<unknown>({name: 'contributions', valueEncoding: 'json'});
    await oldCore.ready();
    t.is(oldCore.length, 2);
    t.regex((await verifyLog(oldCore, {anchors: [], authorizations: []})).problems[0]!, /record 0 is a version 1 log header/);

    // Reopened: the same new log, nothing moved again, its domain read back from the header.
    await log.close();
    const reopened = await ContributionLog.open({directory, identity: owner});
    t.teardown(() => reopened.close());
    t.is(reopened.replacedLog, null);
    t.is(reopened.key, log.key);
    t.deepEqual(reopened.domain, {network: 'testnet', chainId: 568});
});

test('a header whose domain was altered no longer verifies: the owner signed the network and chain', async (t) => {
    const {log} = await openLog(t);
    t.teardown(() => log.close());
    const header = await log.hypercore.get(0) as LedgerRecord;
    t.throws(() => checkRecord({...header, chainId: 568}, {owner: owner.id, coreKey: log.key, index: 0}), {message: /not signed by its owner/});
    t.throws(() => checkRecord({...header, network: 'elsewhere'}, {owner: owner.id, coreKey: log.key, index: 0}), {message: /not signed by its owner/});
    t.notThrows(() => checkRecord(header, {owner: owner.id, coreKey: log.key, index: 0}));
});
