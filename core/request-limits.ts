import type {GenerationRequest} from './inference-types.js';
import {schemaProblem} from './json-schema/structured-output.js';

/**
 * Bounds on what a request may carry before it reaches an engine, checked where a request enters (the HTTP API, a
 * peer's job): nested structures travel to the engine process by structured clone, whose recursion a deep enough
 * value overflows, and a grammar is built from the whole schema. Pure, so every limit is tested.
 */

/** Deepest nesting of a `json_schema` (objects and arrays); real schemas stay far below. */
export const MAX_SCHEMA_DEPTH = 64;
/** Largest `json_schema`, as JSON. */
export const MAX_SCHEMA_BYTES = 256 * 1024;

/** How deep `value` nests, counting only to `limit + 1` and without recursion (a hostile value may nest 100,000 deep). */
export function nestingDepth(value: unknown, limit: number): number {
    let deepest = 0;
    const stack: [unknown, number][] = [[value, 0]];
    while (stack.length > 0) {
        const [item, depth] = stack.pop()!;
        if (item === null || typeof item !== 'object')
            continue;
        const here = depth + 1;
        deepest = Math.max(deepest, here);
        if (deepest > limit)
            return deepest;
        for (const child of Array.isArray(item) ? item : Object.values(item))
            stack.push([child, here]);
    }
    return deepest;
}

export interface LimitViolation {
    /** The request parameter at fault, as the client names it. */
    param: string,
    message: string
}

/** Most alternatives per token (`top_logprobs`, completions' `logprobs`), as OpenAI's chat allows. */
export const MAX_TOP_LOGPROBS = 20;
/** Most tools per request, as OpenAI allows. */
export const MAX_TOOLS = 128;

/** Why a schema the client sent cannot be used, or undefined; `label` names it as the client does. */
function schemaViolation(schema: Record<string, unknown>, param: string, label: string): LimitViolation | undefined {
    const depth = nestingDepth(schema, MAX_SCHEMA_DEPTH);
    if (depth > MAX_SCHEMA_DEPTH)
        return {param, message: `${label} nests deeper than the ${MAX_SCHEMA_DEPTH} levels allowed`};
    const bytes = Buffer.byteLength(JSON.stringify(schema));
    if (bytes > MAX_SCHEMA_BYTES)
        return {param, message: `${label} is ${bytes} bytes, over the ${MAX_SCHEMA_BYTES} allowed`};
    const problem = schemaProblem(schema, label);
    return problem === undefined ? undefined : {param, message: problem};
}

/**
 * The first limit a request breaks, or undefined. A JSON schema (the response format's, a tool's parameters) must
 * also be one the grammar can hold to; tools must have names of their own, and a chosen tool must be offered.
 */
export function requestLimitViolation(request: GenerationRequest): LimitViolation | undefined {
    const format = request.sampling.responseFormat;
    if (format.type === 'json_schema') {
        const violation = schemaViolation(format.schema, 'response_format', 'response_format.json_schema');
        if (violation !== undefined)
            return violation;
    }
    const calling = request.kind === 'chat' ? request.tools : undefined;
    if (calling === undefined)
        return undefined;
    if (calling.tools.length > MAX_TOOLS)
        return {param: 'tools', message: `${calling.tools.length} tools, over the ${MAX_TOOLS} allowed`};
    const names = new Set<string>();
    for (const [index, tool] of calling.tools.entries()) {
        if (names.has(tool.name))
            return {param: `tools.${index}.function.name`, message: `two tools are named '${tool.name}'`};
        names.add(tool.name);
        if (tool.parameters === undefined)
            continue;
        const param = `tools.${index}.function.parameters`;
        // Arguments are an object, as OpenAI defines them.
        if (tool.parameters.type !== 'object')
            return {param, message: `${param} must be a schema of type 'object'`};
        const violation = schemaViolation(tool.parameters, param, param);
        if (violation !== undefined)
            return violation;
    }
    const {choice} = calling;
    if (typeof choice === 'object' && !names.has(choice.name))
        return {param: 'tool_choice', message: `tool_choice names the function '${choice.name}', which is not among the tools`};
    return undefined;
}
