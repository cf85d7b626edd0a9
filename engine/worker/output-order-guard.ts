import type {LlamaContext} from 'node-llama-cpp';
import {InferenceError} from '../../core/inference-error.js';

/** The two methods of node-llama-cpp's native context (its internal `_ctx`) that the guard wraps. */
interface NativeContext {
    decodeBatch(...args: unknown[]): Promise<unknown>,
    sampleToken(...args: unknown[]): Promise<unknown>
}

/**
 * Makes the first sampling after each decode run alone; the others of the batch start once it is done and still
 * run in parallel. Why (docs/architecture.md, "Batched decoding"): llama.cpp restores a split batch's output order
 * in place on the first read, without a lock, and two first reads at once made a request sample another's logits.
 *
 * Throws when node-llama-cpp's internals are not as this expects: sampling unguarded would be silently wrong.
 */
export function guardOutputOrder(context: LlamaContext) {
    const native = (context as unknown as {_ctx?: Partial<NativeContext>})._ctx;
    if (typeof native?.decodeBatch !== 'function' || typeof native.sampleToken !== 'function')
        throw InferenceError.engineError('this node-llama-cpp version has no native decodeBatch and sampleToken: the batch output guard cannot be set up');
    const decodeBatch = native.decodeBatch.bind(native);
    const sampleToken = native.sampleToken.bind(native);
    /** The next sampling is the first since a decode: it reorders the outputs. */
    let decoded = false;
    /** The first sampling since the last decode, which the others of its batch wait for. */
    let reordering: Promise<unknown> | undefined;
    Object.defineProperty(native, 'decodeBatch', {
        value: async (...args: unknown[]) => {
            try {
                return await decodeBatch(...args);
            } finally {
                decoded = true;
                reordering = undefined;
            }
        }
    });
    Object.defineProperty(native, 'sampleToken', {
        value: (...args: unknown[]) => {
            if (decoded) {
                decoded = false;
                reordering = sampleToken(...args);
                return reordering;
            }
            if (reordering === undefined)
                return sampleToken(...args);
            const sample = () => sampleToken(...args);
            return reordering.then(sample, sample);
        }
    });
}
