/**
 * The contribution log's costs: appends per second (checked and batched, as the node appends), the time to verify
 * a log of a million records, gas per anchor on a local EVM node, and whether a burst of ledger writes slows the
 * tokens a node streams. Writes bench/results/ledger.json. `LEDGER_BENCH_RECORDS` sets the verified log's size.
 */
import {mkdtemp, rm} from 'node:fs/promises';
import {loadavg, tmpdir} from 'node:os';
import {join} from 'node:path';
import {Wallet} from 'ethers';
import {EngineSupervisor} from '../engine/engine-supervisor.js';
import {writeDemoModel} from '../engine/demo/demo-model.js';
import {chainProvider, deployAnchorContract} from '../ledger/anchor/chain.js';
import {Anchorer} from '../ledger/anchorer.js';
import {ContributionLog} from '../ledger/contribution-log.js';
import {verifyReceipt} from '../ledger/receipt.js';
import type {LedgerRecord} from '../ledger/records.js';
import {verifyLog} from '../ledger/verify-log.js';
import {startEvmNode} from '../harness/evm-node.js';
import {countersignedReceipt, keyPair, servedRecord} from '../harness/ledger-fixture.js';
import {machine, writeReport} from './lib/report.js';
import {median, round} from './lib/statistics.js';

const APPEND_RECORDS = 50_000;
const VERIFY_RECORDS = Number(process.env.LEDGER_BENCH_RECORDS ?? 1_000_000);
const STREAM_TOKENS = 400;
const STREAM_REPEATS = 7;
/**
 * Ledger writes during a stream: 100 receipts a second (more than a busy node gets: each is a whole job), 1,000 a
 * second, and as fast as the main thread can check and queue them.
 */
const WRITE_LOADS = {
    perSecond100: {everyMs: 10, records: 1},
    perSecond1000: {everyMs: 5, records: 5},
    saturating: {everyMs: 5, records: 500}
};
const MAX_RECORDS_PER_STREAM = 20_000;

const owner = keyPair();
const peer = keyPair();
const dir = await mkdtemp(join(tmpdir(), 'strongdoge-ledger-bench-'));
const log = (message: string) => process.stderr.write(`${message}\n`);

/** Served records whose receipts were verified once, as the jobs protocol verifies them before the node appends them. */
function verifiedRecords(count: number) {
    return Array.from({length: count}, () => servedRecord(verifyReceipt(countersignedReceipt(owner, peer))));
}

async function appendRate(name: string, records: LedgerRecord[]) {
    const ledger = await ContributionLog.open({directory: join(dir, name), identity: owner});
    const started = performance.now();
    // Counted once every append's promise resolved: the records are on disk, as a node waits before acknowledging.
    await Promise.all(records.map((record) => ledger.append(record)));
    const seconds = (performance.now() - started) / 1000;
    await ledger.close();
    return {records: records.length, seconds: round(seconds), recordsPerSecond: round(records.length / seconds, 0)};
}

async function verifyTime() {
    const ledger = await ContributionLog.open({directory: join(dir, 'verify'), identity: owner});
    const batch = 10_000;
    for (let written = 0; written < VERIFY_RECORDS; written += batch) {
        for (let index = 0; index < Math.min(batch, VERIFY_RECORDS - written); index++)
            ledger.append(servedRecord(countersignedReceipt(owner, peer, {completionTokens: 1 + (index % 90)})));
        await ledger.flush();
        log(`verify: ${ledger.length - 1} of ${VERIFY_RECORDS} records written`);
    }
    // The anchor, in the same run: every signature checked, the owner's own too.
    const time = async (ownerSignatures: boolean) => {
        const started = performance.now();
        const report = await verifyLog(ledger.hypercore, {anchors: [], authorizations: []}, {ownerSignatures});
        const seconds = (performance.now() - started) / 1000;
        if (report.problems.length > 0)
            throw new Error(`the benchmark log does not verify: ${report.problems[0]}`);
        return {records: report.length, seconds: round(seconds), recordsPerSecond: round(report.length / seconds, 0)};
    };
    const loadBefore = loadavg()[0]!;
    const verified = await time(false);
    const everySignature = await time(true);
    await ledger.close();
    return {...verified, target: 'at most 60 s', everySignature, loadAverage: [round(loadBefore), round(loadavg()[0]!)]};
}

