/**
 * node-llama-cpp 3.21.1 keeps at most one drafted token per pass of speculative decoding: its check of the second
 * and later drafts compares each with the target's sample after the draft before it, read from a list it never
 * fills. This install step adds the one missing line; without it the engine drafts one token per pass
 * (docs/architecture.md, "Speculative decoding"). Idempotent; another node-llama-cpp version is left as it is.
 * Usage: node scripts/patch-node-llama-cpp.mjs [LlamaContext.js]; defaults to node-llama-cpp's own (the argument lets
 * test/speculation-units.test.ts patch copies).
 */
import {readFileSync, renameSync, writeFileSync} from 'node:fs';
import {dirname, join} from 'node:path';
import {fileURLToPath} from 'node:url';

const KEPT = 'this._loadedTokenPredictions.push([evalTokens[i], [resultToken, probabilities, confidence]]);';
const FIX = 'validatedTokens.push([evalTokens[i], resultToken]);';

function llamaContextFile() {
    const entry = fileURLToPath(import.meta.resolve('node-llama-cpp'));
    return join(dirname(entry), 'evaluator', 'LlamaContext', 'LlamaContext.js');
}

try {
    const file = process.argv[2] ?? llamaContextFile();
    const source = readFileSync(file, 'utf8');
    if (source.includes(FIX))
        process.exit(0);
    const at = source.indexOf(KEPT);
    if (at < 0 || source.indexOf(KEPT, at + 1) >= 0 || !source.includes('validatedTokens.at(-1)?.[1]')) {
        console.log('strongdoge: node-llama-cpp\'s speculative decoding is not the 3.21.1 one; left as it is');
        process.exit(0);
    }
    const end = at + KEPT.length;
    // A new file renamed over the old: a store that hard-links one copy into many projects (pnpm) keeps its own.
    const fixed = `${file}.strongdoge-${process.pid}`;
    writeFileSync(fixed, `${source.slice(0, end)} ${FIX}${source.slice(end)}`);
    renameSync(fixed, file);
    console.log('strongdoge: fixed node-llama-cpp 3.21.1\'s check of drafted tokens (speculative decoding)');
} catch (error) {
    // Never fail an install for it: the engine then drafts one token per pass.
    console.log(`strongdoge: could not fix node-llama-cpp's speculative decoding (${error.message}); drafting one token per pass`);
}
