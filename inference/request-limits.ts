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

/** The first limit a request breaks, or undefined; a JSON schema must also be one the grammar can hold to. */
export function requestLimitViolation(request: GenerationRequest): LimitViolation | undefined {
    const format = request.sampling.responseFormat;
    if (format.type !== 'json_schema')
        return undefined;
    const depth = nestingDepth(format.schema, MAX_SCHEMA_DEPTH);
    if (depth > MAX_SCHEMA_DEPTH)
        return {param: 'response_format', message: `response_format.json_schema nests deeper than the ${MAX_SCHEMA_DEPTH} levels allowed`};
    const bytes = Buffer.byteLength(JSON.stringify(format.schema));
    if (bytes > MAX_SCHEMA_BYTES)
        return {param: 'response_format', message: `response_format.json_schema is ${bytes} bytes, over the ${MAX_SCHEMA_BYTES} allowed`};
    const problem = schemaProblem(format.schema);
    return problem === undefined ? undefined : {param: 'response_format', message: problem};
}
