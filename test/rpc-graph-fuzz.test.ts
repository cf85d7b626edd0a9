import {setTimeout as sleep} from 'node:timers/promises';
import test from 'ava';
import {Prng} from '../engine/demo/prng.js';
import {checkGraph} from '../inference/sharded/tunnel/ggml/graph-check.js';
import {GGML_MAX_DIMS, GGML_MAX_SRC, GGML_TYPES, opName} from '../inference/sharded/tunnel/ggml/ggml-tables.js';
import {RPC_TENSOR_BYTES, readRpcTensor, type RpcTensor} from '../inference/sharded/tunnel/ggml/rpc-tensor.js';
import {GraphCheckError} from '../inference/sharded/tunnel/ggml/tensor-check.js';
import {RpcCommand} from '../inference/sharded/tunnel/rpc-stream.js';
import {captureStageSession, type RecordedRequest, SessionReplay} from '../harness/rpc-capture.js';
import {directConnection, encodeGraph, guardedConnection, labServer, RpcLabClient} from '../harness/rpc-lab.js';

/**
 * Real graphs, and thousands of seeded mutations of them, against the host's graph checks and a real rpc-server
 * (docs/peer-protocol.md, "Graph checks"). A session llama.cpp's own client ran is recorded (flash attention on, and
 * off for the other attention path), replayed into a fresh server, then its first graph is mutated: every mutation
 * the checks accept is computed by the server, which must live through it.
 */

const MODEL = {layers: 4, width: 256, headCount: 8, feedForwardLength: 512, endsText: false};
const MUTATIONS_PER_CAPTURE = 2_500;
/** Inputs (positions, row indices, masks, activations) are restored before each computed mutation: those of the base graph. */
const INPUT_BYTES = 256 * 1024;
/**
 * The kernels' own checks of row indices read from tensor data: a graph whose index tensors hold other bytes fails
 * them. That is hostile tensor contents, which no graph check can see (the session's server ends, alone, in its
 * sandbox); counted, not failed.
 */
const INDEX_ASSERTS = ['GGML_ASSERT(i01 >= 0 && i01 < ne01)', 'GGML_ASSERT(i1 >= 0 && i1 < ne1)'];

type Capture = RecordedRequest[];
const captures = new Map<string, Capture>();

test.before(async () => {
    captures.set('flash attention', await captureStageSession({model: MODEL, coordinatorLayers: 1, stageLayers: 3, parallel: 2, tokens: 6, flashAttention: 'on'}));
    captures.set('no flash attention', await captureStageSession({model: MODEL, coordinatorLayers: 1, stageLayers: 3, parallel: 2, tokens: 6, flashAttention: 'off'}));
});

function graphs(capture: Capture) {
    return capture.filter((request) => request.command === RpcCommand.GRAPH_COMPUTE);
}

for (const name of ['flash attention', 'no flash attention'])
    test.serial(`a recorded session (${name}) passes the host's guard whole and computes the same bytes`, async (t) => {
        const capture = captures.get(name)!;
        t.true(graphs(capture).length >= 1);
        const {port} = await labServer(t);
        let refused: Error | undefined;
        const client = new RpcLabClient(guardedConnection(port, {onRefused: (error) => refused = error}));
        const replay = new SessionReplay(client);
        let compared = 0;
        for (const request of capture) {
            const reply = await replay.send(request);
            if (request.command === RpcCommand.GET_TENSOR) {
                t.deepEqual(reply, request.reply, 'the replayed graph computed the recorded activations');
                compared++;
            }
        }
        t.is(refused, undefined);
        t.true(compared > 0);
        t.true(await client.alive());
    });

test.serial('each recorded graph\'s tokens are its batch: the prompt\'s in one, then one per decoded token (shard receipts\' bound)', async (t) => {
    const capture = captures.get('no flash attention')!;
    const {port} = await labServer(t);
    const replay = new SessionReplay(new RpcLabClient(directConnection(port)));
    const tokens: number[] = [];
    for (const request of capture) {
        if (request.command === RpcCommand.GRAPH_COMPUTE)
            tokens.push(checkGraph(replay.translate(RpcCommand.GRAPH_COMPUTE, request.payload), replay).tokens);
        else if (request.command === RpcCommand.GRAPH_RECOMPUTE) // the graph the server holds, again
            tokens.push(tokens.at(-1)!);
        await replay.send(request);
    }
    // 'Once upon a time' with its BOS token, then 5 decodes: the 6th token is sampled, never decoded.
    t.true(tokens[0]! >= 4, `the prompt's pass: ${tokens.join(', ')}`);
    t.deepEqual(tokens.slice(1), [1, 1, 1, 1, 1]);
});

