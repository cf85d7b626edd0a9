import test from 'ava';
import {schemaGrammarRules, schemaToGbnf, SchemaGrammarError} from '../core/json-schema/schema-grammar.js';
import {replyProblem, schemaProblem} from '../core/json-schema/structured-output.js';
import {grammarRegExp} from '../harness/grammar-regexp.js';

/** What a schema's grammar accepts, as a regular expression over the whole reply (rules inlined `depth` deep). */
function accepts(schema: unknown, depth?: number) {
    const rules = schemaGrammarRules(schema);
    const pattern = grammarRegExp(rules.get('root')!, rules, depth);
    return (text: string) => pattern.test(text);
}

test('objects: properties in the schema\'s order, required ones always, optional ones or not, no others', (t) => {
    const object = accepts({type: 'object', properties: {a: {type: 'integer', minimum: 0, maximum: 9}, b: {type: 'boolean'}, c: {type: 'null'}},
        required: ['b'], additionalProperties: false});
    for (const text of ['{"b":true}', '{"a":3,"b":false}', '{"b":true,"c":null}', '{"a":0,"b":true,"c":null}', '{ "a" : 9,\n  "b" : true }'])
        t.true(object(text), text);
    for (const text of ['{}', '{"a":3}', '{"b":true,"a":3}', '{"a":10,"b":true}', '{"b":true,"d":1}', '{"b":1}', '{,"b":true}', '{"b":true,}'])
        t.false(object(text), text);
    const allOptional = accepts({type: 'object', properties: {x: {type: 'boolean'}, y: {type: 'boolean'}}});
    for (const text of ['{}', '{"x":true}', '{"y":false}', '{"x":true,"y":false}'])
        t.true(allOptional(text), text);
    t.false(allOptional('{"y":false,"x":true}'));
    t.true(accepts({type: 'object', required: ['free']})('{"free":[1,"two",{"three":null}]}'), 'a required property the schema does not describe takes any value');
});

test('strings count characters as code points; escapes count once; surrogate escapes are never written', (t) => {
    const string = accepts({type: 'string', minLength: 2, maxLength: 3});
    for (const text of ['"ab"', '"abc"', '"😀😀"', '"a\\nb"', '"\\u00e9\\"x"'])
        t.true(string(text), text);
    for (const text of ['"a"', '"abcd"', '"😀😀😀😀"', '"a\nb"', '"\\ud83d\\ude00"', '"a\\qb"'])
        t.false(string(text), text);
});

test('arrays hold minItems and maxItems; enums, consts and unions write only their values', (t) => {
    const array = accepts({type: 'array', items: {type: 'integer', minimum: 1, maximum: 3}, minItems: 1, maxItems: 2});
    for (const text of ['[1]', '[3, 2]', '[ 2 ]'])
        t.true(array(text), text);
    for (const text of ['[]', '[1,2,3]', '[4]', '[1,]'])
        t.false(array(text), text);
    t.true(accepts({type: 'array', maxItems: 0})('[]'));
    const choice = accepts({enum: ['a"b', 2, null, {k: [true]}]});
    for (const text of ['"a\\"b"', '2', 'null', '{"k":[true]}'])
        t.true(choice(text), text);
    t.false(choice('3'));
    t.true(accepts({const: 'exact'})('"exact"'));
    const union = accepts({type: ['integer', 'null'], minimum: 5, maximum: 6});
    t.deepEqual(['5', '6', 'null', '7'].map(union), [true, true, true, false]);
    const any = accepts({anyOf: [{type: 'boolean'}, {type: 'string', maxLength: 1}]});
    t.deepEqual(['true', '"x"', '"xy"', '1'].map(any), [true, true, false, false]);
});

test('references: $defs, definitions and recursion become rules', (t) => {
    const tree = accepts({$defs: {node: {type: 'object', properties: {v: {type: 'integer', minimum: 0, maximum: 9}, kids: {type: 'array', items: {$ref: '#/$defs/node'}}},
        required: ['v'], additionalProperties: false}}, $ref: '#/$defs/node'}, 12);
    t.true(tree('{"v":1,"kids":[{"v":2},{"v":3,"kids":[{"v":4}]}]}'));
    t.false(tree('{"v":1,"kids":[{"v":20}]}'));
    t.true(accepts({definitions: {n: {type: 'integer', minimum: 0, maximum: 1}}, type: 'array', items: {$ref: '#/definitions/n'}})('[0,1,1]'));
    t.regex(schemaToGbnf({$defs: {a: {type: 'boolean'}}, $ref: '#/$defs/a'}), /^root ::= ref0$/m);
});

test('keywords the grammar cannot hold to are refused by name; annotations are not', (t) => {
    for (const [schema, keyword] of [
        [{type: 'string', pattern: 'x'}, 'pattern'], [{type: 'array', uniqueItems: true}, 'uniqueItems'], [{type: 'number', multipleOf: 2}, 'multipleOf'],
        [{type: 'object', minProperties: 1}, 'minProperties'], [{not: {type: 'null'}}, 'not'], [{allOf: [{type: 'string'}, {maxLength: 2}]}, 'allOf'],
        [{type: 'array', items: [{type: 'string'}]}, 'items'], [{type: 'integer', minimum: 1, maximum: 0}, 'minimum'], [{enum: []}, 'enum'],
        [{$ref: '#/$defs/a', $defs: {a: {$ref: '#/$defs/b'}, b: {$ref: '#/$defs/a'}}}, '$ref'], [{type: 'string', minLength: 3, maxLength: 2}, 'maxLength']
    ] as const) {
        const error = t.throws(() => schemaGrammarRules(schema), {instanceOf: SchemaGrammarError}, JSON.stringify(schema));
        t.is(error!.keyword, keyword, JSON.stringify(schema));
    }
    t.notThrows(() => schemaGrammarRules({title: 'T', description: 'd', type: 'string', format: 'email', default: 'x', examples: ['y'], $comment: 'c'}));
    t.is(schemaProblem({type: 'string', format: 'email'}), undefined);
    t.regex(schemaProblem({type: 'frobnicate'})!, /not a valid JSON Schema/);
    t.regex(schemaProblem({type: 'string', pattern: 'x'})!, /the keyword 'pattern' .* is not supported/);
});

test('a finished reply is checked against the schema, counting characters as ajv does', (t) => {
    const schema = {type: 'object', properties: {s: {type: 'string', maxLength: 2}}, required: ['s']};
    t.is(replyProblem(schema, '{"s":"😀😀"}'), undefined);
    t.regex(replyProblem(schema, '{"s":"abc"}')!, /\/s must NOT have more than 2 characters/);
    t.regex(replyProblem(schema, '{"s":')!, /not JSON/);
});
