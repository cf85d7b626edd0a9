import test from 'ava';
import type {ToolCall, ToolDefinition} from '../core/inference-types.js';
import {
    jsonValueEnd, NO_PARAMETERS, parseToolCalls, toolCallGrammar, toolCallGrammarRules, toolCallProblem, type ToolCallSyntax
} from '../core/tool-calls/tool-call-syntax.js';
import {grammarRegExp} from '../harness/grammar-regexp.js';

/** The grammar that holds tool calls, and the parser that reads them back: pure, checked against each other. */

/** Qwen 2.5's syntax, as node-llama-cpp reads it from the demo model's template. */
const qwen: ToolCallSyntax = {open: '<tool_call>\n{"name": "', paramsPrefix: '", "arguments": ', suffix: '}\n</tool_call>', next: '\n<tool_call>\n{"name": "'};
/** Llama 3.1's: the name inside the tags, one call per turn. */
const llama31: ToolCallSyntax = {open: '<function=', paramsPrefix: '>', suffix: '</function>'};
/** A syntax that repeats the name in its suffix. */
const named: ToolCallSyntax = {open: '[', paramsPrefix: '(', suffix: ')/{{functionName}}]', next: ', ['};

const tools: ToolDefinition[] = [
    {name: 'get', parameters: {type: 'object', properties: {n: {type: 'integer', minimum: 0, maximum: 99}}, required: ['n'], additionalProperties: false}},
    {name: 'get_weather', parameters: {
        type: 'object',
        properties: {city: {type: 'string', maxLength: 8}, unit: {enum: ['c', 'f']}},
        required: ['city'],
        additionalProperties: false
    }},
    {name: 'now'}
];

/** What a model writes for these calls after `open`. */
function written(syntax: ToolCallSyntax, calls: ToolCall[], continuing = false) {
    return calls.map((call, index) => `${index > 0 || continuing ? syntax.next : ''}${call.name}${syntax.paramsPrefix.replaceAll('{{functionName}}', call.name)}` +
        `${call.arguments}${syntax.suffix.replaceAll('{{functionName}}', call.name)}`).join('');
}

function accepts(syntax: ToolCallSyntax, text: string, options: Parameters<typeof toolCallGrammarRules>[2] = {}) {
    const rules = toolCallGrammarRules(syntax, tools, options)!;
    return grammarRegExp(rules.get('root')!, rules, 6).test(text);
}

/** A small deterministic generator, so failures reproduce. */
function random(seed: number) {
    let state = seed;
    return () => {
        state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
        return state / 2 ** 31;
    };
}

/** Strings that look like the syntax: the parser must not take them for it. */
const TRICKY = ['}', '"', '\\', '</tool_call>', ')/get]', '{', ']', 'é', '😀', ' ', ''];

function randomCall(next: () => number): ToolCall {
    const pick = <T>(items: readonly T[]) => items[Math.floor(next() * items.length)]!;
    switch (pick(['get', 'get_weather', 'now'])) {
        case 'get':
            return {name: 'get', arguments: JSON.stringify({n: Math.floor(next() * 100)})};
        case 'get_weather': {
            const city = [...Array.from({length: 3}, () => pick(TRICKY)).join('')].slice(0, 8).join('');
            return {name: 'get_weather', arguments: JSON.stringify(next() < 0.5 ? {city} : {city, unit: pick(['c', 'f'])})};
        }
        default:
            return {name: 'now', arguments: '{}'};
    }
}

test('random calls: the grammar accepts what a model writes for them, and the parser reads back exactly those calls', (t) => {
    const next = random(7);
    for (const syntax of [qwen, named]) {
        for (let round = 0; round < 300; round++) {
            const calls = Array.from({length: 1 + Math.floor(next() * 3)}, () => randomCall(next));
            const text = written(syntax, calls);
            t.true(accepts(syntax, text, {parallel: true}), text);
            t.is(accepts(syntax, text), calls.length === 1, 'without parallel calls, one call only');
            t.deepEqual(parseToolCalls(text, syntax, tools.map((tool) => tool.name)), {calls, length: text.length});
            // Every proper prefix is a call being written: only the calls whole in it come back.
            const cut = Math.floor(next() * text.length);
            const parsed = parseToolCalls(text.slice(0, cut), syntax, tools.map((tool) => tool.name));
            t.deepEqual(parsed.calls, calls.slice(0, parsed.calls.length));
            t.true(parsed.length <= cut);
            t.is(parsed.calls.length, calls.filter((_, index) => written(syntax, calls.slice(0, index + 1)).length <= cut).length);
        }
    }
});

