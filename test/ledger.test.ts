import {spawn} from 'node:child_process';
import {EventEmitter} from 'node:events';
import {createRequire} from 'node:module';
import type {Duplex} from 'node:stream';
import {mkdtemp, readdir, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {createInterface} from 'node:readline';
import test from 'ava';
import Corestore from 'corestore';
import type {NoiseSecretStream} from 'hyperswarm';
import Protomux from 'protomux';
import {ContributionLog} from '../ledger/contribution-log.js';
import {modelFactor, PointsCounter, tallyPoints} from '../ledger/points.js';
import {checkRecord, signLogHeader} from '../ledger/record-check.js';
import {LEDGER_RECORD_VERSION, type LedgerRecord} from '../ledger/records.js';
import {countersignShardReceipt, signShardReceipt, verifyShardReceipt} from '../ledger/shard-receipt.js';
import {verifyLog} from '../ledger/verify-log.js';
import {checkLogRecords} from '../ledger/verify-workers.js';
import {LedgerReplication, type ReplicationLimits} from '../node/ledger-replication.js';
import {consumedRecord, countersignedReceipt, DEFAULT_DOMAIN, keyPair, servedRecord} from '../harness/ledger-fixture.js';

/** Hyperswarm's encrypted stream, ships no types. */
const SecretStream = createRequire(import.meta.url)('@hyperswarm/secret-stream') as new (initiator: boolean) => NoiseSecretStream & {rawStream: Duplex};

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

/** Runs a harness script and SIGKILLs it at the first line of its output that `kill` says yes to; resolves once it exited. */
async function killWhen(script: string, args: string[], kill: (line: string) => boolean) {
    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'harness', script), ...args],
        {stdio: ['ignore', 'pipe', 'inherit']});
    const exited = new Promise((resolve) => child.once('exit', resolve));
    await new Promise<void>((resolve, reject) => {
        createInterface({input: child.stdout}).on('line', (line) => {
            if (kill(line)) {
                child.kill('SIGKILL');
                resolve();
            }
        });
        child.once('exit', () => reject(new Error(`${script} ended before it could be killed`)));
    });
    await exited;
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
    await t.throwsAsync(log.append(servedRecord(countersignedReceipt(owner, peer, {network: 'testnet'}))));
    await t.throwsAsync(log.append(servedRecord(countersignedReceipt(owner, peer, {chainId: 31337}))));
    await t.throwsAsync(log.append({...servedRecord(countersignedReceipt(owner, peer)), at: '2099-01-01T00:00:00.000Z'}));
    await t.notThrowsAsync(log.append(servedRecord(countersignedReceipt(owner, peer))));
    t.is(rejected.length, 3);
    t.regex(rejected[0]!, /another domain.*network 'testnet'/);
    t.regex(rejected[1]!, /another domain.*chain 31337/);
    t.regex(rejected[2]!, /in the future/);
});

