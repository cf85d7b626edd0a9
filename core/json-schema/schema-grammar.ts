import {charClass, choice, literal, optional, repeat, rule, rulesToGbnf, sequence, type GrammarNode} from './grammar-node.js';
import {integerBounds, integerRange, numberGrammar, type NumberBounds} from './number-ranges.js';

/**
 * A JSON Schema as a grammar that writes only instances of it (docs/architecture.md, "Structured output"). The
 * grammar writes a subset of the valid instances (properties in the schema's order, no properties the schema does
 * not name, numbers without exponents), never an invalid one; a keyword it cannot hold to is refused by name.
 */

/** A schema keyword the grammar cannot hold to, or a schema that allows nothing it can write. */
export class SchemaGrammarError extends Error {
    constructor(message: string, readonly keyword: string | null) {
        super(message);
        this.name = 'SchemaGrammarError';
    }
}

/** Keywords that only describe: they change nothing the grammar writes. `format` is an annotation in JSON Schema 2020-12. */
const ANNOTATIONS = new Set(['$schema', '$id', '$comment', '$anchor', 'title', 'description', 'default', 'examples', 'deprecated',
    'readOnly', 'writeOnly', 'format', 'contentMediaType', 'contentEncoding', '$defs', 'definitions', 'strict']);
const SUPPORTED = new Set(['type', 'enum', 'const', 'properties', 'required', 'additionalProperties', 'items', 'minItems', 'maxItems',
    'minLength', 'maxLength', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'anyOf', 'oneOf', 'allOf', '$ref']);
const TYPES = ['object', 'array', 'string', 'number', 'integer', 'boolean', 'null'] as const;
type JsonType = typeof TYPES[number];
type Schema = Record<string, unknown>;

/** Whitespace between tokens, bounded so that a model cannot pad forever. */
const WS = rule('ws');
const WS_RULE = optional(choice(literal(' '), sequence(literal('\n'), repeat(charClass(' \\t'), 0, 16))));
/**
 * One character of a JSON string, as JSON Schema counts characters (code points). Escapes of a UTF-16 surrogate
 * half are left out, since a pair of them is one character written as two; so are surrogate code points and
 * those past U+10FFFF, which llama.cpp's decoder takes from malformed bytes and a UTF-8 decoder turns into U+FFFD.
 */
const STRING_CHAR = choice(
    charClass('^"\\\\\\x00-\\x1f\\uD800-\\uDFFF\\U00110000-\\U001FFFFF'),
    sequence(literal('\\'), choice(charClass('"\\\\/bfnrt'), sequence(literal('u'), choice(
        sequence(charClass('0-9a-cA-C'), repeat(charClass('0-9a-fA-F'), 3, 3)),
        sequence(charClass('dD'), charClass('0-7'), repeat(charClass('0-9a-fA-F'), 2, 2)),
        sequence(charClass('e-fE-F'), repeat(charClass('0-9a-fA-F'), 3, 3))))))
);

class GrammarBuilder {
    readonly rules = new Map<string, GrammarNode>();
    private readonly refRules = new Map<string, string>();

    constructor(private readonly root: Schema | boolean) {
        this.rules.set('ws', WS_RULE);
        this.rules.set('char', STRING_CHAR);
    }

    build() {
        this.rules.set('root', this.value(this.root, ''));
        return this.rules;
    }

    private value(schema: unknown, path: string): GrammarNode {
        if (schema === true || (typeof schema === 'object' && schema !== null && Object.keys(schema).every((key) => ANNOTATIONS.has(key))))
            return this.anyValue();
        if (schema === false)
            throw new SchemaGrammarError(`${where(path)} is false: it allows no value`, null);
        if (typeof schema !== 'object' || schema === null || Array.isArray(schema))
            throw new SchemaGrammarError(`${where(path)} must be an object or a boolean`, null);
        const node = schema as Schema;
        for (const key of Object.keys(node))
            if (!ANNOTATIONS.has(key) && !SUPPORTED.has(key))
                throw new SchemaGrammarError(`the keyword '${key}' (${where(path)}) is not supported for structured output`, key);

        if (typeof node.$ref === 'string')
            return this.reference(node, path);
        if ('const' in node)
            return literal(JSON.stringify(node.const));
        if (Array.isArray(node.enum)) {
            if (node.enum.length === 0)
                throw new SchemaGrammarError(`${where(path)} has an empty enum: it allows no value`, 'enum');
            return choice(...node.enum.map((option) => literal(JSON.stringify(option))));
        }
        for (const keyword of ['anyOf', 'oneOf'] as const)
            if (Array.isArray(node[keyword]))
                return this.alternatives(node, keyword, path);
        if (Array.isArray(node.allOf)) {
            if (node.allOf.length !== 1 || Object.keys(node).some((key) => key !== 'allOf' && !ANNOTATIONS.has(key)))
                throw new SchemaGrammarError(`'allOf' with more than one schema (${where(path)}) is not supported for structured output`, 'allOf');
            return this.value(node.allOf[0], `${path}/allOf/0`);
        }

        const types = this.typesOf(node, path);
        return choice(...types.map((type) => this.typed(type, node, path)));
    }

