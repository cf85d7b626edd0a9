import test from 'ava';
import {MAX_CACHED_SCHEMAS, validatorFor} from '../core/json-schema/structured-output.js';

/**
 * Clients send the same schema with every request, so a schema in use keeps its compiled validator while new
 * schemas come and go: the cache drops the least recently used one, not the oldest.
 */
test('a schema used lately keeps its compiled validator when a new schema evicts', (t) => {
    const schema = (index: number) => ({type: 'object', properties: {[`field${index}`]: {type: 'integer'}}});
    const compiled = Array.from({length: MAX_CACHED_SCHEMAS}, (_, index) => validatorFor(schema(index)));
    const first = compiled[0]!;
    const second = compiled[1]!;
    t.is(validatorFor(schema(0)), first, 'cached: the same function, not compiled again');

    validatorFor(schema(MAX_CACHED_SCHEMAS)); // one past the capacity: the least recently used (schema 1) goes

    t.is(validatorFor(schema(0)), first, 'the oldest schema, used lately, is kept');
    t.not(validatorFor(schema(1)), second, 'the least recently used schema was compiled again');
    t.true(validatorFor(schema(1))({field1: 1}));
});