async function gasPerAnchor() {
    const evm = await startEvmNode();
    try {
        const wallet = new Wallet(evm.accounts[0]!);
        const {address: contract} = await deployAnchorContract({rpcUrl: evm.url, chainId: evm.chainId}, wallet);
        const ledger = await ContributionLog.open({directory: join(dir, 'anchor'), identity: owner});
        const anchorer = new Anchorer({log: ledger, wallet, contract, rpcUrl: evm.url, chainId: evm.chainId,
            statePath: join(dir, 'anchor', 'state.json'), maxFeeGwei: 1000});
        const provider = chainProvider({rpcUrl: evm.url, chainId: evm.chainId});
        const gas: number[] = [];
        const seconds: number[] = [];
        for (let round = 0; round < 5; round++) {
            for (let index = 0; index < 100; index++)
                ledger.append(servedRecord(countersignedReceipt(owner, peer)));
            const started = performance.now();
            const outcome = await anchorer.anchorNow();
            seconds.push((performance.now() - started) / 1000);
            if (outcome.status === 'anchored')
                gas.push(Number((await provider.getTransactionReceipt(outcome.record.txHash))!.gasUsed));
        }
        provider.destroy();
        await ledger.close();
        return {chain: 'hardhat 2 node, chain id 2000, automining', gasPerAnchor: median(gas), secondsPerAnchor: round(median(seconds), 3)};
    } finally {
        await evm.stop();
    }
}

/** Tokens/s the node relays from its engine, alone and while its ledger takes bursts of receipts (the anchor). */
async function streamingUnderLedgerWrites() {
    // Made before the engine starts: signing and checking 100,000 receipts keeps this thread busy for seconds.
    // Enough distinct receipts for every stream of every load (the saturating load takes up to 20,000 a stream).
    const receipts = verifiedRecords(MAX_RECORDS_PER_STREAM * (STREAM_REPEATS + 1));
    const modelPath = join(dir, 'model.gguf');
    await writeDemoModel(modelPath, {endsText: false});
    const engine = new EngineSupervisor({models: [{id: 'demo', path: modelPath}], threads: 1, parallelSequences: 1, contextSize: 2048, gpu: false});
    engine.on('workerLog', (line) => log(`engine: ${line}`));
    await engine.start();
    const ledger = await ContributionLog.open({directory: join(dir, 'stream'), identity: owner});
    let next = 0;
    const stream = async (load?: {everyMs: number, records: number}) => {
        let first: number | undefined;
        let tokens = 0;
        let appended = 0;
        const writer = load && setInterval(() => {
            for (let index = 0; index < load.records && appended < MAX_RECORDS_PER_STREAM && next < receipts.length; index++, appended++)
                ledger.append(receipts[next++]!);
        }, load.everyMs);
        const result = await engine.generate({kind: 'completion', model: 'demo', prompt: 'measure me', sampling: {temperature: 0, stop: [], maxTokens: STREAM_TOKENS, responseFormat: {type: 'text'}}}, {
            onText: (_text, chunk) => {
                first ??= performance.now();
                tokens += chunk.length;
            }
        });
        clearInterval(writer);
        const seconds = (performance.now() - first!) / 1000;
        return {tokensPerSecond: (tokens - 1) / seconds || result.timings.generationTokensPerSecond, recordsPerSecond: appended / seconds};
    };
    await stream();
    const runs: Record<string, {tokensPerSecond: number, recordsPerSecond: number}[]> =
        Object.fromEntries(['alone', ...Object.keys(WRITE_LOADS)].map((name) => [name, []]));
    for (let run = 0; run < STREAM_REPEATS; run++) {
        runs.alone!.push(await stream());
        for (const [name, load] of Object.entries(WRITE_LOADS))
            runs[name]!.push(await stream(load));
    }
    await ledger.close();
    await engine.dispose();
    const anchor = median(runs.alone!.map((run) => run.tokensPerSecond));
    const summary = (name: string) => {
        const tokensPerSecond = median(runs[name]!.map((run) => run.tokensPerSecond));
        return {tokensPerSecond: round(tokensPerSecond), ratio: round(tokensPerSecond / anchor, 3),
            ledgerRecordsPerSecond: round(median(runs[name]!.map((run) => run.recordsPerSecond)), 0)};
    };
    return {tokensPerRequest: STREAM_TOKENS, repeats: STREAM_REPEATS, aloneTokensPerSecond: round(anchor),
        ...Object.fromEntries(Object.keys(WRITE_LOADS).map((name) => [name, summary(name)]))};
}

try {
    log('appends…');
    const appends = {
        // What the node appends: receipts it verified when they arrived, so the log checks their shape and roles only.
        receivedReceipts: await appendRate('received', verifiedRecords(APPEND_RECORDS)),
        // Receipts from anywhere else: both signatures are checked at append.
        unverifiedReceipts: await appendRate('unverified', Array.from({length: APPEND_RECORDS / 5}, () => servedRecord(countersignedReceipt(owner, peer)))),
        target: 20_000
    };
    log(JSON.stringify(appends));
    log('gas…');
    const anchoring = await gasPerAnchor();
    log(JSON.stringify(anchoring));
    log('streaming with ledger writes…');
    const streaming = await streamingUnderLedgerWrites();
    log(JSON.stringify(streaming));
    log(`verify ${VERIFY_RECORDS} records…`);
    const verify = await verifyTime();
    log(JSON.stringify(verify));
    const results = {
        machine: machine(),
        measuredAt: new Date().toISOString(),
        appends,
        verify,
        anchoring,
        streaming
    };
    await writeReport('ledger', results);
} finally {
    await rm(dir, {recursive: true, force: true});
}
