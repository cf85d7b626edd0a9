import {buildDemoVocab} from '../engine/demo/demo-vocab.js';
import {TokenType} from '../engine/gguf/gguf-types.js';

/**
 * A logit bias that bans the demo vocabulary's byte tokens: random weights emit them in sequences that are not
 * UTF-8, which llama-server refuses to stream and which decode to U+FFFD (docs/architecture.md, "Benchmarks").
 */
export function byteTokenBan() {
    const bias: Record<string, number> = {};
    buildDemoVocab().tokenTypes.forEach((type, id) => {
        if (type === TokenType.byte)
            bias[String(id)] = -100;
    });
    return bias;
}
