/**
 * Speculative decoding in the engine (docs/architecture.md, "Speculative decoding"), with the real node-llama-cpp
 * and generated models whose drafts agree always (the target itself), mostly (its own first layers) or never
 * (another seed's): the text at temperature 0 is the text without speculation, and at temperature 1 the tokens keep
 * the target's distribution.
 */
import test from 'ava';
import {getLlama, type Llama} from 'node-llama-cpp';
import type {GenerationRequest, GenerationResult, SamplingOptions} from '../core/inference-types.js';
import {describeDemoModel, writeDemoModel} from '../engine/demo/demo-model.js';
import type {WorkerSettings} from '../engine/engine-settings.js';
import {writeGgufFile} from '../engine/gguf/gguf-writer.js';
import {ModelRuntime} from '../engine/worker/model-runtime.js';
import {repeatedPrompt} from '../harness/generation-requests.js';
import {writeSpeculationModels} from '../harness/speculation-models.js';

let llama: Llama;
let models: Awaited<ReturnType<typeof writeSpeculationModels>>;
const runtimes = new Map<string, ModelRuntime>();

type Drafter = 'off' | 'lookup' | 'selfDraft' | 'draft' | 'otherDraft';
/**
 * `target`: the model whose first layers (`draft`) mostly agree with it; `plain`: the demo model, whose greedy text
 * met no near-tie between batched and single-token kernels in these tests' runs (README, "Speculative decoding").
 */
type Target = 'target' | 'plain';
let plainPath: string;

/** One runtime per target, drafter and drafting floor, loaded once. */
async function runtime(drafter: Drafter, minDraft = 0, target: Target = 'target') {
    const key = `${target}/${drafter}/${minDraft}`;
    let loaded = runtimes.get(key);
    if (loaded === undefined) {
        const settings: WorkerSettings = {
            models: [], threads: 1, parallelSequences: 4, contextSize: 2048, gpu: false,
            speculative: drafter === 'off' ? 'off' : drafter === 'lookup' ? 'lookup' : 'draft',
            draftTokens: {min: minDraft}
        };
        const path = target === 'plain' ? plainPath : models.target;
        const draft = drafter === 'off' || drafter === 'lookup' ? undefined : {path: drafter === 'selfDraft' ? path : models[drafter]};
        loaded = await ModelRuntime.load(llama, {id: 'demo', path, ...(draft !== undefined && {draft})}, settings, () => undefined);
        runtimes.set(key, loaded);
    }
    return loaded;
}

test.before(async () => {
    models = await writeSpeculationModels();
    plainPath = `${models.dir}/plain.gguf`;
    await writeDemoModel(plainPath, {endsText: false});
    llama = await getLlama({gpu: false, build: 'never'});
});

test.after.always(async () => {
    for (const loaded of runtimes.values())
        await loaded.dispose();
    await models?.cleanup();
});

function completion(prompt: string, maxTokens: number, extra: Partial<SamplingOptions> = {}): GenerationRequest {
    return {kind: 'completion', model: 'demo', prompt, sampling: {temperature: 0, stop: [], maxTokens, responseFormat: {type: 'text'}, ...extra}};
}

async function generate(loaded: ModelRuntime, request: GenerationRequest) {
    const streamed: string[] = [];
    const result: GenerationResult = await loaded.generate(request, {signal: new AbortController().signal, onText: (text) => streamed.push(text)});
    return {...result, streamed: streamed.join('')};
}

const PROMPT = 'The doge said';

test.serial('temperature 0: each drafter gives the text without speculation; a draft that always agrees is always kept', async (t) => {
    for (const [drafter, target] of [['lookup', 'plain'], ['selfDraft', 'plain'], ['otherDraft', 'plain'], ['draft', 'target']] as const) {
        const plain = await generate(await runtime('off', 0, target), completion(PROMPT, 160));
        t.is(plain.speculation, undefined);
        const result = await generate(await runtime(drafter, drafter === 'lookup' ? 0 : 3, target), completion(PROMPT, 160));
        t.is(result.text, plain.text, drafter);
        t.is(result.streamed, result.text, `${drafter}: the stream spells the answer`);
        t.is(result.usage.completionTokens, 160);
        const counts = result.speculation!;
        t.is(counts.drafter, drafter === 'lookup' ? 'lookup' : 'draft');
        t.is(counts.tokens, 160);
        t.true(counts.accepted <= counts.drafted);
        if (drafter === 'selfDraft') {
            t.true(counts.drafted >= 100, `${counts.drafted} drafted`);
            t.is(counts.accepted, counts.drafted, 'the target agrees with itself');
            t.true(counts.tokens / counts.passes > 3, `${counts.tokens / counts.passes} tokens per pass`);
        }
        if (drafter === 'otherDraft')
            t.true(counts.accepted <= counts.drafted * 0.1, `another model's drafts: ${counts.accepted} of ${counts.drafted} kept`);
        if (drafter === 'draft')
            t.true(counts.accepted > counts.drafted * 0.3 && counts.accepted < counts.drafted, `its own first layers: ${counts.accepted} of ${counts.drafted} kept`);
    }
});