    private typesOf(node: Schema, path: string): JsonType[] {
        const declared = node.type === undefined ? undefined : Array.isArray(node.type) ? node.type : [node.type];
        if (declared !== undefined) {
            const unknown = declared.find((type) => !TYPES.includes(type as JsonType));
            if (unknown !== undefined)
                throw new SchemaGrammarError(`${where(path)} has an unknown type ${JSON.stringify(unknown)}`, 'type');
            return declared as JsonType[];
        }
        // No type: the keywords present say which kinds of value they constrain.
        if (['properties', 'required', 'additionalProperties'].some((key) => key in node))
            return ['object'];
        if (['items', 'minItems', 'maxItems'].some((key) => key in node))
            return ['array'];
        if (['minLength', 'maxLength'].some((key) => key in node))
            return ['string'];
        return ['number'];
    }

    private typed(type: JsonType, node: Schema, path: string): GrammarNode {
        switch (type) {
            case 'null':
                return literal('null');
            case 'boolean':
                return choice(literal('true'), literal('false'));
            case 'integer': {
                const bounds = integerBounds(numberBounds(node));
                if (bounds === null)
                    throw new SchemaGrammarError(`${where(path)}: no integer lies within its bounds`, 'minimum');
                return integerRange(...bounds);
            }
            case 'number': {
                const grammar = numberGrammar(numberBounds(node));
                if (grammar === null)
                    throw new SchemaGrammarError(`${where(path)}: its bounds leave no number the grammar can write (an integer, or one of k.f with both k and k+1 inside them)`, 'minimum');
                return grammar;
            }
            case 'string': {
                const min = count(node, 'minLength', path) ?? 0;
                const max = count(node, 'maxLength', path) ?? null;
                if (max !== null && max < min)
                    throw new SchemaGrammarError(`${where(path)}: maxLength is below minLength`, 'maxLength');
                return sequence(literal('"'), repeat(rule('char'), min, max), literal('"'));
            }
            case 'array':
                return this.array(node, path);
            case 'object':
                return this.object(node, path);
        }
    }

    private array(node: Schema, path: string): GrammarNode {
        if (Array.isArray(node.items))
            throw new SchemaGrammarError(`'items' as an array (${where(path)}) is not supported for structured output: use one schema for every item`, 'items');
        const item = node.items === undefined ? this.anyValue() : this.value(node.items, `${path}/items`);
        const min = count(node, 'minItems', path) ?? 0;
        const max = count(node, 'maxItems', path) ?? null;
        if (max !== null && max < min)
            throw new SchemaGrammarError(`${where(path)}: maxItems is below minItems`, 'maxItems');
        const more = repeat(sequence(literal(','), WS, item), Math.max(0, min - 1), max === null ? null : max - 1);
        const items = sequence(item, more);
        if (max === 0)
            return sequence(literal('['), WS, literal(']'));
        return sequence(literal('['), WS, min === 0 ? optional(sequence(items, WS)) : sequence(items, WS), literal(']'));
    }

    private object(node: Schema, path: string): GrammarNode {
        const properties = (node.properties ?? {}) as Record<string, unknown>;
        if (typeof properties !== 'object' || Array.isArray(properties))
            throw new SchemaGrammarError(`${where(path)}: properties must be an object`, 'properties');
        const required = new Set(Array.isArray(node.required) ? node.required.map(String) : []);
        const extra = node.additionalProperties;
        const names = [...Object.keys(properties), ...[...required].filter((name) => !Object.hasOwn(properties, name))];
        if (names.length === 0)
            return sequence(literal('{'), WS, literal('}'));
        // A required property the schema does not describe takes what additionalProperties allows.
        const members = names.map((name) => sequence(literal(JSON.stringify(name)), WS, literal(':'), WS,
            this.value(Object.hasOwn(properties, name) ? properties[name] : extra === undefined || extra === false ? true : extra,
                `${path}/properties/${name}`)));
        // Properties in the schema's order; once one is written each next one starts with a comma. tail(i) is a
        // rule so that the grammar grows linearly with the number of properties.
        const base = `obj${this.rules.size}`;
        const tail = (index: number): GrammarNode => index >= names.length ? literal('') : rule(`${base}-${index}`);
        for (let index = names.length - 1; index >= 0; index--) {
            const member = sequence(literal(','), WS, members[index]!);
            this.rules.set(`${base}-${index}`, required.has(names[index]!)
                ? sequence(member, tail(index + 1))
                : sequence(optional(member), tail(index + 1)));
        }
        // The first property written: every optional one up to the first required may be it.
        const firsts: GrammarNode[] = [];
        let allOptional = true;
        for (const [index, name] of names.entries()) {
            firsts.push(sequence(members[index]!, tail(index + 1)));
            if (required.has(name)) {
                allOptional = false;
                break;
            }
        }
        const body = choice(...firsts);
        return sequence(literal('{'), WS, allOptional ? optional(sequence(body, WS)) : sequence(body, WS), literal('}'));
    }

