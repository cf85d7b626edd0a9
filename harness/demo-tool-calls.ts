import {buildDemoVocab, DEMO_SPECIAL_TOKENS} from '../engine/demo/demo-vocab.js';
import {byteTokenBan} from './byte-token-ban.js';

/** Logit biases that steer the demo model's tool calls, which random weights never make by themselves. */

const vocab = buildDemoVocab();

/** The model starts a call, as a trained model would when it wants to (byte tokens banned, see byteTokenBan). */
export function startCallBias() {
    return {...byteTokenBan(), [vocab.tokens.indexOf('<tool_call>')]: 30};
}

/**
 * No end of turn, and keen on the newline that separates calls (a byte token here): after each call the model
 * goes on to another, until the budget.
 */
export function moreCallsBias() {
    return {
        ...byteTokenBan(),
        [vocab.tokens.indexOf(DEMO_SPECIAL_TOKENS.imEnd)]: -100, [vocab.tokens.indexOf(DEMO_SPECIAL_TOKENS.eos)]: -100, [vocab.tokens.indexOf('<0x0A>')]: 20
    };
}

/** A function with bounded arguments, so every call can be checked against its schema. */
export const weatherParameters = {
    type: 'object',
    properties: {
        city: {type: 'string', minLength: 1, maxLength: 12},
        days: {type: 'integer', minimum: 1, maximum: 7},
        unit: {enum: ['celsius', 'fahrenheit']}
    },
    required: ['city', 'days'],
    additionalProperties: false
};
