/**
 * GRAPH_COMPUTE, read whole and checked before the rpc-server sees a byte of it (docs/peer-protocol.md, "Graph
 * checks"). Pure.
 *
 * Payload: `| device (u32) | n_nodes (u32) | nodes (n_nodes × u64 id) | n_tensors (u32) | tensors (n_tensors × 296) |`.
 * A reference to a later tensor is refused (llama.cpp's `serialize_graph` lists each tensor after its sources and
 * view source), except `ggml_cast`'s CPY, whose destination (source 1) is the node itself. The server computes the
 * nodes in the list's order, a barrier between them (ggml_graph_compute_thread), so contracts may rest on what
 * earlier nodes wrote (MUL_MAT_ID's expert ids, op-rules-elementwise.ts).
 */
import {GgmlOp, opName} from './ggml-tables.js';
import {type AllowedOp, isAllowedOp} from './op-allowlist.js';
import {OP_RULES} from './op-rules.js';
import {readRpcTensor, RPC_TENSOR_BYTES, rpcTensorName} from './rpc-tensor.js';
import type {GraphNode} from './graph-node.js';
import {checkPlacement, isContiguous, need, type SessionBuffers, shapeTensor} from './tensor-check.js';

export interface GraphLimits {
    /** Computed nodes in one graph; defaults to 65,536 (llama.cpp's own graphs stay far below). */
    maxNodes?: number,
    /** Tensors described in one graph; defaults to 131,072. */
    maxTensors?: number,
    /**
     * Longest chain of sources. The server rebuilds the graph by recursion, one stack frame per link: a chain long
     * enough would overflow its stack. Defaults to 8,192 (a 100-layer model's graph has chains of ~2,000).
     */
    maxDepth?: number
}

export const graphLimitDefaults: Required<GraphLimits> = {
    maxNodes: 65_536,
    maxTensors: 131_072,
    maxDepth: 8_192
};

export interface CheckedGraph {
    nodes: number,
    tensors: number,
    /** The ops of its computed nodes, by name, with their counts. */
    ops: Map<AllowedOp, number>,
    /**
     * Tokens the graph computes: the most activation columns a matrix multiply takes (a layer's weights times its
     * input, [n_embd, n_tokens]), at least 1. What a stage can say it worked on in this pass (shard receipts' bound).
     */
    tokens: number
}

const HEADER_BYTES = 8;

/** Payload bytes of a graph with `nodes` nodes and `tensors` tensors. */
export function graphPayloadBytes(nodes: number, tensors: number) {
    return HEADER_BYTES + nodes * 8 + 4 + tensors * RPC_TENSOR_BYTES;
}

/**
 * Checks a GRAPH_COMPUTE payload against the session's buffers; returns what it holds, or throws a
 * `GraphCheckError` naming the rule broken. `payload` is not changed.
 */
