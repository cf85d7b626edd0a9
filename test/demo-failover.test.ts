import {spawn, type ChildProcess} from 'node:child_process';
import {once} from 'node:events';
import {mkdir, mkdtemp, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {createInterface} from 'node:readline';
import test from 'ava';
import type {Testnet} from 'hyperdht/testnet.js';
import OpenAI from 'openai';
import {writeDemoModel} from '../engine/demo/demo-model.js';
import {shardedInferenceDefaults} from '../inference/sharded/sharded-inference.js';
import {CLI_PATH, waitFor, type DaemonHandle} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {seamReport, streamGreedyCompletion} from '../harness/generation-requests.js';
import {fetchStatus} from '../harness/node-status.js';
import {TEST_RPC_DIR, testRpcBinaries} from '../harness/rpc-binaries.js';
import {nodeIdOf, startSwarmDaemon, startTestnet, waitForPeers} from '../harness/swarm-fixture.js';

/**
 * A pipeline whose stage's host is SIGKILLed mid-answer (docs/architecture.md, "Sharding", "Failover"): with a spare
 * host, as `strongdoge demo` now runs, the answer goes on; with none, every request in flight ends with an error the
 * client sees within the formation wait, rather than staying open.
 */

const MiB = 2 ** 20;
/** The demo's settings (cli/commands/demo-command.ts): room for three of the eight layers per node, 4 sequences. */
const NODE_MEMORY = 18 * MiB;
const CONTEXT = 512;
const PROMPT = 'Once upon a time';
const TOKENS = 300;
/** Beyond the formation wait: the stage's failure is seen (1.5 s) and the engine restarts (its backoff) before it. */
const END_MARGIN_MS = 20_000;

const cleanups: (() => Promise<unknown>)[] = [];
let testnet: Testnet | undefined;

test.before(() => testRpcBinaries());

test.after.always(async () => {
    for (const cleanup of cleanups.reverse())
        await cleanup().catch(() => undefined);
    await testnet?.destroy();
});

/** A response read to its end as it comes: `started` once its first bytes are in (or it ended), `ended` with all of it. */
function readAll(response: Promise<Response>) {
    let markStarted: () => void = () => undefined;
    const started = new Promise<void>((resolve) => {
        markStarted = resolve;
    });
    const ended = (async () => {
        try {
            const res = await response;
            const decoder = new TextDecoder();
            let text = '';
            for await (const chunk of res.body!) {
                text += decoder.decode(chunk, {stream: true});
                markStarted();
            }
            return {status: res.status, text, endedAt: Date.now()};
        } finally {
            markStarted();
        }
    })();
    return {started, ended};
}

function post(origin: string, path: string, body: object) {
    return readAll(fetch(`${origin}${path}`, {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify(body)}));
}

/** The data of each `data:` line of a server-sent event stream, `[DONE]` left out. */
function sseData(text: string) {
    return text.split('\n').filter((line) => line.startsWith('data: ') && line !== 'data: [DONE]').map((line) => JSON.parse(line.slice(6)) as Record<string, unknown>);
}

const UNFORMABLE = /cannot be formed|failed \d time/;

test.serial('a pipeline that cannot form again ends each request in flight, on every API, with an error within the formation wait', async (t) => {
    const started = await startTestnet();
    testnet = started.testnet;
    const startNode = async (extra: string[], withModel: boolean): Promise<{daemon: DaemonHandle, id: string}> => {
        const fixture = await createDataDirWithDemoModel({endsText: false});
        cleanups.push(fixture.cleanup);
        const daemon = await startSwarmDaemon(started.bootstrap, fixture.dataDir, ['--network', 'unformable', '--context-size', String(CONTEXT),
            ...(withModel ? ['--model', 'demo'] : []), ...extra], withModel ? {readyTimeoutMs: 150_000} : {});
        cleanups.push(() => daemon.stop('SIGKILL'));
        return {daemon, id: await nodeIdOf(daemon)};
    };
    // As `strongdoge demo` ran before it had a spare: the plan needs all three nodes.
    const hosts = await Promise.all([0, 1].map(() => startNode(['--max-shard-memory', String(NODE_MEMORY)], false)));
    const coordinator = await startNode(['--shard', 'always', '--max-stages', '3', '--memory-limit', String(NODE_MEMORY), '--serve-peers', 'off'], true);
    await waitForPeers(coordinator.daemon, hosts.map((host) => host.id), 30_000);
    const {origin} = coordinator.daemon;
    const pipeline = (await fetchStatus(coordinator.daemon, '/api/cluster')).pipelines[0]!;
    t.is(pipeline.state, 'ready');

    // One request in flight per API: OpenAI's streamed and whole, Anthropic's and Ollama's streams.
    const streams = {
        completions: post(origin, '/v1/completions', {model: 'demo', prompt: PROMPT, max_tokens: TOKENS, temperature: 0, stream: true}),
        messages: post(origin, '/v1/messages', {model: 'demo', max_tokens: TOKENS, temperature: 0, stream: true, messages: [{role: 'user', content: PROMPT}]}),
        ollama: post(origin, '/api/generate', {model: 'demo', prompt: PROMPT, options: {num_predict: TOKENS, temperature: 0}})
    };
    const whole = post(origin, '/v1/chat/completions', {model: 'demo', max_tokens: TOKENS, temperature: 0, messages: [{role: 'user', content: PROMPT}]});
    await Promise.all(Object.values(streams).map((stream) => stream.started));
    t.is((await fetchStatus(coordinator.daemon, '/api/node')).requests.active, 4);
    const victim = hosts.find((host) => host.id === pipeline.stages[1]!.peer)!;
    const killedAt = Date.now();
    victim.daemon.process.kill('SIGKILL');

    const [completions, messages, ollama, chat] = await Promise.all([streams.completions.ended, streams.messages.ended, streams.ollama.ended, whole.ended]);
    const bound = shardedInferenceDefaults.formationWaitMs + END_MARGIN_MS;
    for (const [name, ended] of Object.entries({completions, messages, ollama, chat})) {
        t.log(`${name}: ended ${ended.endedAt - killedAt} ms after the kill, status ${ended.status}`);
        t.true(ended.endedAt - killedAt < bound, `${name} ended within ${bound} ms`);
    }
    // After the 200: the error as the last event of each stream.
    t.is(completions.status, 200);
    const lastCompletion = sseData(completions.text).at(-1) as {error?: {code: string, message: string}};
    t.regex(lastCompletion.error?.code ?? '', /^(no_peer_available|peers_failed)$/, completions.text.slice(-500));
    t.regex(lastCompletion.error!.message, UNFORMABLE);
    t.true(completions.text.trimEnd().endsWith('data: [DONE]'));
    t.is(messages.status, 200);
    const lastMessage = sseData(messages.text).at(-1) as {type: string, error?: {message: string}};
    t.is(lastMessage.type, 'error', messages.text.slice(-500));
    t.regex(lastMessage.error!.message, UNFORMABLE);
    t.is(ollama.status, 200);
    const lastLine = JSON.parse(ollama.text.trimEnd().split('\n').at(-1)!) as {error?: string};
    t.regex(lastLine.error ?? '', UNFORMABLE, ollama.text.slice(-500));
    // Before any byte: the status.
    t.is(chat.status, 503);
    t.regex((JSON.parse(chat.text) as {error: {code: string}}).error.code, /^(no_peer_available|peers_failed)$/, chat.text);
    await waitFor(async () => (await fetchStatus(coordinator.daemon, '/api/node')).requests.active === 0, 5_000, 50);
    const cluster = (await fetchStatus(coordinator.daemon, '/api/cluster')).pipelines[0]!;
    t.is(cluster.state, 'waiting', cluster.reason ?? '');
    t.is(cluster.failovers, 1);

    // A new request waits the formation wait, then gets the documented 503, streamed or not.
    const [newStream, newWhole] = await Promise.all([
        post(origin, '/v1/completions', {model: 'demo', prompt: PROMPT, max_tokens: 8, stream: true}).ended,
        post(origin, '/v1/completions', {model: 'demo', prompt: PROMPT, max_tokens: 8}).ended
    ]);
    for (const refused of [newStream, newWhole]) {
        t.is(refused.status, 503);
        const {error} = JSON.parse(refused.text) as {error: {code: string, message: string}};
        t.is(error.code, 'no_peer_available');
        t.regex(error.message, /cannot be formed/);
    }
    t.like((await fetchStatus(coordinator.daemon, '/api/node')).requests, {active: 0});
    t.is(coordinator.daemon.process.exitCode, null);
});

/** The demo's ready line: its URL, its stages by node name, and its hosts' process ids. */
interface DemoReady {
    url: string,
    stages: {node: string, layers: [number, number] | null}[],
    hosts: {node: string, pid: number}[],
    failover: string
}

test.serial('the demo\'s spare host takes over the stage of a host SIGKILLed mid-answer, and the answer goes on', async (t) => {
    const dataDir = await mkdtemp(join(tmpdir(), 'strongdoge-demo-failover-'));
    cleanups.push(() => rm(dataDir, {recursive: true, force: true}));
    // The demo writes its model unless one is there: this one never ends by itself, so an answer lasts long enough to interrupt.
    const models = join(dataDir, 'demo', 'coordinator', 'models');
    await mkdir(models, {recursive: true});
    await writeDemoModel(join(models, 'demo.gguf'), {endsText: false});
    const demo: ChildProcess = spawn(process.execPath, [CLI_PATH, 'demo', '--daemon', '--port', '0', '--data-dir', dataDir, '--rpc-dir', TEST_RPC_DIR],
        {stdio: ['ignore', 'pipe', 'pipe']});
    const exited = once(demo, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    const logs: Record<string, unknown>[] = [];
    let stderr = '';
    demo.stderr!.on('data', (chunk) => stderr += chunk);
    createInterface({input: demo.stdout!}).on('line', (line) => logs.push(JSON.parse(line) as Record<string, unknown>));
    let hostPids: number[] = [];
    cleanups.push(async () => {
        if (demo.exitCode === null && demo.signalCode === null) {
            demo.kill('SIGTERM');
            await exited;
        }
        for (const pid of hostPids)
            try {
                process.kill(pid, 'SIGKILL');
            } catch {
                // gone already
            }
    });
    const readyLine = () => logs.find((record) => String(record.msg).startsWith('the demo is ready')) as DemoReady | undefined;
    await waitFor(() => readyLine() !== undefined || demo.exitCode !== null, 90_000, 100).catch(() => undefined);
    const ready = readyLine();
    t.truthy(ready, `no ready line; stderr ${stderr}; logs ${JSON.stringify(logs.filter((record) => Number(record.level) >= 40).slice(-20))}`);
    const {url, stages, hosts, failover} = ready!;
    hostPids = hosts.map((host) => host.pid);
    // Three hosts, two of them stages: the third is the spare.
    t.deepEqual(hosts.map((host) => host.node), ['host-1', 'host-2', 'host-3']);
    t.is(stages.length, 3);
    t.is(stages[0]!.node, 'coordinator');
    for (const host of hosts)
        t.true(failover.includes(`${host.node}: ${host.pid}`), failover);
    const spare = hosts.find((host) => !stages.some((stage) => stage.node === host.node))!;
    t.true(failover.includes(`${spare.node}: ${spare.pid}, the spare`), failover);

    const coordinator = {origin: url.replace(/\/v1$/, '')};
    const client = new OpenAI({baseURL: url, apiKey: 'x', maxRetries: 0});
    const uninterrupted = await streamGreedyCompletion(client, PROMPT, TOKENS);
    t.is(uninterrupted.completionTokens, TOKENS);
    const before = (await fetchStatus(coordinator, '/api/cluster')).pipelines[0]!;
    const victim = hosts.find((host) => host.node === stages[1]!.node)!;

    let seamText = '';
    const answer = await streamGreedyCompletion(client, PROMPT, TOKENS, (text) => {
        if (seamText === '' && text.length > uninterrupted.text.length / 4) {
            seamText = text;
            process.kill(victim.pid, 'SIGKILL');
        }
    });
    // One whole answer, no error, continuing from exactly the text streamed before the failure (past the seam a
    // near-tie may part it from the uninterrupted run: test/sharding.test.ts says why).
    t.not(seamText, '');
    t.is(answer.finishReason, 'length');
    t.is(answer.completionTokens, TOKENS);
    t.true(answer.text.startsWith(seamText));
    t.true(uninterrupted.text.startsWith(seamText));
    t.log(seamReport(answer.text, uninterrupted.text, seamText));
    const after = (await fetchStatus(coordinator, '/api/cluster')).pipelines[0]!;
    t.is(after.state, 'ready');
    t.is(after.failovers, 1, JSON.stringify(after.failures));
    t.is(after.failures[0]!.peer, before.stages[1]!.peer);
    t.is(after.stages.length, 3);
    t.false(after.stages.some((stage) => stage.peer === before.stages[1]!.peer));
    t.true(after.stages.some((stage) => !stage.self && !before.stages.some((old) => old.peer === stage.peer)), 'the spare joined');
    t.like((await fetchStatus(coordinator, '/api/node')).requests, {active: 0});

    // The demo still stops in order, the dead host aside.
    demo.kill('SIGTERM');
    const [code] = await exited;
    t.is(code, 0, stderr);
    t.deepEqual(logs.filter((record) => record.msg === 'stopped').map((record) => record.node).sort(),
        ['coordinator', ...hosts.filter((host) => host !== victim).map((host) => host.node)]);
});