test('the grammar refuses calls that break the syntax or a schema', (t) => {
    for (const text of [
        'get", "arguments": {"n": 100}}\n</tool_call>', // over the maximum
        'get", "arguments": {"n": 1.5}}\n</tool_call>', // not an integer
        'get", "arguments": {}}\n</tool_call>', // n required
        'get_weather", "arguments": {"city": "Amsterdam!"}}\n</tool_call>', // 10 characters, 8 at most
        'get_weather", "arguments": {"city": "x", "wind": 1}}\n</tool_call>', // no other properties
        'now", "arguments": {"a": 1}}\n</tool_call>', // a function without parameters takes none
        'delete", "arguments": {}}\n</tool_call>', // not offered
        'now", "arguments": {}}</tool_call>' // the suffix as the template writes it
    ])
        t.false(accepts(qwen, text, {parallel: true}), text);
    t.true(accepts(qwen, 'now", "arguments": {}}\n</tool_call>'));
});

test('after a resumed answer\'s calls: only further calls, each opened by the syntax; none when calls are not parallel', (t) => {
    const calls = [{name: 'now', arguments: '{}'}, {name: 'get', arguments: '{"n": 3}'}];
    const text = written(qwen, calls, true);
    t.true(accepts(qwen, text, {parallel: true, afterCalls: true}));
    t.true(accepts(qwen, '', {parallel: true, afterCalls: true}));
    t.deepEqual(parseToolCalls(text, qwen, ['now', 'get'], {continuing: true}).calls, calls);
    t.is(toolCallGrammar(qwen, tools, {afterCalls: true}), undefined);
    t.is(toolCallGrammar(llama31, tools, {parallel: true, afterCalls: true}), undefined, 'a syntax without parallel calls');
});

test('a name that begins another is told apart by what follows it', (t) => {
    const text = written(qwen, [{name: 'get_weather', arguments: '{"city": "get"}'}, {name: 'get', arguments: '{"n": 1}'}]);
    t.deepEqual(parseToolCalls(text, qwen, ['get', 'get_weather']).calls.map((call) => call.name), ['get_weather', 'get']);
});

test('GBNF: one grammar for every function, their rules apart, the shared JSON rules once', (t) => {
    const gbnf = toolCallGrammar(qwen, tools, {parallel: true})!;
    t.regex(gbnf, /^root ::= call \("\\x0a<tool_call>/);
    t.regex(gbnf, /^f0-root ::= /m);
    t.regex(gbnf, /^f1-root ::= /m);
    t.regex(gbnf, /^f2-root ::= "\{" ws "\}"$/m);
    t.is(gbnf.match(/^ws ::= /gm)?.length, 1);
    t.is(gbnf.match(/^char ::= /gm)?.length, 1);
});

test('jsonValueEnd: the end of an object or array, strings and escapes skipped; undefined while unfinished', (t) => {
    t.is(jsonValueEnd('{"a": "}"} tail', 0), 10);
    t.is(jsonValueEnd('x[1, [2], {"b": "\\"]"}]', 1), 23);
    t.is(jsonValueEnd('{"a": "\\\\"}', 0), 11);
    t.is(jsonValueEnd('{"a": [1, 2}', 0), undefined);
    t.is(jsonValueEnd('{"a": "}', 0), undefined);
    t.is(jsonValueEnd('"text"', 0), undefined);
});

test('toolCallProblem: a function not offered, or arguments its schema refuses', (t) => {
    t.is(toolCallProblem(tools, {name: 'get', arguments: '{"n": 5}'}), undefined);
    t.regex(toolCallProblem(tools, {name: 'rm', arguments: '{}'})!, /not among the tools/);
    t.regex(toolCallProblem(tools, {name: 'get', arguments: '{"n": 500}'})!, /arguments of 'get'.*must be <= 99/);
    t.regex(toolCallProblem(tools, {name: 'get', arguments: '{"n":'})!, /not JSON/);
    t.regex(toolCallProblem(tools, {name: 'now', arguments: '{"x": 1}'})!, /additional properties/);
    t.deepEqual(NO_PARAMETERS, {type: 'object', properties: {}, additionalProperties: false});
});
