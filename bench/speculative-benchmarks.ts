/**
 * Speculative decoding (docs/architecture.md, "Speculative decoding"), on generated models whose drafts agree as
 * often as each case needs (harness/speculation-models.ts):
 * (a) a 3-stage pipeline (this node and 2 remote stages, their links delayed by 0, 10, 30 and 50 ms RTT in user
 *     space): tokens/s without speculation (the anchor, runs alternating in the same run), with a draft that always
 *     agrees (the target itself), one that mostly agrees (the target's first layers), one that never does (another
 *     seed's), with lookup, and with the always-agreeing draft at a fixed length; acceptance and tokens
 *     per pass from the engine's status;
 * (b) one node with a draft model against llama-server with the same `--model-draft`, from the same llama.cpp
 *     source, alternating; both without drafting too;
 * (c) lookup drafting against none through the completion endpoint, on a prompt whose answer repeats its text and
 *     on the bench prompt.
 * Writes bench/results/speculative.json. Targets are reported, never asserted.
 */
import {mkdir, mkdtemp, readFile, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import OpenAI from 'openai';
import type {GenerationRequest, SpeculationCounts, SpeculationSummary, SpeculativeSetting} from '../core/inference-types.js';
import type {DemoModelOptions} from '../engine/demo/demo-model.js';
import {prepareRpcServerDir} from '../engine/rpc/rpc-server-dir.js';
import type {RpcServerHost} from '../engine/rpc/rpc-server-host.js';
import {byteTokenBan} from '../harness/byte-token-ban.js';
import {startDaemon, type DaemonHandle} from '../harness/cli-process.js';
import {fetchStatus} from '../harness/node-status.js';
import {testRpcBinaries} from '../harness/rpc-binaries.js';
import {writeSpeculationModels} from '../harness/speculation-models.js';
import {DelayedStream, ownDevices, startDirectPipeline, startRpcServers} from './lib/direct-pipeline.js';
import {llamaServerAvailable, startLlamaServer} from './lib/llama-server.js';
import {machine, reportFile, writeReport} from './lib/report.js';
import {round} from './lib/statistics.js';
import {StreamTimer, summarizeRuns, type StreamMeasurement} from './lib/stream-measurement.js';

const THREADS = 1;
const CONTEXT = 1024;
const REPEATS = 3;
const PROMPT = 'The swarm of doges gathered to share their GPUs and';
const logitBias = byteTokenBan();

/** (a): the default demo shape, 8 layers, its blocks from the 2nd on quiet: its 2-layer draft agrees on 73–86%. */
const PIPELINE_MODEL: DemoModelOptions = {};
const PIPELINE_MODEL_NAME = 'tiny (8 layers, width 256, ~5M params, F16), blocks 2–7 at 0.75; drafts of 2 layers';
const PIPELINE_TOKENS = 128;
const RTTS_MS = [0, 10, 30, 50];
/** This node's layers and each remote stage's: the layers a 3-stage split of 8 gives the stages. */
const COORDINATOR_LAYERS = 2;
const STAGE_LAYERS = [3, 3];

/**
 * (b), (c): the medium bench shape in Q8_0, where node-llama-cpp's prebuilt CPU backend keeps up with llama-server
 * without speculation (bench/results/inference.json); blocks from the 2nd on at 0.5, so the 2-layer draft agrees on
 * 57–75% of greedy tokens (measured on four prompts).
 */
const SINGLE_MODEL: DemoModelOptions = {layers: 12, width: 768, headCount: 12, feedForwardLength: 2048, weightType: 'Q8_0', quietLayerGain: 0.5};
const SINGLE_MODEL_NAME = 'medium-q8 (12 layers, width 768, ~86M params, Q8_0), blocks 2–11 at 0.5; draft of 2 layers';
const SINGLE_TOKENS = 256;
/** llama-server's own default is 3 (`--spec-draft-n-max`); strongdoge's adaptive length goes up to 12. */
const LLAMA_SERVER_DRAFT_MAX = 12;
const LOOKUP_TOKENS = 128;
/** (c): the repeat prompt opens so, then holds this many tokens of the model's own text after it. */
const REPEAT_OPENING = 'repeat this text: Such wow, the doges wrote:';
const REPEAT_TEXT_TOKENS = 256;

interface Run {
    measurement: StreamMeasurement,
    text: string,
    speculation?: SpeculationCounts | undefined
}


/** What a model's speculation summary gained between two readings. */
function speculationDelta(before: SpeculationSummary | null | undefined, after: SpeculationSummary | null | undefined) {
    if (after === undefined || after === null)
        return null;
    const passes = after.passes - (before?.passes ?? 0);
    const tokens = after.tokens - (before?.tokens ?? 0);
    const drafted = after.drafted - (before?.drafted ?? 0);
    const accepted = after.accepted - (before?.accepted ?? 0);
    return {
        drafter: after.drafter, passes, tokens, drafted, accepted,
        acceptance: drafted === 0 ? null : round(accepted / drafted, 3),
        tokensPerPass: passes === 0 ? null : round(tokens / passes, 3)
    };
}

/** Runs of each contestant, `repeats` rounds, the order rotating each round so drift falls on all alike. */
async function alternate<Name extends string>(names: readonly Name[], repeats: number, measure: (name: Name) => Promise<Run>) {
    const runs = Object.fromEntries(names.map((name) => [name, [] as Run[]])) as Record<Name, Run[]>;
    for (let round = 0; round < repeats; round++)
        for (let index = 0; index < names.length; index++) {
            const name = names[(index + round) % names.length]!;
            runs[name].push(await measure(name));
        }
    return runs;
}

// --- (a) the pipeline ------------------------------------------------------------------------------------------

const PIPELINE_CASES = ['off', 'alwaysAgrees', 'mostlyAgrees', 'neverAgrees', 'lookup', 'alwaysAgreesFixed'] as const;
/** The fixed case's tokens drafted per pass: what an always-agreeing draft yields where the length does not adapt. */
const FIXED_DRAFT_TOKENS = 8;
type PipelineCase = typeof PIPELINE_CASES[number];

/** One greedy completion through an engine in this process. */
async function generate(engine: Awaited<ReturnType<typeof startDirectPipeline>>['engine'], maxTokens: number): Promise<Run> {
    const request: GenerationRequest = {
        kind: 'completion', model: 'bench', prompt: PROMPT,
        sampling: {temperature: 0, stop: [], maxTokens, logitBias, responseFormat: {type: 'text'}}
    };
    const timer = new StreamTimer();
    let text = '';
    const result = await engine.generate(request, {
        onText: (piece) => {
            if (piece) {
                timer.textArrived();
                text += piece;
            }
        }
    });
    return {measurement: timer.finish(result.usage.completionTokens), text, speculation: result.speculation};
}

async function pipelineBenchmark(dir: string) {
    process.stderr.write('rpc binaries (built once, about a minute the first time)\n');
    const files = await prepareRpcServerDir(await testRpcBinaries((line) => process.stderr.write(`  ${line}\n`)));
    const models = await writeSpeculationModels({dir: join(dir, 'pipeline-models'), model: PIPELINE_MODEL});
    const cases: Record<PipelineCase, {speculative: SpeculativeSetting, draft?: string, draftTokens?: {min: number, max: number}, how: string}> = {
        off: {speculative: 'off', how: 'no speculation: the anchor'},
        alwaysAgrees: {speculative: 'draft', draft: models.selfDraft, how: 'the target itself as its draft model'},
        mostlyAgrees: {speculative: 'draft', draft: models.draft, how: 'the target\'s first 2 layers (same seed) as its draft model'},
        neverAgrees: {speculative: 'draft', draft: models.otherDraft, how: '2 layers of another seed as its draft model'},
        lookup: {speculative: 'lookup', how: 'n-gram lookup in the prompt and the text so far, no draft model'},
        alwaysAgreesFixed: {speculative: 'draft', draft: models.selfDraft, draftTokens: {min: FIXED_DRAFT_TOKENS, max: FIXED_DRAFT_TOKENS},
            how: `the target itself as its draft model, ${FIXED_DRAFT_TOKENS} tokens drafted every pass (draftTokens min = max): one fixed length beside the adaptive one`}
    };
    let oneWayMs = 0;
    const servers: RpcServerHost[] = [];
    const pipelines = {} as Record<PipelineCase, Awaited<ReturnType<typeof startDirectPipeline>>>;
    try {
        for (const name of PIPELINE_CASES) {
            process.stderr.write(`[pipeline] ${name}: ${COORDINATOR_LAYERS} + ${STAGE_LAYERS.join(' + ')} layers\n`);
            const stageServers = await startRpcServers(files, STAGE_LAYERS.length, THREADS);
            const own = await startRpcServers(files, 2, THREADS);
            servers.push(...stageServers, ...own);
            const {speculative, draft, draftTokens} = cases[name];
            pipelines[name] = await startDirectPipeline({
                model: {id: 'bench', path: models.target, ...(draft !== undefined && {draft: {path: draft}})},
                files, coordinatorLayers: COORDINATOR_LAYERS, stageLayers: STAGE_LAYERS,
                stageServers: stageServers.map((server) => ({host: '127.0.0.1', port: server.port!})), own: ownDevices(own),
                engine: {threads: THREADS, parallelSequences: 1, contextSize: CONTEXT, gpu: false, speculative, ...(draftTokens !== undefined && {draftTokens})},
                delayMs: () => oneWayMs
            });
        }
        for (const name of PIPELINE_CASES) // warm-up
            await generate(pipelines[name].engine, PIPELINE_TOKENS);
        const reference = (await generate(pipelines.off.engine, PIPELINE_TOKENS)).text;

        const byRtt = [];
        for (const rttMs of RTTS_MS) {
            oneWayMs = rttMs / 2;
            DelayedStream.applied.length = 0;
            process.stderr.write(`[pipeline] ${rttMs} ms RTT on each remote stage's link\n`);
            const before = Object.fromEntries(PIPELINE_CASES.map((name) => [name, pipelines[name].engine.getStatus().speculation.bench])) as Record<PipelineCase, SpeculationSummary | undefined>;
            const runs = await alternate(PIPELINE_CASES, REPEATS, (name) => generate(pipelines[name].engine, PIPELINE_TOKENS));
            const off = summarizeRuns(runs.off);
            const results = (name: PipelineCase) => {
                const summary = summarizeRuns(runs[name]);
                return {
                    ...summary,
                    overOffTokensPerSecond: round(summary.generationTokensPerSecond / off.generationTokensPerSecond, 3),
                    speculation: speculationDelta(before[name], pipelines[name].engine.getStatus().speculation.bench),
                    sameTextAsOff: runs[name].every((run) => run.text === reference)
                };
            };
            byRtt.push({
                nominalRttMs: rttMs, appliedRttMs: rttMs === 0 ? 0 : round(DelayedStream.meanRttMs(), 3),
                cases: Object.fromEntries(PIPELINE_CASES.map((name) => [name, results(name)])) as Record<PipelineCase, ReturnType<typeof results>>
            });
        }
        const at50 = byRtt.find((entry) => entry.nominalRttMs === 50)!;
        return {
            date: new Date().toISOString(),
            model: {name: PIPELINE_MODEL_NAME, options: PIPELINE_MODEL},
            setup: `a direct-TCP pipeline (no Hyperswarm): an EngineSupervisor engine child in the bench process, TunnelEndpoints with the RPC codec joined by TCP to local rpc servers (${THREADS} thread each); this node's ${COORDINATOR_LAYERS} layers and the output layer on its own two, ${STAGE_LAYERS.join(' and ')} layers on the 2 remote stages, whose links carry half the RTT each way in user space (this kernel has no netem; order kept); the draft model whole in the engine child`,
            cases: Object.fromEntries(PIPELINE_CASES.map((name) => [name, cases[name].how])),
            placementMatches: Object.fromEntries(PIPELINE_CASES.map((name) => [name, pipelines[name].placementMatches])),
            byRtt,
            at50ms: {
                alwaysAgreesOverOff: at50.cases.alwaysAgrees.overOffTokensPerSecond, alwaysAgreesTarget: '>= 3',
                neverAgreesOverOff: at50.cases.neverAgrees.overOffTokensPerSecond, neverAgreesTarget: '>= 0.95',
                mostlyAgreesOverOff: at50.cases.mostlyAgrees.overOffTokensPerSecond, lookupOverOff: at50.cases.lookup.overOffTokensPerSecond,
                alwaysAgreesFixedOverOff: at50.cases.alwaysAgreesFixed.overOffTokensPerSecond
            }
        };
    } finally {
        for (const pipeline of Object.values(pipelines))
            await pipeline.stop().catch(() => undefined);
        await Promise.all(servers.map((server) => server.stop().catch(() => undefined)));
    }
}

// --- (b), (c) one node ---------------------------------------------------------------------------------------

interface LlamaServerTimings {
    draft_n?: number,
    draft_n_accepted?: number
}

/** One greedy streamed completion through an OpenAI-compatible server; llama-server's drafting from its timings. */
async function stream(client: OpenAI, model: string, prompt: string, maxTokens: number): Promise<Run & {timings?: LlamaServerTimings}> {
    const timer = new StreamTimer();
    let text = '';
    let completionTokens = 0;
    let timings: LlamaServerTimings | undefined;
    const response = await client.completions.create({
        model, prompt, max_tokens: maxTokens, temperature: 0, logit_bias: logitBias, stream: true, stream_options: {include_usage: true}
    });
    for await (const chunk of response) {
        const piece = chunk.choices[0]?.text;
        if (piece) {
            timer.textArrived();
            text += piece;
        }
        completionTokens = chunk.usage?.completion_tokens ?? completionTokens;
        timings = (chunk as {timings?: LlamaServerTimings}).timings ?? timings;
    }
    return {measurement: timer.finish(completionTokens), text, ...(timings !== undefined && {timings})};
}

/** Drafted and accepted over llama-server's runs. */
function llamaServerDrafting(runs: (Run & {timings?: LlamaServerTimings})[]) {
    const drafted = runs.reduce((sum, run) => sum + (run.timings?.draft_n ?? 0), 0);
    const accepted = runs.reduce((sum, run) => sum + (run.timings?.draft_n_accepted ?? 0), 0);
    return {drafted, accepted, acceptance: drafted === 0 ? null : round(accepted / drafted, 3)};
}

async function modelSpeculation(daemon: DaemonHandle) {
    return (await fetchStatus(daemon, '/api/node')).models[0]?.speculation ?? null;
}

/** The share of `text`'s runs of 4 words that `prompt` holds: how much of an answer repeats its prompt. */
function fourGramsIn(text: string, prompt: string) {
    const words = text.split(/\s+/).filter(Boolean);
    const runs = Math.max(0, words.length - 3);
    let found = 0;
    for (let index = 0; index < runs; index++)
        if (prompt.includes(words.slice(index, index + 4).join(' ')))
            found++;
    return runs === 0 ? 0 : found / runs;
}

async function singleNodeBenchmark(dir: string) {
    const models = await writeSpeculationModels({dir: join(dir, 'single-models'), model: SINGLE_MODEL});
    const daemons: DaemonHandle[] = [];
    const servers: Awaited<ReturnType<typeof startLlamaServer>>[] = [];
    const node = async (args: string[]) => {
        const dataDir = join(dir, `node-${daemons.length}`);
        await mkdir(dataDir, {recursive: true});
        const daemon = await startDaemon(['--model', models.target, '--data-dir', dataDir, '--threads', String(THREADS), '--parallel', '1',
            '--context-size', String(CONTEXT), ...args]);
        daemons.push(daemon);
        return new OpenAI({baseURL: daemon.baseUrl, apiKey: 'bench', maxRetries: 0});
    };
    try {
        process.stderr.write(`[single] strongdoge: a draft model, none, lookup\n`);
        const clients = {
            strongdogeDraft: await node(['--draft-model', models.draft, '--speculative', 'draft']),
            strongdogeOff: await node(['--speculative', 'off']),
            strongdogeLookup: await node(['--speculative', 'lookup'])
        } as Record<string, OpenAI>;
        const [draftNode, , lookupNode] = daemons as [DaemonHandle, DaemonHandle, DaemonHandle];
        const llamaServer = llamaServerAvailable()
            ? {available: true as const}
            : {available: false as const, skipped: 'llama-server not built: run scripts/build-llama-server.sh'};
        if (llamaServer.available) {
            process.stderr.write(`[single] llama-server: --model-draft with its default and ${LLAMA_SERVER_DRAFT_MAX} tokens drafted at most, none\n`);
            const start = async (extraArgs: string[]) => {
                const server = await startLlamaServer(models.target, {threads: THREADS, parallel: 1, contextPerSlot: CONTEXT, extraArgs});
                servers.push(server);
                return new OpenAI({baseURL: server.baseUrl, apiKey: 'bench', maxRetries: 0});
            };
            // Without --spec-type, this llama-server infers the kind of drafting from the draft's GGUF, and finds none for a plain model.
            const draftArgs = ['--model-draft', models.draft, '--spec-type', 'draft-simple', '--spec-draft-threads', String(THREADS)];
            clients.llamaServerDraft = await start(draftArgs);
            clients.llamaServerDraftMax = await start([...draftArgs, '--spec-draft-n-max', String(LLAMA_SERVER_DRAFT_MAX)]);
            clients.llamaServerOff = await start([]);
        }
        const modelId = (name: string) => name.startsWith('strongdoge') ? 'target' : 'bench';

        // (b) a draft model, against llama-server's with the same pair
        const contestants = Object.keys(clients).filter((name) => name !== 'strongdogeLookup');
        for (const name of contestants) // warm-up
            await stream(clients[name]!, modelId(name), PROMPT, SINGLE_TOKENS);
        const draftBefore = await modelSpeculation(draftNode);
        const runs = await alternate(contestants, REPEATS, (name) => stream(clients[name]!, modelId(name), PROMPT, SINGLE_TOKENS));
        const draftSpeculation = speculationDelta(draftBefore, await modelSpeculation(draftNode));
        const reference = runs.strongdogeOff![0]!.text;
        const results = Object.fromEntries(contestants.map((name) => [name, {
            ...summarizeRuns(runs[name]!),
            ...(name === 'strongdogeDraft' && {speculation: draftSpeculation}),
            ...(name.startsWith('llamaServerDraft') && {drafting: llamaServerDrafting(runs[name]!)}),
            sameTextAsStrongdogeOff: runs[name]!.every((run) => run.text === reference)
        }]));
        const tokensPerSecond = (name: string) => results[name]?.generationTokensPerSecond;
        const best = llamaServer.available ? Math.max(tokensPerSecond('llamaServerDraft')!, tokensPerSecond('llamaServerDraftMax')!) : undefined;
        const draftModel = {
            ...results,
            ...(!llamaServer.available && {llamaServer: llamaServer.skipped}),
            ratios: {
                strongdogeDraftOverOff: round(tokensPerSecond('strongdogeDraft')! / tokensPerSecond('strongdogeOff')!, 3),
                ...(best !== undefined && {
                    strongdogeDraftOverLlamaServerDraft: round(tokensPerSecond('strongdogeDraft')! / tokensPerSecond('llamaServerDraft')!, 3),
                    strongdogeDraftOverLlamaServerDraftMax: round(tokensPerSecond('strongdogeDraft')! / tokensPerSecond('llamaServerDraftMax')!, 3),
                    strongdogeDraftOverBestLlamaServerDraft: round(tokensPerSecond('strongdogeDraft')! / best, 3),
                    llamaServerDraftOverOff: round(tokensPerSecond('llamaServerDraft')! / tokensPerSecond('llamaServerOff')!, 3),
                    strongdogeOffOverLlamaServerOff: round(tokensPerSecond('strongdogeOff')! / tokensPerSecond('llamaServerOff')!, 3)
                })
            },
            target: 'strongdogeDraftOverBestLlamaServerDraft >= 0.95'
        };

        // (c) lookup on a prompt whose answer repeats its text. A random-weight model follows no instruction and copies
        // nothing, but its greedy text falls into a loop of a few dozen tokens: the prompt holds the model's own text
        // after its opening, loop included, so the answer goes on repeating what the prompt already says.
        process.stderr.write('[single] lookup on a text to repeat\n');
        const repeatPrompt = REPEAT_OPENING + (await stream(clients.strongdogeOff!, 'target', REPEAT_OPENING, REPEAT_TEXT_TOKENS)).text;
        const lookupContestants = ['strongdogeLookup', 'strongdogeOff'] as const;
        for (const name of lookupContestants)
            await stream(clients[name]!, 'target', repeatPrompt, LOOKUP_TOKENS);
        const prompts = {repeat: repeatPrompt, fresh: PROMPT};
        const lookup: Record<string, unknown> = {};
        for (const [kind, prompt] of Object.entries(prompts)) {
            const before = await modelSpeculation(lookupNode);
            const lookupRuns = await alternate(lookupContestants, REPEATS, (name) => stream(clients[name]!, 'target', prompt, LOOKUP_TOKENS));
            const on = summarizeRuns(lookupRuns.strongdogeLookup);
            const off = summarizeRuns(lookupRuns.strongdogeOff);
            lookup[kind] = {
                lookup: {...on, speculation: speculationDelta(before, await modelSpeculation(lookupNode))},
                off,
                lookupOverOffTokensPerSecond: round(on.generationTokensPerSecond / off.generationTokensPerSecond, 3),
                sameText: lookupRuns.strongdogeLookup.every((run) => run.text === lookupRuns.strongdogeOff[0]!.text),
                answerWordFourGramsInPrompt: round(fourGramsIn(lookupRuns.strongdogeOff[0]!.text, prompt), 3)
            };
        }
        return {
            date: new Date().toISOString(),
            model: {name: SINGLE_MODEL_NAME, options: SINGLE_MODEL},
            setup: `strongdoge daemons (offline, --threads ${THREADS} --parallel 1 --context-size ${CONTEXT}) with --draft-model, --speculative off and --speculative lookup; llama-server (scripts/build-llama-server.sh: the llama.cpp source node-llama-cpp ships, built with GGML_NATIVE) with -t ${THREADS} -np 1 and --model-draft --spec-type draft-simple (its default --spec-draft-n-max, 3, and ${LLAMA_SERVER_DRAFT_MAX}, strongdoge's most) or none; every contestant running at once, idle but for the one measured, streamed completions alternating in rotating order; byte tokens banned (logit_bias)`,
            draftModel,
            lookup: {
                ...lookup,
                how: `the repeat prompt: ${JSON.stringify(REPEAT_OPENING)} and the model's own ${REPEAT_TEXT_TOKENS}-token greedy continuation of it (a random-weight model copies nothing, but its greedy text loops, so the answer repeats the prompt's text); the fresh prompt is the bench prompt, whose answer loops through its own text only. answerWordFourGramsInPrompt: the share of the answer's runs of 4 words found in the prompt`
            }
        };
    } finally {
        for (const daemon of daemons)
            await daemon.stop().catch(() => undefined);
        for (const server of servers)
            await server.stop().catch(() => undefined);
    }
}

type Pipeline = Awaited<ReturnType<typeof pipelineBenchmark>> & {date?: string};
type SingleNode = Awaited<ReturnType<typeof singleNodeBenchmark>> & {date?: string};

const dir = await mkdtemp(join(tmpdir(), 'strongdoge-speculative-bench-'));
try {
    const only = process.env.BENCH_PARTS?.split(',');
    // Some parts only (BENCH_PARTS=pipeline or single): the others keep their earlier results.
    const earlier = only === undefined ? undefined
        : JSON.parse(await readFile(reportFile('speculative'), 'utf8').catch(() => '{}')) as {results?: {pipeline?: Pipeline, singleNode?: SingleNode}};
    const pipeline = only === undefined || only.includes('pipeline') ? await pipelineBenchmark(dir) : earlier?.results?.pipeline;
    const singleNode = only === undefined || only.includes('single') ? await singleNodeBenchmark(dir) : earlier?.results?.singleNode;
    const report = {
        benchmark: 'speculative decoding: a 3-stage pipeline at 0–50 ms RTT with drafts that always, mostly and never agree and with lookup, against no speculation; one node with a draft model against llama-server --model-draft; lookup on a text to repeat',
        date: new Date().toISOString(),
        machine: machine(),
        settings: {threads: THREADS, parallel: 1, contextSize: CONTEXT, temperature: 0, byteTokensBanned: true, repeats: REPEATS,
            pipelineTokens: PIPELINE_TOKENS, singleNodeTokens: SINGLE_TOKENS, lookupTokens: LOOKUP_TOKENS, draftTokens: 'the engine\'s defaults (adaptive, 0..12)'},
        targets: {
            pipelineAt50msAlwaysAgreesOverOff: '>= 3',
            pipelineAt50msNeverAgreesOverOff: '>= 0.95',
            singleNodeDraftOverLlamaServerDraft: '>= 0.95'
        },
        results: {pipeline, singleNode}
    };
    await writeReport('speculative', report, {
        pipeline: pipeline?.byRtt.map((entry) => ({rttMs: entry.nominalRttMs, ...Object.fromEntries(Object.entries(entry.cases).map(([name, result]) => [name, {
            tokensPerSecond: result.generationTokensPerSecond, overOff: result.overOffTokensPerSecond,
            acceptance: result.speculation?.acceptance ?? null, tokensPerPass: result.speculation?.tokensPerPass ?? null
        }]))})),
        singleNode: singleNode === undefined ? undefined : {ratios: singleNode.draftModel.ratios, lookup: singleNode.lookup}
    });
} finally {
    await rm(dir, {recursive: true, force: true});
}
