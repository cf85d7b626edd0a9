import Ajv2020Module from 'ajv/dist/2020.js';

export type {ValidateFunction} from 'ajv/dist/2020.js';

/**
 * ajv's JSON Schema draft 2020-12 validator class, the one every schema in the repository is compiled with.
 * ajv is CommonJS: under NodeNext its default export arrives as the module object, so the class is read from it
 * here, once.
 */
export const Ajv2020 = (Ajv2020Module as unknown as {default: typeof Ajv2020Module.default}).default;
