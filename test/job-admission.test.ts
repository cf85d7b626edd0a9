import test from 'ava';
import {jobProviderDefaults, jobRefusal, type JobSubmission} from '../inference/remote/jobs/job-admission.js';
import type {RefusalCode} from '../core/inference-error.js';

const sampling = {temperature: 0, stop: [], responseFormat: {type: 'text' as const}};
const generate = (overrides: Partial<{prompt: string, maxTokens: number, model: string, jobId: string}> = {}): JobSubmission => ({
    type: 'generate',
    jobId: overrides.jobId ?? 'a'.repeat(32),
    request: {kind: 'completion', model: overrides.model ?? 'demo', prompt: overrides.prompt ?? 'hi',
        sampling: {...sampling, ...(overrides.maxTokens !== undefined && {maxTokens: overrides.maxTokens})}}
});
const idle = {activeJobIds: new Set<string>(), canServe: (model: string) => model === 'demo'};

test('a job within every limit is accepted', (t) => {
    t.is(jobRefusal(generate({maxTokens: 100}), jobProviderDefaults, idle), undefined);
    t.is(jobRefusal({type: 'embed', jobId: 'b'.repeat(32), model: 'demo', inputs: ['x']}, jobProviderDefaults, idle), undefined);
});

const refusals: [string, JobSubmission, Partial<typeof jobProviderDefaults>, typeof idle, RefusalCode, RegExp][] = [
    ['serving is off', generate(), {enabled: false}, idle, 'disabled', /does not serve peers/],
    ['the model is not loaded', generate({model: 'llama'}), {}, idle, 'model_unavailable', /model llama is not loaded/],
    ['all slots are busy', generate(), {maxConcurrentJobs: 2}, {...idle, activeJobIds: new Set(['x', 'y'])}, 'busy', /serving 2 peer jobs/],
    ['the prompt is too large', generate({prompt: 'x'.repeat(2000)}), {maxPromptBytes: 1000}, idle, 'limit', /prompt of 2000 bytes exceeds this node's 1000/],
    ['too many tokens asked', generate({maxTokens: 5000}), {}, idle, 'limit', /max_tokens 5000 exceeds this node's 4096/],
    ['a job id already running', generate({jobId: 'c'.repeat(32)}), {}, {...idle, activeJobIds: new Set(['c'.repeat(32)])}, 'limit', /duplicate/],
    ['a json_schema nested too deep', {type: 'generate', jobId: 'f'.repeat(32), request: {kind: 'completion', model: 'demo', prompt: 'hi', sampling: {
        ...sampling, responseFormat: {type: 'json_schema', schema: JSON.parse('{"type":"object","properties":{"a":'.repeat(70) + '{"type":"string"}' + '}}'.repeat(70))}
    }}}, {}, idle, 'limit', /nests deeper than the 64 levels/],
    ['too many embedding inputs', {type: 'embed', jobId: 'e'.repeat(32), model: 'demo', inputs: Array.from({length: 2048}, () => 'x')}, {}, idle, 'limit', /2048 embedding inputs exceed this node's 64/],
    ['embedding inputs too large', {type: 'embed', jobId: 'd'.repeat(32), model: 'demo', inputs: ['x'.repeat(600), 'y'.repeat(600)]}, {maxPromptBytes: 1000}, idle, 'limit', /1200 bytes/]
];

for (const [name, message, limits, situation, code, reason] of refusals) {
    test(`refused politely when ${name}`, (t) => {
        const refusal = jobRefusal(message, {...jobProviderDefaults, ...limits}, situation);
        t.is(refusal?.[0], code);
        t.regex(refusal?.[1] ?? '', reason);
    });
}