test('read from the owner\'s own log, a receipt\'s owner signature is the log\'s: only the other party\'s is checked, and only for the owner\'s own role', (t) => {
    const context = {owner: owner.id, coreKey: 'c'.repeat(64), index: 1, domain: DEFAULT_DOMAIN, attestedByLog: true};
    const good = countersignedReceipt(owner, peer);
    const flipped = (signature: string) => (signature[0] === 'a' ? 'b' : 'a') + signature.slice(1);
    // The provider (the owner) signed it in its log; the requester's signature is the claim that needs checking.
    t.notThrows(() => checkRecord(servedRecord({...good, providerSignature: flipped(good.providerSignature!)}), context));
    t.throws(() => checkRecord(servedRecord({...good, providerSignature: flipped(good.providerSignature!)}), {...context, attestedByLog: false}), {message: /provider's signature/});
    t.throws(() => checkRecord(servedRecord({...good, requesterSignature: flipped(good.requesterSignature)}), context), {message: /requester's signature/});
    t.throws(() => checkRecord(servedRecord({...good, providerSignature: null}), context), {message: /not countersigned/});
    // Another provider's receipt is refused before any signature is waived.
    const others = countersignedReceipt(stranger, peer);
    t.throws(() => checkRecord(servedRecord({...others, providerSignature: flipped(others.providerSignature!)}), context), {message: /provider is not this log's owner/});
    const consumed = countersignedReceipt(peer, owner);
    t.throws(() => checkRecord(consumedRecord({...consumed, providerSignature: flipped(consumed.providerSignature!)}), context), {message: /provider's signature/});
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
    const accepted = log.append(servedRecord(good));
    for (const receipt of [altered, strangersSignature, notCountersigned, selfIssued, someoneElses, good])
        await t.throwsAsync(log.append(servedRecord(receipt)), {code: 'INVALID_RECORD'});
    await t.throwsAsync(log.append(consumedRecord(countersignedReceipt(peer, stranger))), {code: 'INVALID_RECORD'}, 'consumed by someone else');
    await Promise.all([accepted, log.append(consumedRecord(countersignedReceipt(peer, owner)))]);
    t.is(log.length, 3, 'the header, the served and the consumed record');
    t.is(rejected.length, 7);
    t.regex(rejected.join('\n'), /signature does not match[\s\S]*not countersigned[\s\S]*cannot serve itself[\s\S]*provider is not this log's owner[\s\S]*in the log already/);
    t.is(log.tally.points, 40 * 2);
});

test('a burst of 10,000 records is written in batches, and a reopened log replays to the same points', async (t) => {
    const {log, directory} = await openLog(t);
    let batches = 0;
    log.on('appended', () => batches++);
    const written = Array.from({length: 10_000}, (_, index) => log.append(servedRecord(countersignedReceipt(owner, peer, {completionTokens: index % 7}))));
    await Promise.all(written);
    t.is(log.length, 10_001, 'on disk once every append resolved');
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
    // Killed once a few thousand records are on disk and more are being written.
    await killWhen('ledger-burst.ts', [directory, owner.secretKey.toString('hex'), '10000'], (line) => Number(line) >= 3000);
    const log = await ContributionLog.open({directory, identity: owner});
    t.teardown(() => log.close());
    t.true(log.length >= 3000 && log.length <= 10_001, `length ${log.length}`);
    const report = await verifyLog(log.hypercore, {anchors: [], authorizations: []});
    t.deepEqual(report.problems, []);
    t.is(report.length, log.length);
    t.is(report.tally!.servedJobs, log.length - 1, 'every record reads back and verifies');
    t.is(report.tally!.points, log.tally.points);
});

test('SIGKILL right after an append resolved: the reopened log has the record (nothing lost in the batching window)', async (t) => {
    const directory = await temporaryDir(t);
    const acknowledged: string[] = [];
    // Killed while the next record waits in the 2 s batching window.
    await killWhen('ledger-acknowledged.ts', [directory, owner.secretKey.toString('hex'), '1000', '2000'],
        (jobId) => acknowledged.push(jobId) === 2);
    const log = await ContributionLog.open({directory, identity: owner});
    t.teardown(() => log.close());
    const logged = new Set(log.recent().flatMap((record) => record.type === 'served' ? [record.receipt.body.jobId] : []));
    for (const jobId of acknowledged)
        t.true(logged.has(jobId), `acknowledged ${jobId} is in the log`);
    t.true(log.length >= 3, `length ${log.length}`);
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

/** A log of `length` records written straight to Hypercore, good ones but for `bad` (index → block), and its core. */
async function rawLog(t: Parameters<typeof temporaryDir>[0], length: number, bad: Map<number, unknown>) {
    const store = new Corestore(await temporaryDir(t));
    t.teardown(() => store.close());
    const core = store.get<Buffer>({name: 'contributions', valueEncoding: 'binary'});
    await core.ready();
    const coreKey = core.key!.toString('hex');
    // A few hundred distinct jobs, repeated: every record checks out, the repeats earn nothing (duplicates).
    const receipts = Array.from({length: 300}, (_, index) => countersignedReceipt(owner, peer, {completionTokens: 1 + index}));
    const blocks: Buffer[] = [];
    for (let index = 0; index < length; index++) {
        const record = index === 0
            ? {version: LEDGER_RECORD_VERSION, type: 'header', at: new Date().toISOString(), owner: owner.id, core: coreKey, ...DEFAULT_DOMAIN,
                signature: signLogHeader({core: coreKey, ...DEFAULT_DOMAIN}, owner.secretKey)}
            : bad.get(index) ?? servedRecord(receipts[index % receipts.length]!);
        blocks.push(Buffer.isBuffer(record) ? record : Buffer.from(JSON.stringify(record)));
    }
    for (let start = 0; start < length; start += 5_000)
        await core.append(blocks.slice(start, start + 5_000));
    // As a node opens a log: its blocks decoded as JSON.
    const log = store.get({key: core.key!, valueEncoding: 'json'});
    await log.ready();
    return {core: log, coreKey, blocks};
}

/** What one thread finds, record by record, as `verify` did before it had workers. */
function checkedOnOneThread(blocks: Buffer[], owner: string, coreKey: string) {
    const counter = new PointsCounter(owner);
    const problems: string[] = [];
    blocks.forEach((block, index) => {
        try {
            counter.add(checkRecord(JSON.parse(block.toString()), {owner, coreKey, index, domain: DEFAULT_DOMAIN}));
        } catch (error) {
            problems.push(`record ${index}: ${error instanceof SyntaxError ? 'the record is not JSON' : (error as Error).message}`);
        }
    });
    return {problems, tally: counter.tally};
}

test('verify checks a 50,000-record log on worker threads: the problems in record order and the tally of one thread, while timers keep firing', async (t) => {
    const good = countersignedReceipt(owner, peer);
    const bad = new Map<number, unknown>([
        [7, servedRecord({...good, body: {...good.body, completionTokens: 1_000}})],
        [1_500, servedRecord(countersignedReceipt(stranger, peer))],
        [20_000, Buffer.from('not json')],
        [33_333, {version: LEDGER_RECORD_VERSION, type: 'header', at: new Date().toISOString(), owner: owner.id, core: 'a'.repeat(64), ...DEFAULT_DOMAIN, signature: 'b'.repeat(128)}],
        [49_999, consumedRecord(countersignedReceipt(peer, stranger))]
    ]);
    const {core, coreKey, blocks} = await rawLog(t, 50_000, bad);
    const expected = checkedOnOneThread(blocks, owner.id, coreKey);
    t.is(expected.problems.length, bad.size);

    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const report = await verifyLog(core, {anchors: [], authorizations: []});
    clearInterval(timer);
    t.deepEqual(report.problems, expected.problems);
    t.deepEqual(report.tally, expected.tally);
    t.is(report.length, 50_000);
    t.true(ticks >= 20, `the event loop ran its timers ${ticks} times during the verify`);
});

test('records checked inline (a short log) and on threads give the same verdicts, chunk by chunk in order', async (t) => {
    const good = countersignedReceipt(owner, peer);
    const {core, coreKey} = await rawLog(t, 3_000, new Map([[2_999, servedRecord({...good, providerSignature: null})]]));
    const collect = async (options: Parameters<typeof checkLogRecords>[2]) => {
        const verdicts = [];
        for await (const chunk of checkLogRecords(core, {owner: owner.id, coreKey, domain: DEFAULT_DOMAIN, attestedByLog: true, length: core.length}, options))
            verdicts.push(...chunk);
        return verdicts;
    };
    const inline = await collect({inlineRecords: 10_000});
    const threaded = await collect({inlineRecords: 0, threads: 3, chunkRecords: 100});
    t.is(inline.length, 3_000);
    t.deepEqual(threaded, inline);
    t.regex(String(inline[2_999]), /not countersigned/);
});

/** Two nodes' logs over a real encrypted stream, each side replicating through its own `LedgerReplication`. */
async function connectedLogs(t: Parameters<typeof temporaryDir>[0], limits: {a: Partial<ReplicationLimits>, b: Partial<ReplicationLimits>}) {
    const unlimited = {maxRecords: 1e9, maxBytes: 2 ** 40, maxTotalBytes: 2 ** 40, bytesPerSecond: 2 ** 40};
    const {log: logA} = await openLog(t);
    const logB = await ContributionLog.open({directory: await temporaryDir(t), identity: peer});
    t.teardown(() => logB.close());
    t.teardown(() => logA.close());
    await Promise.all(Array.from({length: 50}, () => logA.append(servedRecord(countersignedReceipt(owner, peer)))));
    const streamA = new SecretStream(true);
    const streamB = new SecretStream(false);
    streamA.rawStream.pipe(streamB.rawStream).pipe(streamA.rawStream);
    t.teardown(async () => {
        streamA.destroy();
        streamB.destroy();
    });
    const notices: string[] = [];
    const side = (log: ContributionLog, stream: NoiseSecretStream, sideLimits: Partial<ReplicationLimits>) => {
        // Room for a busy machine: the peer's length must arrive before the limits can be judged.
        const replication = new LedgerReplication({log, limits: {...unlimited, ...sideLimits}, timeoutMs: 15_000,
            onNotice: (_level, message) => notices.push(message)});
        replication.attach(Object.assign(new EventEmitter(), {peerId: 'peer', mux: Protomux.from(stream)}));
        return replication;
    };
    side(logA, streamA, limits.a);
    const replicationB = side(logB, streamB, limits.b);
    return {logA, replicationB, streamA, notices};
}

test('a peer\'s log longer or larger than the limits is not downloaded; within them it is, over the same connection', async (t) => {
    for (const [limits, refusal] of [[{maxRecords: 50}, /51 records, more than --peer-log-max-records \(50\): not downloaded/],
        [{maxBytes: 10_000}, /takes \d+ bytes, more than --peer-log-max-bytes \(10000\): not downloaded/],
        [{maxTotalBytes: 10_000}, /more than --peer-logs-max-bytes/]] as const) {
        const {logA, replicationB, streamA} = await connectedLogs(t, {a: {}, b: limits});
        const error = await t.throwsAsync(replicationB.open(logA.key, {online: true}), {code: 'NOT_CONFIGURED'});
        t.regex(error.message, refusal);
        const offline = await replicationB.open(logA.key, {online: false});
        t.is(offline.contiguousLength, 0, 'nothing of it was downloaded');
        await offline.close();
        t.false(streamA.destroyed, 'the connection stays up');
    }
    const {logA, replicationB} = await connectedLogs(t, {a: {}, b: {maxRecords: 51}});
    const copy = await replicationB.open(logA.key, {online: true});
    t.teardown(() => copy.close());
    t.is(copy.contiguousLength, 51);
    const report = await verifyLog(copy, {anchors: [], authorizations: []});
    t.deepEqual(report.problems, []);
});

test('a peer that asks for a log faster than the rate is cut off from that log, not from the node', async (t) => {
    const {logA, replicationB, streamA, notices} = await connectedLogs(t, {a: {bytesPerSecond: 1_000}, b: {}});
    const copy = await replicationB.open(logA.key, {online: true});
    t.teardown(() => copy.close());
    t.true(copy.contiguousLength < copy.length, `${copy.contiguousLength} of ${copy.length} records arrived`);
    t.true(notices.some((notice) => /ended the replication of a log with a peer: it asked for more than --peer-log-rate/.test(notice)), notices.join('\n'));
    t.false(streamA.destroyed, 'the connection stays up');
});