    private alternatives(node: Schema, keyword: 'anyOf' | 'oneOf', path: string): GrammarNode {
        const options = node[keyword] as unknown[];
        if (Object.keys(node).some((key) => key !== keyword && !ANNOTATIONS.has(key)))
            throw new SchemaGrammarError(`'${keyword}' beside other constraints (${where(path)}) is not supported for structured output: move them into each option`, keyword);
        if (options.length === 0)
            throw new SchemaGrammarError(`${where(path)} has an empty ${keyword}`, keyword);
        return choice(...options.map((option, index) => this.value(option, `${path}/${keyword}/${index}`)));
    }

    /** Local references (`#`, `#/$defs/…`, `#/definitions/…`), as rules so that recursive schemas work. */
    private reference(node: Schema, path: string): GrammarNode {
        const ref = node.$ref as string;
        if (Object.keys(node).some((key) => key !== '$ref' && !ANNOTATIONS.has(key)))
            throw new SchemaGrammarError(`'$ref' beside other constraints (${where(path)}) is not supported for structured output`, '$ref');
        const existing = this.refRules.get(ref);
        if (existing !== undefined)
            return rule(existing);
        const target = resolvePointer(this.root, ref);
        if (target === undefined)
            throw new SchemaGrammarError(`${where(path)}: '$ref' ${JSON.stringify(ref.slice(0, 64))} does not point into this schema`, '$ref');
        // References that only lead to references would be a rule that is itself and nothing else.
        const seen = new Set([ref]);
        for (let alias: unknown = target; typeof alias === 'object' && alias !== null && typeof (alias as Schema).$ref === 'string';) {
            const next = (alias as Schema).$ref as string;
            if (seen.has(next))
                throw new SchemaGrammarError(`${where(path)}: '$ref' ${JSON.stringify(ref.slice(0, 64))} leads back to itself without a value`, '$ref');
            seen.add(next);
            alias = resolvePointer(this.root, next);
        }
        const name = `ref${this.refRules.size}`;
        this.refRules.set(ref, name);
        this.rules.set(name, this.value(target, ref.slice(1)));
        return rule(name);
    }

    private anyValue(): GrammarNode {
        if (!this.rules.has('value')) {
            const value = rule('value');
            const string = sequence(literal('"'), repeat(rule('char'), 0, null), literal('"'));
            this.rules.set('value', choice(
                sequence(literal('{'), WS, optional(sequence(string, WS, literal(':'), WS, value, repeat(sequence(literal(','), WS, string, WS, literal(':'), WS, value), 0, null), WS)), literal('}')),
                sequence(literal('['), WS, optional(sequence(value, repeat(sequence(literal(','), WS, value), 0, null), WS)), literal(']')),
                string, numberGrammar({})!, literal('true'), literal('false'), literal('null')));
        }
        return rule('value');
    }
}

function where(path: string) {
    return path === '' ? 'the schema' : `at ${path}`;
}

function count(node: Schema, keyword: string, path: string): number | undefined {
    const value = node[keyword];
    if (value === undefined)
        return undefined;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0)
        throw new SchemaGrammarError(`${where(path)}: ${keyword} must be a non-negative integer`, keyword);
    return value;
}

function numberBounds(node: Schema): NumberBounds {
    const bounds: NumberBounds = {};
    for (const key of ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'] as const)
        if (typeof node[key] === 'number')
            bounds[key] = node[key];
    return bounds;
}

function resolvePointer(root: unknown, ref: string): unknown {
    if (!ref.startsWith('#'))
        return undefined;
    let target = root;
    for (const part of ref.slice(1).split('/').slice(1)) {
        const key = decodeURIComponent(part).replace(/~1/g, '/').replace(/~0/g, '~');
        if (typeof target !== 'object' || target === null || !Object.hasOwn(target, key))
            return undefined;
        target = (target as Record<string, unknown>)[key];
    }
    return target;
}

/** The grammar's rules, `root` first. Throws SchemaGrammarError for a schema it cannot hold to. */
export function schemaGrammarRules(schema: unknown): Map<string, GrammarNode> {
    return new GrammarBuilder(schema as Schema | boolean).build();
}

/** The grammar in GBNF, as llama.cpp (`LlamaGrammar`) takes it. */
export function schemaToGbnf(schema: unknown): string {
    return rulesToGbnf(schemaGrammarRules(schema));
}
