import {once} from 'node:events';
import {mkdtemp, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import test, {type ExecutionContext} from 'ava';
import type {Testnet} from 'hyperdht/testnet.js';
import {type SessionRequestBody, sessionRequestProblem, signSessionRequest} from '../inference/sharded/tunnel/session-request.js';
import {type HostedSession, ShardProtocol, type ShardProtocolOptions, ShardSessionError} from '../inference/sharded/tunnel/shard-protocol.js';
import {ContributionLog} from '../ledger/contribution-log.js';
import {LEDGER_RECORD_VERSION, type LedgerRecord, type ShardReceipt, type ShardReceiptBody} from '../ledger/records.js';
import {countersignShardReceipt, type ExpectedShardReceipt, shardReceiptProblem, signShardReceipt, verifyShardReceipt} from '../ledger/shard-receipt.js';
import {verifyLog} from '../ledger/verify-log.js';
import type {SwarmNode} from '../swarm/swarm-node.js';
import {waitFor} from '../harness/cli-process.js';
import {keyPair, type KeyPair} from '../harness/ledger-fixture.js';
import {nodeIdentity, startTestnet, testSwarmNode} from '../harness/swarm-fixture.js';

/**
 * Shard receipts signed by both sides (docs/peer-protocol.md, "Shard channel"): the signed session request, the
 * host's checks before it countersigns, what a log takes, and the whole exchange between two real swarm nodes.
 */

const DOMAIN = {network: 'test', chainId: 31337};
const coordinator = keyPair();
const host = keyPair();
const stranger = keyPair();
const SESSION = 'a'.repeat(64);
const OPENED_AT = new Date(Date.now() - 60_000).toISOString();

function receiptBody(overrides: Partial<ShardReceiptBody> = {}): ShardReceiptBody {
    return {
        version: 2, ...DOMAIN, session: SESSION, sequence: 1, model: 'demo', modelBytes: 4e9, modelSha256: 'b'.repeat(64),
        layerCount: 32, firstLayer: 8, lastLayer: 15, tokens: 40, computeMs: 500, host: host.id, coordinator: coordinator.id,
        completedAt: new Date().toISOString(), ...overrides
    };
}

/** What the host expects of the session's next receipt, having measured `maxTokens`. */
function expected(overrides: Partial<ExpectedShardReceipt> = {}): ExpectedShardReceipt {
    return {
        domain: DOMAIN, session: SESSION, coordinator: coordinator.id, host: host.id, model: {id: 'demo', bytes: 4e9, sha256: 'b'.repeat(64)},
        layers: [8, 15], layerCount: 32, openedAt: OPENED_AT, sequence: 1, maxTokens: 40, ...overrides
    };
}

/** A receipt the coordinator signed and the host countersigned, as the shard channel leaves it. */
function countersigned(body = receiptBody(), signer: KeyPair = coordinator, counter: KeyPair = host): ShardReceipt {
    return countersignShardReceipt(verifyShardReceipt(signShardReceipt(body, signer.secretKey), {countersigned: false}), counter.secretKey);
}

function record(type: 'shard' | 'shard-consumed', receipt: ShardReceipt): LedgerRecord {
    return {version: LEDGER_RECORD_VERSION, type, at: new Date().toISOString(), receipt};
}

test('the host countersigns only the next receipt of its session, for no more tokens than it measured', (t) => {
    t.is(shardReceiptProblem(receiptBody(), expected()), undefined);
    const refusals: [Partial<ShardReceiptBody>, Partial<ExpectedShardReceipt>, RegExp][] = [
        // A sock-puppet coordinator claims more than the passes the host's server ran allow.
        [{tokens: 2 ** 40}, {}, /claims 1099511627776 tokens; this host measured at most 40/],
        [{tokens: 41}, {}, /claims 41 tokens/],
        [{sequence: 2}, {}, /receipt 2 of the session; the next is 1/],
        [{sequence: 1}, {sequence: 3}, /receipt 1 of the session; the next is 3/],
        [{firstLayer: 0}, {}, /other layers/],
        [{layerCount: 16}, {}, /other layers/],
        [{model: 'other'}, {}, /another model/],
        [{modelBytes: 4e12}, {}, /another model/],
        [{modelSha256: null}, {}, /another model/],
        [{network: 'dogecoin-main'}, {}, /signed for network 'dogecoin-main', not 'test'/],
        [{chainId: 2000}, {}, /signed for chain 2000, not 31337/],
        [{completedAt: '2099-01-01T00:00:00.000Z'}, {}, /in the future/],
        [{completedAt: new Date(Date.now() - 3_600_000).toISOString()}, {}, /before the session opened/],
        [{session: 'c'.repeat(64)}, {}, /another session/],
        [{coordinator: stranger.id}, {}, /another coordinator/],
        [{host: stranger.id}, {}, /another host/]
    ];
    for (const [body, context, problem] of refusals)
        t.regex(shardReceiptProblem(receiptBody(body), expected(context)) ?? '(accepted)', problem, JSON.stringify(body));
});

test('a receipt with a bad, missing or borrowed signature does not verify', (t) => {
    const good = countersigned();
    t.is(verifyShardReceipt(good).hostSignature, good.hostSignature);
    const inflated = {...good, body: {...good.body, tokens: good.body.tokens * 1000}};
    t.throws(() => verifyShardReceipt(inflated), {message: /coordinator's signature does not match/});
    t.throws(() => verifyShardReceipt({...good, hostSignature: null}), {message: /host has not countersigned/});
    t.is(verifyShardReceipt({...good, hostSignature: null}, {countersigned: false}).hostSignature, null);
    t.throws(() => verifyShardReceipt({...good, hostSignature: countersigned(receiptBody(), coordinator, stranger).hostSignature}),
        {message: /host's signature does not match/});
    t.throws(() => verifyShardReceipt(countersigned(receiptBody({completedAt: new Date(Date.now() + 3_600_000).toISOString()}))),
        {message: /in the future/});
    t.throws(() => verifyShardReceipt({...good, body: {...good.body, version: 1}}), {message: /malformed shard receipt at body.version/});
    t.throws(() => countersignShardReceipt(structuredClone(signShardReceipt(receiptBody(), coordinator.secretKey)), host.secretKey),
        {message: /only a verified shard receipt/});
});

test('a log takes a shard receipt only with both signatures, in its owner\'s role, once', async (t) => {
    const directory = await mkdtemp(join(tmpdir(), 'strongdoge-shard-log-'));
    t.teardown(() => rm(directory, {recursive: true, force: true}));
    const hostLog = await ContributionLog.open({directory: join(directory, 'host'), identity: host, domain: DOMAIN});
    const coordinatorLog = await ContributionLog.open({directory: join(directory, 'coordinator'), identity: coordinator, domain: DOMAIN});
    t.teardown(async () => {
        await hostLog.close();
        await coordinatorLog.close();
    });
    const rejected: string[] = [];
    hostLog.on('rejected', (reason) => rejected.push(reason));
    const receipt = countersigned();
    const second = countersigned(receiptBody({sequence: 2, tokens: 10}));
    await t.throwsAsync(hostLog.append(record('shard', {...receipt, hostSignature: null})), undefined, 'not countersigned');
    await t.throwsAsync(hostLog.append(record('shard', signShardReceipt(receiptBody(), coordinator.secretKey))), undefined, 'as the coordinator sends it');
    await t.notThrowsAsync(hostLog.append(record('shard', receipt)));
    await t.throwsAsync(hostLog.append(record('shard', structuredClone(receipt))), undefined, 'the same receipt twice');
    await t.notThrowsAsync(hostLog.append(record('shard', second)), 'the next receipt of the session');
    await t.throwsAsync(hostLog.append(record('shard-consumed', receipt)), undefined, 'the host did not consume it');
    await t.throwsAsync(hostLog.append(record('shard', countersigned(receiptBody({host: stranger.id}), coordinator, stranger))), undefined, 'another host\'s');
    await t.notThrowsAsync(coordinatorLog.append(record('shard-consumed', receipt)));
    await t.notThrowsAsync(coordinatorLog.append(record('shard-consumed', second)));
    await t.throwsAsync(coordinatorLog.append(record('shard', receipt)), undefined, 'the coordinator did not host it');
    await t.throwsAsync(coordinatorLog.append(record('shard-consumed', structuredClone(second))), undefined, 'consumed twice');
    await Promise.all([hostLog.flush(), coordinatorLog.flush()]);
    t.regex(rejected.join('\n'), /host has not countersigned[\s\S]*host has not countersigned[\s\S]*in the log already[\s\S]*coordinator is not this log's owner[\s\S]*host is not this log's owner/);
    t.is(hostLog.length, 3);
    t.is(coordinatorLog.length, 3);
    // Both logs verify, each with the same receipts: the host's claim is what the coordinator says it consumed.
    const [hostReport, coordinatorReport] = await Promise.all([hostLog, coordinatorLog].map((log) => verifyLog(log.hypercore, {anchors: [], authorizations: []})));
    t.deepEqual([hostReport!.problems, coordinatorReport!.problems], [[], []]);
    t.like(hostReport!.tally, {shardSessions: 2, shardTokens: 50, points: 50 * (8 / 32) * 4});
    t.like(coordinatorReport!.tally, {points: 0, shardConsumed: 2, shardConsumedTokens: 50});
});

test('a session request is hosted only when signed by the peer that sent it, for this host, in its domain, dated now', (t) => {
    const body: SessionRequestBody = {
        version: 1, ...DOMAIN, session: SESSION, coordinator: coordinator.id, host: host.id, model: {id: 'demo', bytes: 4e9, sha256: null},
        layers: [8, 15], layerCount: 32, sequences: 4, bytes: 2 ** 30, openedAt: new Date().toISOString()
    };
    const context = {peerId: coordinator.id, hostId: host.id, domain: DOMAIN};
    const signed = (changes: Partial<SessionRequestBody> = {}, signer: KeyPair = coordinator) => signSessionRequest({...body, ...changes}, signer.secretKey);
    t.is(sessionRequestProblem(signed(), context), undefined);
    t.regex(sessionRequestProblem(signed({}, stranger), context)!, /signature is not the coordinator's/);
    t.regex(sessionRequestProblem({...signed(), body: {...body, layers: [0, 31]}}, context)!, /signature is not the coordinator's/);
    t.regex(sessionRequestProblem(signed(), {...context, peerId: stranger.id})!, /another coordinator than the peer that sent it/);
    t.regex(sessionRequestProblem(signed(), {...context, hostId: stranger.id})!, /for another host/);
    t.regex(sessionRequestProblem(signed({network: 'other'}), context)!, /signed for network 'other'/);
    t.regex(sessionRequestProblem(signed({chainId: 2000}), context)!, /signed for chain 2000/);
    t.regex(sessionRequestProblem(signed({openedAt: '2099-01-01T00:00:00.000Z'}), context)!, /in the future/);
    t.regex(sessionRequestProblem(signed({openedAt: new Date(Date.now() - 3_600_000).toISOString()}), context)!, /stale/);
    t.regex(sessionRequestProblem(signed({layers: [8, 32]}), context)!, /not within the model's 32/);
});

// Between two real swarm nodes: the host's session is served by a stand-in whose pass count the test sets (the
// real rpc server's count is test/sharding.test.ts's).

/** Started by the first test that needs it. */
let testnet: Testnet | undefined;

test.after.always(() => testnet?.destroy());

interface Side {
    keys: KeyPair,
    protocol: ShardProtocol,
    node: SwarmNode,
    /** Receipts it logged as host, and as coordinator. */
    hosted: ShardReceipt[],
    consumed: ShardReceipt[],
    problems: string[]
}

/** A host and a coordinator on a network of their own, stopped when the test ends. */
async function pair(t: ExecutionContext, network: string, passes: {count: number}, coordinatorDomain = DOMAIN) {
    testnet ??= (await startTestnet()).testnet;
    const {bootstrap} = testnet;
    const side = (hosting: boolean, domain: typeof DOMAIN): Side => {
        const keys = keyPair();
        const logged: Side = {keys, protocol: undefined!, node: undefined!, hosted: [], consumed: [], problems: []};
        const options: ShardProtocolOptions = {
            identity: keys, domain,
            onShardReceipt: (_peer, receipt) => logged.hosted.push(receipt),
            onShardConsumed: (_peer, receipt) => logged.consumed.push(receipt),
            onReceiptProblem: (_peer, problem) => logged.problems.push(problem),
            ...(hosting && {host: {open: async (): Promise<HostedSession> => ({connect: (stream) => stream.close('nothing here'), end: () => undefined,
                graphComputes: () => passes.count, graphTokens: () => passes.count * REQUEST.sequences})}})
        };
        logged.protocol = new ShardProtocol(options);
        logged.node = testSwarmNode(bootstrap, network, {identity: nodeIdentity(keys)});
        logged.node.use(logged.protocol);
        t.teardown(() => logged.node.stop());
        return logged;
    };
    const hostSide = side(true, DOMAIN);
    const coordinatorSide = side(false, coordinatorDomain);
    const joined = once(coordinatorSide.node, 'peerJoined');
    await Promise.all([hostSide.node.start(), coordinatorSide.node.start()]);
    await joined;
    await waitFor(async () => hostSide.node.peers().length === 1, 10_000, 20);
    return {hostSide, coordinatorSide};
}

const REQUEST = {model: {id: 'demo', bytes: 4e9, sha256: null}, layers: [8, 15] as [number, number], layerCount: 32, sequences: 2, bytes: 1024};

test.serial('both sides log the countersigned receipts of a session; a sock-puppet\'s inflated one is refused and ends the session', async (t) => {
    const passes = {count: 0};
    const {hostSide, coordinatorSide} = await pair(t, 'shard-receipts', passes);
    const session = await coordinatorSide.protocol.openSession(hostSide.node.id, REQUEST);
    const ended = new Promise<string>((resolve) => session.once('ended', resolve));
    passes.count = 10; // 10 passes of 2 sequences: at most 20 tokens
    session.sendReceipt(12, 300);
    session.sendReceipt(8, 200);
    await waitFor(async () => coordinatorSide.consumed.length === 2, 10_000, 20);
    t.deepEqual(coordinatorSide.consumed, hostSide.hosted, 'the same receipts, both signatures, on both sides');
    t.deepEqual(coordinatorSide.consumed.map((receipt) => [receipt.body.sequence, receipt.body.tokens]), [[1, 12], [2, 8]]);
    for (const receipt of hostSide.hosted) {
        t.is(verifyShardReceipt(structuredClone(receipt)).body.session, session.request.session, 'the session id stays the same');
        t.like(receipt.body, {host: hostSide.keys.id, coordinator: coordinatorSide.keys.id, firstLayer: 8, lastLayer: 15, ...DOMAIN});
    }
    // No pass since: a coordinator (here a sock puppet of the host, for all the host's code knows) claims one more token.
    session.sendReceipt(1, 10);
    t.regex(await ended, /refused the coordinator's shard receipt: it claims 1 tokens; this host measured at most 0/);
    t.is(hostSide.hosted.length, 2, 'the refused receipt is not logged');
    t.regex(hostSide.problems.join('\n'), /it claims 1 tokens/);
    t.is(coordinatorSide.consumed.length, 2);
    t.is(hostSide.node.peers().length, 1, 'only the session ended');
});

test.serial('a session request signed for another chain is refused before anything is hosted', async (t) => {
    const {hostSide, coordinatorSide} = await pair(t, 'shard-receipts-domain', {count: 0}, {network: 'test', chainId: 2000});
    const error = await t.throwsAsync(coordinatorSide.protocol.openSession(hostSide.node.id, REQUEST), {instanceOf: ShardSessionError});
    t.regex(error.message, /the session request is refused: it was signed for chain 2000, not 31337/);
    t.is(hostSide.node.peers().length, 1, 'the peer stays connected');
});