export function checkGraph(payload: Buffer, buffers: SessionBuffers, limits: GraphLimits = {}): CheckedGraph {
    const {maxNodes, maxTensors, maxDepth} = {...graphLimitDefaults, ...limits};
    need(payload.length >= HEADER_BYTES + 4, 'size', () => `a graph of ${payload.length} bytes`);
    const nodeCount = payload.readUInt32LE(4);
    need(nodeCount >= 1 && nodeCount <= maxNodes, 'size', () => `a graph of ${nodeCount} nodes (1 to ${maxNodes})`);
    need(payload.length >= graphPayloadBytes(nodeCount, 0), 'size', () => `a graph of ${nodeCount} nodes in ${payload.length} bytes`);
    const tensorsAt = HEADER_BYTES + nodeCount * 8 + 4;
    const tensorCount = payload.readUInt32LE(tensorsAt - 4);
    need(tensorCount <= maxTensors, 'size', () => `a graph of ${tensorCount} tensors (at most ${maxTensors})`);
    need(payload.length === graphPayloadBytes(nodeCount, tensorCount), 'size',
        () => `a graph of ${nodeCount} nodes and ${tensorCount} tensors in ${payload.length} bytes, not ${graphPayloadBytes(nodeCount, tensorCount)}`);

    const byId = new Map<bigint, GraphNode>();
    const computed: GraphNode[] = [];
    for (let index = 0; index < tensorCount; index++) {
        const offset = tensorsAt + index * RPC_TENSOR_BYTES;
        const tensor = readRpcTensor(payload, offset);
        const what = () => `tensor ${index} ("${rpcTensorName(payload, offset)}")`;
        need(tensor.id !== 0n && !byId.has(tensor.id), 'ids', () => `${what()} has id ${tensor.id}, which is 0 or taken`);
        need(isAllowedOp(tensor.op), 'op', () => `${what()} has op ${opName(tensor.op)}, which a host never runs for a peer`);
        const shaped = shapeTensor(tensor, what);
        const resolve = (id: bigint, role: string) => {
            if (id === 0n)
                return undefined;
            const found = byId.get(id);
            need(found !== undefined, 'sources', () => `${what()}'s ${role} is not an earlier tensor of the graph`);
            return found;
        };
        const cast = tensor.op === GgmlOp.CPY && tensor.src[1] === tensor.id;
        const sources = tensor.src.map((id, slot) => cast && slot === 1 ? undefined : resolve(id, `source ${slot}`));
        const view = resolve(tensor.viewSrc, 'view source');
        const depth = 1 + Math.max(0, ...sources.map((source) => source?.depth ?? 0), view?.depth ?? 0);
        need(depth <= maxDepth, 'depth', () => `${what()} ends a chain of ${depth} sources (at most ${maxDepth})`);
        const node: GraphNode = Object.assign(shaped, {sources, view, depth, index, room: 0n, position: -1, computed});
        if (cast)
            node.sources[1] = node;
        checkPlacement(node, buffers, what);
        const buffer = buffers.get(node.buffer)!;
        node.room = buffer.base! + buffer.size - node.data;
        checkView(node, what);
        byId.set(tensor.id, node);
    }

    // The node list first, so that a contract sees every node in the server's order; then each node's contract, in
    // that order: one may rely on an earlier node's having held.
    for (let index = 0; index < nodeCount; index++) {
        const id = payload.readBigUInt64LE(HEADER_BYTES + index * 8);
        const node = byId.get(id);
        need(node !== undefined && node.position < 0, 'ids', () => `node ${index} names tensor ${id}, which the graph lacks or lists twice`);
        node.position = index;
        computed.push(node);
    }
    const ops = new Map<AllowedOp, number>();
    let tokens = 1;
    for (const node of computed) {
        const op = opName(node.op) as AllowedOp;
        OP_RULES[op](node, () => `node ${node.position} (${op}, "${rpcTensorName(payload, tensorsAt + node.index * RPC_TENSOR_BYTES)}")`);
        ops.set(op, (ops.get(op) ?? 0) + 1);
        if (node.op === GgmlOp.MUL_MAT && node.sources[1] !== undefined)
            tokens = Math.max(tokens, node.sources[1].ne[1]);
    }
    return {nodes: nodeCount, tensors: tensorCount, ops, tokens};
}

/**
 * A view shares its source's bytes (ggml points it at `view_src->data + view_offs`): it must lie within them, in the
 * same buffer, and its source must be no view itself (ggml always views the tensor that owns the bytes). A tensor
 * that is no view owns its bytes, laid out densely as ggml lays out every new tensor.
 */
function checkView(node: GraphNode, what: () => string) {
    const {view} = node;
    if (view === undefined) {
        need(node.viewOffs === 0n, 'view', () => `${what()} has a view offset but no view source`);
        need(isContiguous(node), 'strides', () => `${what()} owns its bytes but its strides (${node.nb.join(', ')}) are not dense for ${node.ne.join(' × ')}`);
        return;
    }
    need(view.view === undefined, 'view', () => `${what()} views a tensor that is a view itself`);
    need(view.buffer === node.buffer && node.data === view.data + node.viewOffs, 'view',
        () => `${what()} does not lie at its view offset in its view source`);
    need(node.viewOffs + node.nbytes <= view.nbytes, 'view', () => `${what()} reaches beyond its view source (offset ${node.viewOffs}, ${node.nbytes} bytes of ${view.nbytes})`);
}