test.serial('temperature 0, chat: concurrent speculating requests equal the same requests alone and the text without speculation', async (t) => {
    const chat = (content: string): GenerationRequest => ({kind: 'chat', model: 'demo', messages: [{role: 'user', content}],
        sampling: {temperature: 0, stop: [], maxTokens: 64, responseFormat: {type: 'text'}}});
    const prompts = ['Such wow', 'The doge said', 'Many peers make light work', 'Layers and tokens'];
    const plain = [];
    for (const prompt of prompts)
        plain.push((await generate(await runtime('off', 0, 'plain'), chat(prompt))).text);
    const loaded = await runtime('selfDraft', 3, 'plain');
    const together = await Promise.all(prompts.map(async (prompt) => (await generate(loaded, chat(prompt))).text));
    t.deepEqual(together, plain);
});

test.serial('grammars (not drafted for), stop sequences, logprobs and the token budget behave as without speculation', async (t) => {
    const plain = await runtime('off');
    const speculating = await runtime('selfDraft', 4);
    const schema = {type: 'object', properties: {name: {type: 'string', maxLength: 12}, wow: {type: 'integer'}}, required: ['name', 'wow']};
    const cases: [string, GenerationRequest][] = [
        ['json_schema', completion('{"name":', 120, {responseFormat: {type: 'json_schema', schema}})],
        ['stop', completion(PROMPT, 120, {stop: ['e w', 'doge']})],
        ['logprobs', completion(PROMPT, 40, {logprobs: 3})],
        ['budget', completion(PROMPT, 37)]
    ];
    for (const [name, request] of cases) {
        const expected = await generate(plain, request);
        const actual = await generate(speculating, request);
        t.is(actual.text, expected.text, name);
        t.is(actual.finishReason, expected.finishReason, name);
        t.is(actual.usage.completionTokens, expected.usage.completionTokens, name);
        t.is(actual.stopSequence, expected.stopSequence, name);
        if (name === 'json_schema')
            t.is(actual.speculation, undefined, 'a grammar\'s tokens are not drafted: the request does not speculate');
        else
            t.true((actual.speculation?.drafted ?? 0) > 0, `${name}: it speculated`);
        if (name === 'json_schema' && actual.finishReason === 'stop')
            t.notThrows(() => JSON.parse(actual.text));
        if (name === 'logprobs') {
            t.deepEqual(actual.logprobs!.map((entry) => entry.token), expected.logprobs!.map((entry) => entry.token));
            for (const [index, entry] of actual.logprobs!.entries()) {
                // A drafted token's distribution comes from a batched pass: equal up to the kernels' rounding (F16 activations).
                t.true(Math.abs(entry.logprob - expected.logprobs![index]!.logprob) < 0.01, `token ${index}: ${entry.logprob} vs ${expected.logprobs![index]!.logprob}`);
                t.deepEqual(entry.top.map((alternative) => alternative.token), expected.logprobs![index]!.top.map((alternative) => alternative.token));
            }
        }
    }
    t.is((await generate(speculating, completion(PROMPT, 37))).usage.completionTokens, 37);
});

test.serial('a long prompt: the draft model reads it a chunk per step, and drafts once it has, beside a running stream', async (t) => {
    const plain = await runtime('off', 0, 'plain');
    const speculating = await runtime('selfDraft', 2, 'plain');
    // About 1,300 tokens: ten of the draft model's 128-token chunks.
    const long = completion(repeatedPrompt(100), 48);
    const short = completion(PROMPT, 96);
    const [expectedLong, expectedShort] = [await generate(plain, long), await generate(plain, short)];
    const [actualLong, actualShort] = await Promise.all([generate(speculating, long), generate(speculating, short)]);
    t.is(actualLong.text, expectedLong.text);
    t.is(actualShort.text, expectedShort.text);
    t.true(actualLong.speculation!.drafted > 0, JSON.stringify(actualLong.speculation));
    t.is(actualLong.speculation!.accepted, actualLong.speculation!.drafted);
});

test.serial('a penalised request does not speculate (penalties depend on the text before each token), and says what it says without', async (t) => {
    const request = completion(PROMPT, 60, {frequencyPenalty: 0.5, presencePenalty: 0.3});
    const expected = await generate(await runtime('off'), request);
    const actual = await generate(await runtime('selfDraft', 4), request);
    t.is(actual.text, expected.text);
    t.is(actual.speculation, undefined);
});

