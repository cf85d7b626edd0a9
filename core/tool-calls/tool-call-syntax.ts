import {choice, literal, renameRules, repeat, rule, rulesToGbnf, sequence, type GrammarNode} from '../json-schema/grammar-node.js';
import {schemaGrammarRules} from '../json-schema/schema-grammar.js';
import {replyProblem} from '../json-schema/structured-output.js';
import type {ToolCall, ToolDefinition} from '../inference-types.js';

/**
 * How a model writes tool calls, as its chat template says (node-llama-cpp reads it from the template): the text
 * around each call, as plain text. Pure: the grammar that holds a model to it and the parser that reads calls back
 * (docs/architecture.md, "Tool calling").
 */
export interface ToolCallSyntax {
    /** Opens the first call of a turn, up to the function's name (`<tool_call>\n{"name": "`). */
    open: string,
    /** Between the name and the arguments; `{{functionName}}` stands for the name. */
    paramsPrefix: string,
    /** Closes a call; `{{functionName}}` stands for the name. */
    suffix: string,
    /** Opens every further call of a turn (what goes between calls, then a call's prefix); undefined: one call per turn. */
    next?: string
}

/** The arguments of a function that declares no parameters: an empty object, as OpenAI reads it. */
export const NO_PARAMETERS: Record<string, unknown> = {type: 'object', properties: {}, additionalProperties: false};

/** Rules the JSON grammars share; every other rule of a function's arguments is renamed to that function. */
const SHARED_RULES = new Set(['ws', 'char', 'value']);

const withName = (text: string, name: string) => text.replaceAll('{{functionName}}', name);

export interface ToolCallGrammarOptions {
    /** More than one call may follow the first. Defaults to `false`. */
    parallel?: boolean,
    /**
     * The turn already holds calls (a resumed answer): the grammar writes only further calls, each after `next`.
     * Defaults to `false`.
     */
    afterCalls?: boolean
}

/**
 * The grammar of what follows `open`: a function's name, its arguments (an instance of its parameter schema) and
 * the suffix, then more calls when parallel; its rules, `root` first. Undefined when nothing may follow (a single
 * call already made). The schemas were checked (`requestLimitViolation`), so building their grammars does not throw.
 */
export function toolCallGrammarRules(syntax: ToolCallSyntax, tools: readonly ToolDefinition[], options: ToolCallGrammarOptions = {}):
    Map<string, GrammarNode> | undefined {
    const parallel = options.parallel === true && syntax.next !== undefined;
    if (options.afterCalls === true && !parallel)
        return undefined;
    const rules = new Map<string, GrammarNode>();
    const calls = tools.map((tool, index) => {
        const prefix = `f${index}-`;
        for (const [name, node] of schemaGrammarRules(tool.parameters ?? NO_PARAMETERS)) {
            const renamed = renameRules(node, (ruleName) => SHARED_RULES.has(ruleName) ? ruleName : prefix + ruleName);
            rules.set(SHARED_RULES.has(name) ? name : prefix + name, renamed);
        }
        return sequence(literal(tool.name), literal(withName(syntax.paramsPrefix, tool.name)), rule(`${prefix}root`),
            literal(withName(syntax.suffix, tool.name)));
    });
    rules.set('call', choice(...calls));
    const next = sequence(literal(syntax.next ?? ''), rule('call'));
    if (options.afterCalls === true)
        rules.set('root', repeat(next, 0, null));
    else
        rules.set('root', parallel ? sequence(rule('call'), repeat(next, 0, null)) : rule('call'));
    return rules;
}

/** `toolCallGrammarRules` in GBNF, as llama.cpp takes it. */
export function toolCallGrammar(syntax: ToolCallSyntax, tools: readonly ToolDefinition[], options: ToolCallGrammarOptions = {}): string | undefined {
    const rules = toolCallGrammarRules(syntax, tools, options);
    return rules === undefined ? undefined : rulesToGbnf(rules);
}

export interface ParsedToolCalls {
    /** Whole calls, in order. */
    calls: ToolCall[],
    /** Characters of the text the whole calls take (what follows is a call being written). */
    length: number
}

/**
 * The whole calls in `text`, the turn's text from just after the first `open`, as `toolCallGrammar` writes it, or
 * with `continuing` the text after whole calls (each call then starts with `next`). A call still
 * being written is not returned.
 */
export function parseToolCalls(text: string, syntax: ToolCallSyntax, names: readonly string[], {continuing = false} = {}): ParsedToolCalls {
    const calls: ToolCall[] = [];
    let position = 0;
    // Longest names first: one name may begin another.
    const byLength = [...names].sort((a, b) => b.length - a.length);
    for (;;) {
        let at = position;
        if (continuing || calls.length > 0) {
            const separator = syntax.next;
            if (separator === undefined || !text.startsWith(separator, at))
                break;
            at += separator.length;
        }
        const name = byLength.find((candidate) => text.startsWith(candidate + withName(syntax.paramsPrefix, candidate), at));
        if (name === undefined)
            break;
        at += name.length + withName(syntax.paramsPrefix, name).length;
        const end = jsonValueEnd(text, at);
        const suffix = withName(syntax.suffix, name);
        if (end === undefined || !text.startsWith(suffix, end))
            break;
        calls.push({name, arguments: text.slice(at, end)});
        position = end + suffix.length;
    }
    return {calls, length: position};
}

/** Where the JSON object or array starting at `start` ends; undefined when it does not end in `text`. */
export function jsonValueEnd(text: string, start: number): number | undefined {
    if (text[start] !== '{' && text[start] !== '[')
        return undefined;
    let depth = 0;
    let inString = false;
    for (let index = start; index < text.length; index++) {
        const character = text[index];
        if (inString) {
            if (character === '\\')
                index++;
            else if (character === '"')
                inString = false;
        } else if (character === '"')
            inString = true;
        else if (character === '{' || character === '[')
            depth++;
        else if (character === '}' || character === ']') {
            depth--;
            if (depth === 0)
                return index + 1;
        }
    }
    return undefined;
}

/** Why `call` is not a call the request allows (a function not offered, arguments not matching its schema); undefined when it is. */
export function toolCallProblem(tools: readonly ToolDefinition[], call: ToolCall): string | undefined {
    const tool = tools.find((candidate) => candidate.name === call.name);
    if (tool === undefined)
        return `a call of '${call.name}', which is not among the tools`;
    const problem = replyProblem(tool.parameters ?? NO_PARAMETERS, call.arguments);
    return problem === undefined ? undefined : `the arguments of '${call.name}': ${problem.replace(/^the reply /, '')}`;
}
