/**
 * Remote inference on loopback: a client streaming through node A, which has no model, served by peer B,
 * against the same client streaming from B directly. Writes bench/results/remote.json.
 */
import {mkdir, mkdtemp, rm, writeFile} from 'node:fs/promises';
import {cpus, tmpdir} from 'node:os';
import {join} from 'node:path';
import OpenAI from 'openai';
import {writeDemoModel} from '../engine/demo/demo-model.js';
import {nodeIdOf, startSwarmDaemon, startTestnet, waitForPeers} from '../test/helpers/swarm-fixture.js';
import {median, round} from './lib/statistics.js';
import {measureStreamedCompletion, type CompletionLoad, type StreamMeasurement} from './lib/stream-measurement.js';

const REPEATS = 7;
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
    const report = {
        benchmark: 'remote inference: client → A → peer B, against client → B, loopback testnet',
        date: new Date().toISOString(),
        machine: {cpu: cpus()[0]?.model, cores: cpus().length, node: process.version},
        settings: {maxTokens: 256, repeats: REPEATS, temperature: 0, threads: 1},
        targets: {tokensPerSecond: '>= 0.9 of direct', addedTtftMs: '< 50'},
        results
    };
    await mkdir(new URL('./results/', import.meta.url), {recursive: true});
    await writeFile(new URL('./results/remote.json', import.meta.url), JSON.stringify(report, null, 2) + '\n');
    process.stdout.write(JSON.stringify(results, null, 2) + '\n');
} finally {
    await testnet.destroy();
    await rm(dir, {recursive: true, force: true});
}
