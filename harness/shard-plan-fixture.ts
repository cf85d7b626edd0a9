import type {ExecutionContext} from 'ava';
import type {ModelShape, ShardCandidate, ShardPlan, ShardPlanResult} from '../inference/sharded/shard-planner.js';

/**
 * The planner tests' model and candidates (test/shard-planner.test.ts, test/spare-picker.test.ts). Small numbers
 * keep the arithmetic readable: a layer is 100 bytes, its KV cache 10 (1 byte × 10 tokens).
 */

export const LAYER = 100;
export const KV_PER_LAYER = 10;
export const PER_LAYER = LAYER + KV_PER_LAYER;
export const INPUT = 30;
export const OUTPUT = 50;

export function shapeOf(layers: number, extra: Partial<ModelShape> = {}): ModelShape {
    return {layerBytes: Array(layers).fill(LAYER), inputBytes: INPUT, outputBytes: OUTPUT, kvBytesPerTokenPerLayer: 1, contextTokens: 10, ...extra};
}

/** Memory for `layers` layers and their KV cache, and the output layer should the peer be last. */
export const roomFor = (layers: number) => layers * PER_LAYER + OUTPUT;

/** This node: room for the input layer only, unless `extra` says otherwise. */
export function coordinator(extra: Partial<ShardCandidate> = {}): ShardCandidate {
    return {peerId: 'self', self: true, freeMemoryBytes: INPUT, tflops: 1, rttMs: 0, successRate: 1, heldLayers: [], ...extra};
}

/** A peer with room for 4 layers, 20 ms away, holding none unless `extra` says otherwise. */
export function candidate(peerId: string, extra: Partial<ShardCandidate> = {}): ShardCandidate {
    return {peerId, self: false, freeMemoryBytes: roomFor(4), tflops: 1, rttMs: 20, successRate: 1, heldLayers: [], ...extra};
}

/** The plan, or the test fails saying why there is none. */
export function planned<P extends ShardPlan>(result: ShardPlanResult<P>, t: ExecutionContext): P {
    if (!result.ok)
        return t.fail(`no plan: ${result.reason}`) as never;
    return result.plan;
}