test.serial('a draft model of another vocabulary is refused at load, naming the difference', async (t) => {
    const {metadata, tensors} = describeDemoModel({layers: 2});
    const tokens = [...(metadata['tokenizer.ggml.tokens']!.value as string[])];
    tokens[300] = `${tokens[300]}x`;
    const path = `${models.dir}/foreign-draft.gguf`;
    await writeGgufFile(path, {metadata: {...metadata, 'tokenizer.ggml.tokens': {type: 'string[]', value: tokens}}, tensors});
    const error = await t.throwsAsync(ModelRuntime.load(llama, {id: 'demo', path: models.target, draft: {path}},
        {models: [], threads: 1, parallelSequences: 1, contextSize: 512, gpu: false, speculative: 'draft'}, () => undefined));
    t.regex(error!.message, /cannot draft for .*token 300 is/);
});

/** Pearson's chi-squared statistic of two samples' category counts (homogeneity), with rare categories pooled. */
function chiSquared(a: Map<number, number>, b: Map<number, number>) {
    const totalA = [...a.values()].reduce((sum, count) => sum + count, 0);
    const totalB = [...b.values()].reduce((sum, count) => sum + count, 0);
    const pooled: [number, number][] = [];
    let rest: [number, number] = [0, 0];
    for (const category of new Set([...a.keys(), ...b.keys()])) {
        const counts: [number, number] = [a.get(category) ?? 0, b.get(category) ?? 0];
        if (counts[0] + counts[1] < 10)
            rest = [rest[0] + counts[0], rest[1] + counts[1]];
        else
            pooled.push(counts);
    }
    if (rest[0] + rest[1] > 0)
        pooled.push(rest);
    let statistic = 0;
    for (const [countA, countB] of pooled) {
        const share = (countA + countB) / (totalA + totalB);
        statistic += (countA - share * totalA) ** 2 / (share * totalA) + (countB - share * totalB) ** 2 / (share * totalB);
    }
    return {statistic, degrees: pooled.length - 1};
}

/** The chi-squared distribution's upper quantile (Wilson–Hilferty), e.g. p = 1e-4. */
function chiSquaredQuantile(degrees: number, z: number) {
    const ratio = 2 / (9 * degrees);
    return degrees * (1 - ratio + z * Math.sqrt(ratio)) ** 3;
}

test.serial('temperature 1: the tokens after kept drafts have the target\'s distribution (chi-squared against runs without speculation)', async (t) => {
    const RUNS = 300;
    const POSITIONS = 4;
    const sample = async (loaded: ModelRuntime, seedBase: number) => {
        const counts = Array.from({length: POSITIONS}, () => new Map<number, number>());
        let drafted = 0;
        let accepted = 0;
        for (let batch = 0; batch < RUNS; batch += 4) {
            const results = await Promise.all([0, 1, 2, 3].map(async (offset) => {
                const tokens: number[] = [];
                const result = await loaded.generate(completion(PROMPT, POSITIONS, {temperature: 1, topK: 6, seed: seedBase + batch + offset}),
                    {signal: new AbortController().signal, onText: (_text, chunk) => tokens.push(...chunk)});
                return {result, tokens};
            }));
            for (const {result, tokens} of results) {
                drafted += result.speculation?.drafted ?? 0;
                accepted += result.speculation?.accepted ?? 0;
                for (const [position, token] of tokens.slice(0, POSITIONS).entries())
                    counts[position]!.set(token, (counts[position]!.get(token) ?? 0) + 1);
            }
        }
        return {counts, drafted, accepted};
    };
    const plain = await sample(await runtime('off'), 1_000_000);
    const speculating = await sample(await runtime('selfDraft', 3), 2_000_000);
    t.true(speculating.accepted > RUNS / 2, `drafts were kept (${speculating.accepted} of ${speculating.drafted}): positions after them are tested`);
    for (let position = 0; position < POSITIONS; position++) {
        const {statistic, degrees} = chiSquared(plain.counts[position]!, speculating.counts[position]!);
        const bound = chiSquaredQuantile(degrees, 3.72); // p = 1e-4 per position
        t.log(`position ${position}: chi-squared ${statistic.toFixed(1)} on ${degrees} degrees, bound ${bound.toFixed(1)}`);
        t.true(degrees >= 2, 'several tokens are likely at this position');
        t.true(statistic < bound, `position ${position}: ${statistic.toFixed(1)} ≥ ${bound.toFixed(1)}`);
    }
});