test.serial('the host\'s meter counts each graph\'s tokens through its guard, at most the most a pass may hold', async (t) => {
    const capture = captures.get('no flash attention')!;
    const count = async (maxGraphTokens?: number) => {
        const {port} = await labServer(t); // a server serves one client
        const meter = {graphComputes: 0, graphTokens: 0};
        const replay = new SessionReplay(new RpcLabClient(guardedConnection(port, {meter, ...(maxGraphTokens !== undefined && {maxGraphTokens})})));
        for (const request of capture)
            await replay.send(request);
        return meter;
    };
    const whole = await count();
    t.is(whole.graphComputes, 6);
    t.true(whole.graphTokens >= 4 + 5, `${whole.graphTokens} tokens: the prompt's, then one per decode`);
    // A pass counted as at most 2 tokens: the prompt's graph is cut to 2, the decodes stay 1 each.
    t.deepEqual(await count(2), {graphComputes: 6, graphTokens: 2 + 5});
});

/** A graph as tensors and node ids, to mutate and encode again. */
function parseGraph(payload: Buffer) {
    const nodeCount = payload.readUInt32LE(4);
    const nodes = Array.from({length: nodeCount}, (_, index) => payload.readBigUInt64LE(8 + 8 * index));
    const tensorCount = payload.readUInt32LE(8 + 8 * nodeCount);
    const tensors = Array.from({length: tensorCount}, (_, index) => readRpcTensor(payload, 12 + 8 * nodeCount + index * RPC_TENSOR_BYTES));
    return {nodes, tensors};
}

function cloneTensor(tensor: RpcTensor): RpcTensor {
    return {...tensor, ne: [...tensor.ne], nb: [...tensor.nb], src: [...tensor.src], opParams: new Int32Array(tensor.opParams)};
}

/** One random change of the kind a hostile coordinator would try: ops, types, shapes, strides, ids, offsets, params. */
function mutate(random: () => number, graph: {nodes: bigint[], tensors: RpcTensor[]}, buffers: bigint[]) {
    const pick = <T>(items: readonly T[]) => items[Math.floor(random() * items.length)]!;
    const tensor = pick(graph.tensors);
    const dim = Math.floor(random() * GGML_MAX_DIMS);
    const other = () => pick(graph.tensors).id;
    const size = () => pick([0, 1, 2, 3, 7, 32, 255, 256, 511, 4096, 65_536, 2 ** 31, 2 ** 32 - 1]);
    const kinds: (() => string)[] = [
        () => {
            tensor.op = random() < 0.8 ? Math.floor(random() * 104) : Math.floor(random() * 2 ** 32);
            return `op ${opName(tensor.op)}`;
        },
        () => {
            tensor.type = Math.floor(random() * (GGML_TYPES.length + 3));
            return `type ${tensor.type}`;
        },
        () => {
            const n = tensor.ne[dim]!;
            tensor.ne[dim] = pick([n + 1, Math.max(1, n - 1), n * 2, Math.max(1, n >> 1), size()]) >>> 0;
            return `ne[${dim}] ${n} → ${tensor.ne[dim]}`;
        },
        () => {
            const n = tensor.nb[dim]!;
            tensor.nb[dim] = pick([n + 2, Math.max(0, n - 2), n * 2, n >> 1, size()]) >>> 0;
            return `nb[${dim}] ${n} → ${tensor.nb[dim]}`;
        },
        () => {
            const slot = Math.floor(random() * (random() < 0.7 ? 4 : GGML_MAX_SRC));
            tensor.src[slot] = pick([0n, other(), other(), tensor.id, BigInt(Math.floor(random() * 2 ** 32))]);
            return `src[${slot}] → ${tensor.src[slot]}`;
        },
        () => {
            tensor.viewSrc = pick([0n, other(), tensor.id]);
            return `view_src → ${tensor.viewSrc}`;
        },
        () => {
            const delta = BigInt(pick([2, 4, 32, 1024, 4096, -4, -1024]));
            tensor.viewOffs = BigInt.asUintN(64, tensor.viewOffs + delta);
            if (random() < 0.6)
                tensor.data = BigInt.asUintN(64, tensor.data + delta);
            return `view_offs += ${delta}`;
        },
        () => {
            const delta = BigInt(pick([1, 4, 64, 4096, 1 << 20, -4, -4096]));
            tensor.data = BigInt.asUintN(64, tensor.data + delta);
            return `data += ${delta}`;
        },
        () => {
            const slot = Math.floor(random() * 16);
            tensor.opParams[slot] = random() < 0.5 ? pick([0, 1, 2, -1, 3, 8, 1000]) : Math.floor(random() * 2 ** 32) | 0;
            return `op_params[${slot}] → ${tensor.opParams[slot]}`;
        },
        () => {
            const index = Math.floor(random() * graph.nodes.length);
            graph.nodes[index] = pick([0n, other(), graph.nodes[0]!]);
            return `node ${index} → ${graph.nodes[index]}`;
        },
        () => {
            tensor.buffer = pick([0n, ...buffers, BigInt(Math.floor(random() * 2 ** 32))]);
            return `buffer → ${tensor.buffer}`;
        },
        () => { // a plausible swap: a source replaced by another tensor of its type and shape
            const slot = tensor.src.findIndex((id) => id !== 0n);
            const current = graph.tensors.find((candidate) => candidate.id === tensor.src[slot]);
            const alike = graph.tensors.filter((candidate) => current !== undefined && candidate.type === current.type
                && candidate.ne.every((n, d) => n === current.ne[d]) && candidate.id !== current.id);
            if (slot < 0 || alike.length === 0)
                return 'no alike source';
            tensor.src[slot] = pick(alike).id;
            return `src[${slot}] → alike ${tensor.src[slot]}`;
        },
        () => { // a plausible op: another op of a node's with as many sources
            const arity = tensor.src.filter((id) => id !== 0n).length;
            const alike = graph.tensors.filter((candidate) => candidate.src.filter((id) => id !== 0n).length === arity);
            tensor.op = pick(alike).op;
            return `op → alike ${opName(tensor.op)}`;
        },
        () => {
            tensor.flags = pick([0, 16, 1, 2, 4, 8, -1]);
            tensor.useCount = pick([0, 1, 2, 100, -1]);
            return 'flags, use_count';
        }
    ];
    return pick(kinds)();
}

