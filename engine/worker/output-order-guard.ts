import type {LlamaContext} from 'node-llama-cpp';
import {InferenceError} from '../../core/inference-error.js';

/** The two methods of node-llama-cpp's native context (its internal `_ctx`) that the guard wraps. */
interface NativeContext {
    decodeBatch(...args: unknown[]): Promise<unknown>,
    sampleToken(...args: unknown[]): Promise<unknown>
}

/**
 * Makes the first sampling after each decode run alone; the others of the batch start once it is done
 * (docs/architecture.md, "Batched decoding", on why).
 *
 * When llama.cpp splits a batch of several sequences into micro-batches (a prompt chunk beside other sequences'
 * tokens), their outputs come out of the batch's order; llama.cpp puts them back in order on the first read of
 * any output, swapping rows in place, without a lock. node-llama-cpp samples every sequence of the batch at once
 * on its thread pool, so two first reads can both apply the swaps, and a request then samples from another
 * request's logits: a wrong token (measured: 57 in 1,000 such steps of 8 sequences). The first sampling does the
 * reordering alone; the rest read settled rows and still run in parallel.
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
