/**
 * The vocabulary of `op-rules*.ts` (docs/peer-protocol.md, "Graph checks"): each op's contract is written with
 * these, as ggml's graph builders (ggml.c) and the backends' kernels state it, so that a rule reads like the code
 * it mirrors. A broken contract throws a `GraphCheckError`.
 */
import type {GraphNode} from './graph-node.js';
import {GGML_MAX_DIMS, GGML_MAX_SRC, typeName} from './ggml-tables.js';
import {type GraphRule, GraphCheckError, isContiguousN, isContiguousRows} from './tensor-check.js';

/** Checks one computed node; `what` names it in the error. */
export type OpRule = (node: GraphNode, what: () => string) => void;

/** A node's contract, with its name for the messages. */
export class Contract {
    constructor(readonly node: GraphNode, private readonly what: () => string) {}

    fail(rule: GraphRule, message: string): never {
        throw new GraphCheckError(rule, `${this.what()}: ${message}`);
    }

    need(condition: boolean, rule: GraphRule, message: string | (() => string)): void {
        if (!condition)
            this.fail(rule, typeof message === 'string' ? message : message());
    }

    /**
     * Its sources: the first `required` present, those up to `allowed` optional, none after. Returns the slots up to
     * `allowed`, the optional ones possibly undefined.
     */
    sources(required: number, allowed = required): (GraphNode | undefined)[] {
        const {sources} = this.node;
        for (let slot = 0; slot < GGML_MAX_SRC; slot++) {
            if (slot < required)
                this.need(sources[slot] !== undefined, 'sources', `source ${slot} is missing`);
            else if (slot >= allowed)
                this.need(sources[slot] === undefined, 'sources', `has a source in slot ${slot}; the op takes ${allowed}`);
        }
        return sources.slice(0, allowed);
    }

    /** Exactly `count` sources, all present. */
    all(count: number): GraphNode[] {
        return this.sources(count) as GraphNode[];
    }

    type(tensor: GraphNode, role: string, ...types: number[]) {
        this.need(types.includes(tensor.type), 'op-type', () => `${role} is ${typeName(tensor.type)}, not ${types.map(typeName).join(' or ')}`);
    }

    sameType(a: GraphNode, b: GraphNode, roles: string) {
        this.need(a.type === b.type, 'op-type', () => `${roles} differ in type (${typeName(a.type)}, ${typeName(b.type)})`);
    }

    /** The node's own output as ggml's builder makes it (`ggml_dup_tensor`, `ggml_new_tensor`): its type and shape. */
    result(node: GraphNode, type: number, ne: readonly number[]) {
        this.type(node, 'the result', type);
        this.shape(node, 'the result', ne);
    }

    /**
     * Elements packed even in a row of one: `nb[0]` is the element size, as kernels `GGML_ASSERT(nb0 == sizeof(T))`
     * or index a row as a plain array; stricter than `contiguousRows`, which lets any `nb[0]` pass when `ne[0]` is 1.
     */
    packed(tensor: GraphNode, role: string) {
        this.need(tensor.nb[0] === tensor.traits.typeSize, 'strides', `the elements of ${role} must be packed`);
    }

    /**
     * Strides exactly `ggml_new_tensor`'s, those of 1-element dimensions too: a flat array, for kernels that address
     * rows by a running row number times `nb[1]`.
     */
    dense(tensor: GraphNode, role: string) {
        const {ne, nb} = tensor;
        const size = tensor.traits.typeSize;
        this.need(nb[0] === size && nb[1] === size * ne[0] / tensor.traits.blockSize && nb[2] === nb[1] * ne[1] && nb[3] === nb[2] * ne[2], 'strides',
            () => `${role} must be a packed array (strides ${nb.join(', ')})`);
    }

    shape(tensor: GraphNode, role: string, ne: readonly number[]) {
        this.need(ne.every((n, dim) => tensor.ne[dim] === n), 'op-shape', () => `${role} is ${dims(tensor)}, not ${ne.join(' × ')}`);
    }

    sameShape(a: GraphNode, b: GraphNode, roles: string) {
        this.shape(b, roles, a.ne);
    }

    /** `ggml_can_repeat(small, big)`: `small` tiles `big` in every dimension. */
    repeats(small: GraphNode, big: GraphNode, roles: string) {
        this.need(big.ne.every((n, dim) => n % small.ne[dim]! === 0), 'op-shape', () => `${roles}: ${dims(small)} does not tile ${dims(big)}`);
    }

    /** `ggml_is_contiguous_n`. */
    contiguous(tensor: GraphNode, role: string, n = 0) {
        this.need(isContiguousN(tensor, n), 'strides', () => `${role} must be contiguous${n > 0 ? ` above dimension ${n}` : ''}`);
    }

    contiguousRows(tensor: GraphNode, role: string) {
        this.need(isContiguousRows(tensor), 'strides', `${role}'s rows must be contiguous`);
    }

    /** Strides that never shrink from one dimension to the next (no transposed or permuted layout). */
    ordered(tensor: GraphNode, role: string) {
        this.need(tensor.nb[0] <= tensor.nb[1] && tensor.nb[1] <= tensor.nb[2] && tensor.nb[2] <= tensor.nb[3], 'strides',
            () => `${role}'s strides ${tensor.nb.join(', ')} are not in order`);
    }

    /** An int32 op parameter. */
    int(slot: number) {
        return this.node.opParams[slot]!;
    }

    /** A float op parameter. */
    float(slot: number) {
        return new Float32Array(this.node.opParams.buffer, this.node.opParams.byteOffset, this.node.opParams.length)[slot]!;
    }

    /** Op params from `slot` on are all zero (what ggml leaves unset). */
    unusedParams(from: number) {
        for (let slot = from; slot < this.node.opParams.length; slot++)
            this.need(this.node.opParams[slot] === 0, 'op-params', `op parameter ${slot} is set; the op uses ${from}`);
    }

    /** A float parameter that is a finite number (NaN and infinities break loops and bounds in kernels). */
    finite(slot: number, role: string) {
        const value = this.float(slot);
        this.need(Number.isFinite(value), 'op-params', `${role} is ${value}`);
        return value;
    }
}

export function dims(tensor: {ne: readonly number[]}) {
    return tensor.ne.slice(0, GGML_MAX_DIMS).join(' × ');
}

export function elements(tensor: {ne: readonly number[]}) {
    return tensor.ne.reduce((product, n) => product * n, 1);
}

/** Writes an op's rule with a `Contract` for its node. */
export function rule(check: (contract: Contract, node: GraphNode) => void): OpRule {
    return (node, what) => check(new Contract(node, what), node);
}

/** An op whose contract is not written yet: refused like any op outside the list. */
export const refusedUntilWritten: OpRule = (_node, what) => {
    throw new GraphCheckError('op', `${what()}: no contract for this op yet`);
};
