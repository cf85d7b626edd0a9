/**
 * A tensor of a peer's graph as the checks see it (docs/peer-protocol.md, "Graph checks"): shaped, placed, its
 * sources resolved. The vocabulary shared by `graph-check.ts`, which builds it, and the op contracts, which read it.
 */
import type {ShapedTensor} from './tensor-check.js';

/** A checked tensor of a graph, its sources and view source resolved. */
export interface GraphNode extends ShapedTensor {
    sources: (GraphNode | undefined)[],
    view: GraphNode | undefined,
    /** Sources only: 1 for a tensor without any. */
    depth: number,
    /** Its place in the graph's tensor list. */
    index: number,
    /** Bytes from its first byte to its buffer's end: what a kernel may read past its own bytes and stay in the session's memory. */
    room: bigint,
    /** Its place in the graph's node list, the order in which the server computes nodes; -1 when no node computes it. */
    position: number,
    /**
     * The graph's computed nodes in that order (one list, shared by all its tensors): for contracts that depend on what
     * other nodes compute before this one, or between two nodes.
     */
    computed: readonly GraphNode[]
}
