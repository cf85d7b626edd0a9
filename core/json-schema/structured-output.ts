import {LRUCache} from 'lru-cache';
import {Ajv2020, type ValidateFunction} from './ajv.js';
import {schemaGrammarRules, SchemaGrammarError} from './schema-grammar.js';

/**
 * A client's JSON schema, checked before any work and held to after it (docs/architecture.md, "Structured output").
 */

// `format` is an annotation, as JSON Schema 2020-12 says by default; `strict: false` accepts keywords of other
// vocabularies (OpenAI's `strict`, draft-07's `definitions`).
const ajv = new Ajv2020({strict: false, validateFormats: false, allErrors: false});

/**
 * Compiled validators by schema text: clients send the same schema with every request, so the least recently used
 * one is dropped when a new schema needs room.
 */
export const MAX_CACHED_SCHEMAS = 64;
const validators = new LRUCache<string, ValidateFunction>({max: MAX_CACHED_SCHEMAS});

function withoutDialect(schema: Record<string, unknown>) {
    // Every dialect is read as 2020-12: a `$schema` naming draft-07 would make ajv look for that meta-schema.
    const {$schema: _dialect, ...rest} = schema;
    return rest;
}

/** The compiled validator for a schema, from the cache when the same schema was compiled lately. Throws what ajv throws. */
export function validatorFor(schema: Record<string, unknown>): ValidateFunction {
    const key = JSON.stringify(schema);
    const cached = validators.get(key);
    if (cached !== undefined)
        return cached;
    const validate = ajv.compile(withoutDialect(schema));
    // Compiled schemas stay in ajv's own cache otherwise: this one decides what is kept.
    ajv.removeSchema(validate.schema as object);
    validators.set(key, validate);
    return validate;
}

/**
 * Why a schema cannot be used for structured output, naming the keyword when one is at fault; undefined when it
 * can. `label`: where the client put the schema. Defaults to `response_format.json_schema`.
 */
export function schemaProblem(schema: Record<string, unknown>, label = 'response_format.json_schema'): string | undefined {
    const grammarProblem = () => {
        try {
            schemaGrammarRules(schema);
            return undefined;
        } catch (error) {
            if (error instanceof SchemaGrammarError)
                return `${label}: ${error.message}`;
            throw error;
        }
    };
    try {
        validatorFor(schema);
    } catch (error) {
        // ajv recurses through references that lead only to references; the grammar names the loop.
        if (error instanceof RangeError)
            return grammarProblem() ?? `${label} cannot be compiled: ${error.message}`;
        return `${label} is not a valid JSON Schema: ${(error as Error).message.replace(/^schema is invalid: /, '')}`;
    }
    return grammarProblem();
}

/** Why `text` is not an instance of the schema; undefined when it is. */
export function replyProblem(schema: Record<string, unknown>, text: string): string | undefined {
    let value: unknown;
    try {
        value = JSON.parse(text);
    } catch {
        return 'the reply is not JSON';
    }
    const validate = validatorFor(schema);
    if (validate(value))
        return undefined;
    const [first] = validate.errors ?? [];
    return `the reply does not match the schema: ${first ? `${first.instancePath || '/'} ${first.message}` : 'invalid'}`;
}
