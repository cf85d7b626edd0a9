import {Ajv2020, type ValidateFunction} from '../core/json-schema/ajv.js';

const ajv = new Ajv2020({strict: false, validateFormats: false});

/**
 * A validator for a client's schema from ajv, independent of the proxy's own: what the tests check replies with.
 * `$schema` is dropped so a draft-07 schema compiles as 2020-12, as the proxy reads it.
 */
export function schemaValidator(schema: Record<string, unknown>): ValidateFunction {
    const {$schema: _dialect, ...rest} = schema;
    return ajv.compile(rest);
}
