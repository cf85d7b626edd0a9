import test from 'ava';
import OpenAI from 'openai';
import {schemaValidator} from '../harness/ajv-validator.js';
import {byteTokenBan} from '../harness/byte-token-ban.js';
import {demoDaemonForFile} from '../harness/demo-daemon.js';

/**
 * Structured output against a real model through the real openai client: every reply that finishes validates
 * against its schema with ajv, or the request is refused up front (docs/architecture.md, "Structured output").
 * Byte tokens are banned: random weights string them into malformed UTF-8, whose U+FFFD a grammar cannot count.
 */

const logit_bias = byteTokenBan();

const demo = demoDaemonForFile();
const client = () => demo().client;

const corpus: [string, Record<string, unknown>][] = [
    ['a bounded integer', {type: 'object', properties: {count: {type: 'integer', minimum: 0, maximum: 9}}, required: ['count'], additionalProperties: false}],
    ['exclusive bounds and a negative range', {type: 'object', properties: {a: {type: 'integer', exclusiveMinimum: -50, exclusiveMaximum: -40},
        b: {type: 'number', minimum: -1.5, maximum: 2.5}}, required: ['a', 'b']}],
    ['string lengths', {type: 'object', properties: {name: {type: 'string', minLength: 3, maxLength: 12}, code: {type: 'string', minLength: 2, maxLength: 2}},
        required: ['name', 'code'], additionalProperties: false}],
    ['enums and consts', {type: 'object', properties: {color: {enum: ['red', 'green', 'blue']}, version: {const: 2}, mixed: {enum: [1, 'one', null, true]}},
        required: ['color', 'version', 'mixed']}],
    ['optional properties', {type: 'object', properties: {a: {type: 'boolean'}, b: {type: 'null'}, c: {type: 'integer', minimum: 0, maximum: 3}}, required: ['c']}],
    ['arrays with item counts', {type: 'object', properties: {tags: {type: 'array', items: {type: 'string', maxLength: 5}, minItems: 1, maxItems: 3},
        none: {type: 'array', maxItems: 0}}, required: ['tags', 'none']}],
    ['nested objects', {type: 'object', properties: {user: {type: 'object', properties: {id: {type: 'integer', minimum: 1, maximum: 1000},
        address: {type: 'object', properties: {zip: {type: 'string', minLength: 5, maxLength: 5}}, required: ['zip'], additionalProperties: false}},
    required: ['id', 'address'], additionalProperties: false}}, required: ['user'], additionalProperties: false}],
    ['$defs and $ref', {$defs: {point: {type: 'object', properties: {x: {type: 'integer', minimum: -5, maximum: 5}, y: {type: 'integer', minimum: -5, maximum: 5}},
        required: ['x', 'y'], additionalProperties: false}}, type: 'object', properties: {from: {$ref: '#/$defs/point'}, to: {$ref: '#/$defs/point'}}, required: ['from', 'to']}],
    ['draft-07 definitions', {$schema: 'http://json-schema.org/draft-07/schema#', definitions: {small: {type: 'integer', minimum: 0, maximum: 2}},
        type: 'array', items: {$ref: '#/definitions/small'}, minItems: 2, maxItems: 4}],
    ['a recursive tree', {$defs: {node: {type: 'object', properties: {v: {type: 'integer', minimum: 0, maximum: 9}, kids: {type: 'array', items: {$ref: '#/$defs/node'}, maxItems: 2}},
        required: ['v']}}, $ref: '#/$defs/node'}],
    ['anyOf and type unions', {type: 'object', properties: {id: {anyOf: [{type: 'integer', minimum: 0, maximum: 99}, {type: 'string', maxLength: 4}]},
        maybe: {type: ['boolean', 'null']}}, required: ['id', 'maybe']}]
];

for (const [name, schema] of corpus)
    test(`every reply validates against its schema: ${name}`, async (t) => {
        const validate = schemaValidator(schema);
        let finished = 0;
        for (const seed of [1, 2, 3, 4]) {
            const completion = await client().chat.completions.create({
                model: 'demo', messages: [{role: 'user', content: `Fill in ${name}`}], temperature: 1, seed, max_tokens: 300, logit_bias,
                response_format: {type: 'json_schema', json_schema: {name: 'corpus', schema}}
            });
            const {content} = completion.choices[0]!.message;
            if (completion.choices[0]!.finish_reason !== 'stop')
                continue;
            finished++;
            const value = JSON.parse(content!);
            t.true(validate(value), `seed ${seed}: ${content} — ${JSON.stringify(validate.errors)}`);
        }
        t.true(finished > 0, 'at least one reply finished');
    });

test('the example that broke clients: an integer 0..9 is never -25999999999999e9999999999999999, a 12-character limit holds', async (t) => {
    const schema = {type: 'object', properties: {count: {type: 'integer', minimum: 0, maximum: 9}, label: {type: 'string', maxLength: 12}},
        required: ['count', 'label'], additionalProperties: false};
    for (const seed of [11, 12, 13, 14, 15]) {
        const completion = await client().chat.completions.create({
            model: 'demo', messages: [{role: 'user', content: 'count'}], temperature: 1.5, seed, max_tokens: 200, logit_bias,
            response_format: {type: 'json_schema', json_schema: {name: 'count', schema}}
        });
        if (completion.choices[0]!.finish_reason !== 'stop')
            continue;
        const value = JSON.parse(completion.choices[0]!.message.content!) as {count: number, label: string};
        t.true(Number.isInteger(value.count) && value.count >= 0 && value.count <= 9, String(value.count));
        t.true([...value.label].length <= 12, value.label);
    }
});

test('a schema that is not JSON Schema, or that uses what the grammar cannot hold to, is refused up front with a 400 naming it', async (t) => {
    const cases: [Record<string, unknown>, RegExp][] = [
        [{type: 'frobnicate'}, /not a valid JSON Schema/],
        [{type: 'object', properties: {a: {type: 'string', pattern: '^a+$'}}}, /'pattern'/],
        [{type: 'array', uniqueItems: true}, /'uniqueItems'/],
        [{type: 'number', multipleOf: 0.5}, /'multipleOf'/],
        [{type: 'integer', minimum: 0.2, maximum: 0.8}, /no integer lies within its bounds/],
        [{type: 'object', properties: {a: {$ref: '#/$defs/missing'}}}, /can't resolve reference #\/\$defs\/missing/],
        [{$defs: {loop: {$ref: '#/$defs/loop'}}, $ref: '#/$defs/loop'}, /leads back to itself/]
    ];
    for (const [schema, message] of cases) {
        const error = await t.throwsAsync(client().chat.completions.create({
            model: 'demo', messages: [{role: 'user', content: 'x'}], max_tokens: 8,
            response_format: {type: 'json_schema', json_schema: {name: 'bad', schema}}
        }), {instanceOf: OpenAI.BadRequestError}, JSON.stringify(schema));
        t.regex(error!.message, message);
        t.is((error as InstanceType<typeof OpenAI.BadRequestError>).param, 'response_format');
    }
});
