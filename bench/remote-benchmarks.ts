/**
 * Remote inference on loopback: a client streaming through node A, which has no model, served by peer B,
 * against the same client streaming from B directly; and the gap a client sees when the serving peer is killed
 * mid-answer (the token deadline follows the pace, docs/architecture.md "Swarm"). Writes bench/results/remote.json.
 */
import {mkdir, mkdtemp, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import OpenAI from 'openai';
import {writeDemoModel} from '../engine/demo/demo-model.js';
import type {DaemonHandle} from '../harness/cli-process.js';
import {fetchStatus} from '../harness/node-status.js';
import {nodeIdOf, startSwarmDaemon, startTestnet, waitForPeers} from '../harness/swarm-fixture.js';
import {machine, writeReport} from './lib/report.js';
import {median, round} from './lib/statistics.js';
import {measureStreamedCompletion, type CompletionLoad, type StreamMeasurement} from './lib/stream-measurement.js';

const REPEATS = 7;
const FAILOVER_TRIALS = 3;
/** Streamed chunks before the serving peer is killed. */
const KILL_AFTER_CHUNKS = 100;
const MODELS = [
    {name: 'tiny (8 layers, width 256)', options: {endsText: false}},
    {name: 'medium (12 layers, width 768)', options: {layers: 12, width: 768, headCount: 12, feedForwardLength: 2048, endsText: false}}
];

const {testnet, bootstrap} = await startTestnet();
const dir = await mkdtemp(join(tmpdir(), 'strongdoge-remote-bench-'));

async function measure(client: OpenAI, load: CompletionLoad) {
    await measureStreamedCompletion(client, load); // warm-up
    const runs: StreamMeasurement[] = [];
    for (let i = 0; i < REPEATS; i++)
        runs.push(await measureStreamedCompletion(client, load));
    return {
        generationTokensPerSecond: round(median(runs.map((run) => run.generationTokensPerSecond))),
        ttftMs: round(median(runs.map((run) => run.ttftMs)))
    };
}

async function startProvider(network: string, index: number) {
    const providerDir = join(dir, `${network}-provider-${index}`);
    await mkdir(join(providerDir, 'models'), {recursive: true});
    await writeDemoModel(join(providerDir, 'models', 'bench.gguf'), MODELS[0]!.options);
    return startSwarmDaemon(bootstrap, providerDir, ['--model', 'bench', '--network', network]);
}

/**
 * A client streams 400 tokens through a requester; after 100 chunks the peer serving it gets SIGKILL, and a spare
 * provider takes over. Reported: the longest silence the client saw, against the longest in an uninterrupted run.
 */
async function failoverGaps() {
    const network = 'bench-failover';
    const requesterDir = join(dir, `${network}-requester`);
    await mkdir(requesterDir, {recursive: true});
    const requester = await startSwarmDaemon(bootstrap, requesterDir, ['--network', network]);
    const client = new OpenAI({baseURL: requester.baseUrl, apiKey: 'x', maxRetries: 0});
    const providers: DaemonHandle[] = [];
    const trials = [];
    try {
        for (let trial = 0; trial <= FAILOVER_TRIALS; trial++) {
            while (providers.length < 2)
                providers.push(await startProvider(network, trial * 2 + providers.length));
            await waitForPeers(requester, await Promise.all(providers.map((provider) => nodeIdOf(provider))), 30_000,
                (peers) => peers.every((peer) => peer.capabilities.models.some((model) => model.loaded)));
            const stream = await client.completions.create({model: 'bench', prompt: 'The swarm of doges', max_tokens: 400, temperature: 0, stream: true});
            let last = performance.now();
            let longestGapMs = 0;
            let chunks = 0;
            let killedAt: number | undefined;
            for await (const _chunk of stream) {
                const now = performance.now();
                longestGapMs = Math.max(longestGapMs, now - last);
                last = now;
                // Trial 0 runs uninterrupted: the anchor.
                if (++chunks === KILL_AFTER_CHUNKS && trial > 0) {
                    const serving = (await Promise.all(providers.map(async (provider) =>
                        (await fetchStatus(provider, '/api/node')).peerJobs.active > 0 ? provider : undefined))).find(Boolean)!;
                    killedAt = performance.now();
                    serving.process.kill('SIGKILL');
                    providers.splice(providers.indexOf(serving), 1);
                }
            }
            trials.push({killed: killedAt !== undefined, chunks, longestGapMs: round(longestGapMs)});
        }
    } finally {
        await Promise.all([requester, ...providers].map((daemon) => daemon.stop('SIGKILL')));
    }
    const killed = trials.filter((trial) => trial.killed);
    return {
        how: `400 tokens streamed through a requester; after ${KILL_AFTER_CHUNKS} chunks the serving peer gets SIGKILL and a spare takes over; the longest silence the client saw`,
        uninterruptedLongestGapMs: trials[0]!.longestGapMs,
        killedLongestGapMs: killed.map((trial) => trial.longestGapMs),
        medianKilledLongestGapMs: round(median(killed.map((trial) => trial.longestGapMs))),
        target: 'next token within 2 s of the peer\'s death'
    };
}

try {
    const results = [];
    for (const [index, {name, options}] of MODELS.entries()) {
        const providerDir = join(dir, `provider-${index}`);
        const requesterDir = join(dir, `requester-${index}`);
        await mkdir(join(providerDir, 'models'), {recursive: true});
        await mkdir(requesterDir, {recursive: true});
        await writeDemoModel(join(providerDir, 'models', 'bench.gguf'), options);
        const provider = await startSwarmDaemon(bootstrap, providerDir, ['--model', 'bench', '--network', `bench-${index}`]);
        const requester = await startSwarmDaemon(bootstrap, requesterDir, ['--network', `bench-${index}`]);
        await waitForPeers(requester, [await nodeIdOf(provider)], 30_000,
            (peers) => peers.every((peer) => peer.capabilities.models.some((model) => model.loaded)));
        const load: CompletionLoad = {model: 'bench', prompt: 'The swarm of doges gathered to share', maxTokens: 256, logitBias: {}};
        process.stderr.write(`[${name}] direct, then through a peer\n`);
        const direct = await measure(new OpenAI({baseURL: provider.baseUrl, apiKey: 'x', maxRetries: 0}), load);
        const remote = await measure(new OpenAI({baseURL: requester.baseUrl, apiKey: 'x', maxRetries: 0}), load);
        results.push({
            model: name, direct, throughPeer: remote,
            ratios: {
                tokensPerSecond: round(remote.generationTokensPerSecond / direct.generationTokensPerSecond, 3),
                addedTtftMs: round(remote.ttftMs - direct.ttftMs)
            }
        });
        await requester.stop();
        await provider.stop();
    }
    process.stderr.write('[failover] a serving peer killed mid-answer\n');
    const failover = await failoverGaps();
    const report = {
        benchmark: 'remote inference: client → A → peer B, against client → B, loopback testnet; failover gap',
        date: new Date().toISOString(),
        machine: machine(),
        settings: {maxTokens: 256, repeats: REPEATS, temperature: 0, threads: 1},
        targets: {tokensPerSecond: '>= 0.9 of direct', addedTtftMs: '< 50', failoverGapMs: '< 2000'},
        results,
        failover
    };
    await writeReport('remote', report, results);
} finally {
    await testnet.destroy();
    await rm(dir, {recursive: true, force: true});
}
