
import {decodeFrame, encodeFrame} from '../swarm/channel/frame-codec.js';
import {controlMessageSchema} from '../swarm/protocol/control-messages.js';
import {capabilitiesFixture} from '../harness/capabilities-fixture.js';
import {startTestnet, testSwarmNode} from '../harness/swarm-fixture.js';
import {waitFor} from '../harness/cli-process.js';
import {machine, writeReport} from './lib/report.js';
import {median, round} from './lib/statistics.js';

const FIRST_PEER_TRIALS = 20;
const MESH_SIZE = 30;

const {testnet} = await startTestnet();

function swarmNode(network = 'bench') {
    return testSwarmNode(testnet.bootstrap, network);
}

async function firstPeerTimes() {
    const anchor = swarmNode('first-peer');
    await anchor.start();
    const times: number[] = [];
    for (let trial = 0; trial < FIRST_PEER_TRIALS; trial++) {
        const node = swarmNode('first-peer');
        const startedAt = performance.now();
        const joined = new Promise<void>((resolve) => node.once('peerJoined', () => resolve()));
        await node.start();
        await joined;
        times.push(performance.now() - startedAt);
        await node.stop();
    }
    await anchor.stop();
    return {medianMs: round(median(times)), minMs: round(Math.min(...times)), maxMs: round(Math.max(...times)), trials: times.length};
}

async function meshTime() {
    const nodes = Array.from({length: MESH_SIZE}, () => swarmNode('mesh'));
    const startedAt = performance.now();
    await Promise.all(nodes.map((node) => node.start()));
    let fullyConnectedMs: number | null = null;
    try {
        await waitFor(() => nodes.every((node) => node.peers().length === MESH_SIZE - 1), 60_000, 100);
        fullyConnectedMs = performance.now() - startedAt;
    } catch {
        // reported below as not reached
    }
    const connections = nodes.map((node) => node.peers().length);
    await Promise.all(nodes.map((node) => node.stop()));
    return {
        nodes: MESH_SIZE,
        fullyConnectedMs: fullyConnectedMs === null ? null : round(fullyConnectedMs),
        peersPerNode: {min: Math.min(...connections), max: Math.max(...connections)}
    };
}

async function messageCosts() {
    const capabilities = capabilitiesFixture({
        models: [{id: 'llama-3.1-8b-instruct-q4_k_m', sha256: 'a'.repeat(64), sizeBytes: 4.9e9, quantization: 'MOSTLY_Q4_K_M', layers: 32,
            layerBytes: Array(32).fill(1.5e8), loaded: true}]
    });
    const frames = {ping: encodeFrame({type: 'ping', nonce: 123456}), capabilities: encodeFrame({type: 'capabilities', capabilities})};
    const iterations = 20_000;
    const codecMicros = (frame: Buffer) => {
        const startedAt = performance.now();
        for (let i = 0; i < iterations; i++)
            decodeFrame(frame, controlMessageSchema, 'frame');
        return round(((performance.now() - startedAt) * 1000) / iterations, 3);
    };

    // Round trip of a ping over a real connection: the control protocol's latency floor.
    const [a, b] = [swarmNode('rtt'), swarmNode('rtt')];
    await Promise.all([a.start(), b.start()]);
    await waitFor(() => a.peers().length === 1 && b.peers().length === 1, 30_000);
    await waitFor(() => (a.peers()[0]!.rtt.latestMs ?? undefined) !== undefined, 30_000);
    const samples: number[] = [];
    for (let i = 0; i < 30; i++) {
        const peer = a.peers()[0]!;
        const before = peer.rtt.latestMs;
        (a as unknown as {connections: Map<string, {ping(): void}>}).connections.get(peer.id)!.ping();
        await waitFor(() => peer.rtt.latestMs !== before, 5_000, 1);
        samples.push(peer.rtt.latestMs!);
    }
    await Promise.all([a.stop(), b.stop()]);
    return {
        pingFrameBytes: frames.ping.length,
        capabilitiesFrameBytes: frames.capabilities.length,
        decodeAndValidateMicros: {ping: codecMicros(frames.ping), capabilities: codecMicros(frames.capabilities)},
        pingRoundTripMs: {median: round(median(samples), 3), samples: samples.length}
    };
}

try {
    process.stderr.write('first peer…\n');
    const firstPeer = await firstPeerTimes();
    process.stderr.write(`${MESH_SIZE}-node mesh…\n`);
    const mesh = await meshTime();
    process.stderr.write('message costs…\n');
    const messages = await messageCosts();
    const report = {
        benchmark: 'swarm on a loopback HyperDHT testnet',
        date: new Date().toISOString(),
        machine: machine(),
        targets: {firstPeerMedianMs: '< 1000', meshFullyConnectedMs: '< 15000'},
        results: {firstPeer, mesh, messages}
    };
    await writeReport('swarm', report, report.results);
} finally {
    await testnet.destroy();
}