for (const name of ['flash attention', 'no flash attention'])
    test.serial(`${MUTATIONS_PER_CAPTURE} seeded mutations of a recorded graph (${name}): whatever the checks accept, the server computes and lives`, async (t) => {
        const capture = captures.get(name)!;
        const first = capture.findIndex((request) => request.command === RpcCommand.GRAPH_COMPUTE);
        const setup = capture.slice(0, first);
        const inputs = setup.filter((request) => request.command === RpcCommand.SET_TENSOR && request.payload.length <= INPUT_BYTES);
        let lab = await labServer(t);
        let client!: RpcLabClient;
        let replay!: SessionReplay;
        let base!: ReturnType<typeof parseGraph>;
        let buffers!: bigint[];
        // The base graph in this server's handles and addresses (again after a restart).
        const connectAndSetUp = async () => {
            client = new RpcLabClient(directConnection(lab.port));
            replay = new SessionReplay(client);
            for (const request of setup)
                await replay.send(request);
            base = parseGraph(replay.translate(RpcCommand.GRAPH_COMPUTE, capture[first]!.payload));
            buffers = [...new Set(base.tensors.map((tensor) => tensor.buffer))];
        };
        await connectAndSetUp();
        t.notThrows(() => checkGraph(encodeGraph(base.nodes, base.tensors), replay), 'the unmutated graph passes');
        const prng = new Prng(name.length * 7919);
        const random = () => prng.next();
        const rules = new Map<string, number>();
        const accepted: string[] = [];
        const indexAborts: string[] = [];
        for (let round = 0; round < MUTATIONS_PER_CAPTURE; round++) {
            const graph = {nodes: [...base.nodes], tensors: base.tensors.map(cloneTensor)};
            const changes = Array.from({length: 1 + Math.floor(random() * 3)}, () => mutate(random, graph, buffers));
            const payload = encodeGraph(graph.nodes, graph.tensors);
            try {
                checkGraph(payload, replay);
            } catch (error) {
                if (!(error instanceof GraphCheckError))
                    throw error;
                rules.set(error.rule, (rules.get(error.rule) ?? 0) + 1);
                continue;
            }
            accepted.push(changes.join('; '));
            for (const input of inputs)
                await replay.send(input);
            await client.graphCompute(payload);
            const alive = await client.alive().catch(() => false);
            if (alive)
                continue;
            await sleep(200);
            const tail = lab.lines.slice(-20).join('\n');
            if (!INDEX_ASSERTS.some((assertion) => tail.includes(assertion))) {
                t.fail(`the server died on an accepted graph (round ${round}: ${changes.join('; ')}): ${tail}`);
                return;
            }
            indexAborts.push(changes.join('; '));
            await lab.server.stop();
            lab = await labServer(t);
            await connectAndSetUp();
        }
        t.log(`${accepted.length} accepted and computed, ${indexAborts.length} of them ended by a kernel's index check; refused by rule: ${JSON.stringify(Object.fromEntries(rules))}`);
        t.true(accepted.length >= 50, `only ${accepted.length} mutations passed the checks: the server was hardly tested`);
        t.true(await client.alive());
    });
