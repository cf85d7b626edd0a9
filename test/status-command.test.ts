import {once} from 'node:events';
import {mkdtemp, rm} from 'node:fs/promises';
import {createServer} from 'node:http';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import test from 'ava';
import type {ClusterStatus, NodeStatus} from '../node/node-status.js';
import {addSpeculation} from '../core/speculation-summary.js';
import {runCli} from '../harness/cli-process.js';

const nodeStatus: NodeStatus = {
    id: 'ab'.repeat(32), shortId: 'q3xk8ume', network: 'public', privateNetwork: false, version: '0.1.0', uptimeSeconds: 65,
    proxyUrl: 'http://127.0.0.1:9337/v1',
    device: {backend: false, gpuNames: [], vramTotalBytes: 0, vramFreeBytes: 0, cpuThreads: 4, build: 'local', ggmlDir: '/opt/ggml'},
    compute: {measuredTflops: null, lookupTflops: null, generationTokensPerSecond: null, memoryBandwidthGBs: null},
    engine: {state: 'ready', pid: 42, restarts: 0, lastError: null, running: 0, queued: 0},
    models: [{id: 'demo', path: '/models/demo.gguf', sizeBytes: 1e6, layers: 4, gpuLayers: 0, contextSize: 4096, parallelSequences: 4,
        trainContextSize: 4096, embeddingLength: 64, flashAttention: 'off', speculative: 'lookup', draft: null,
        // two requests: 13 of 21 drafted tokens kept, 24 tokens in 10 passes
        speculation: addSpeculation(addSpeculation(undefined, {drafter: 'lookup', passes: 6, tokens: 15, drafted: 13, accepted: 9}),
            {drafter: 'lookup', passes: 4, tokens: 9, drafted: 8, accepted: 4})}, {
        id: 'big', path: '/models/big.gguf', sizeBytes: 4e9, layers: 32, gpuLayers: 32, contextSize: 4096, parallelSequences: 4,
        trainContextSize: 4096, embeddingLength: 4096, flashAttention: 'auto', speculative: 'draft', draft: {path: '/models/small-draft.gguf', sizeBytes: 2e8},
        speculation: null}],
    peers: 2,
    nat: {type: 'consistent', reachable: false, host: '100.64.7.2', port: 40123},
    relay: {mode: 'auto', offering: false, key: 'cd'.repeat(32), through: [], clients: 0, pairs: 0, bytesRelayed: 0, mbps: 0, maxMbps: null},
    peerJobs: {active: 0, served: 0}, receipts: 0, ledger: null, payments: null, bannedPeers: 0,
    requests: {total: 3, active: 0, succeeded: 3, failed: 0, cancelled: 0, completionTokens: 30}
};

const peer = 'c0ffee'.repeat(10) + 'c0ff';
const cluster: ClusterStatus = {
    pipelines: [{
        model: 'llama-3.1-70b', state: 'loading', reason: null,
        stages: [
            {peer: 'ab'.repeat(32), self: true, layers: [0, 39], bytes: 21e9, transferBytes: 0, loadRatio: 0.5, hopMs: null, successRate: null, bytesSent: 0, bytesReceived: 0, weights: {from: 'held', fetch: null}},
            {peer, self: false, layers: [40, 79], bytes: 21e9, transferBytes: 21e9, loadRatio: 0.5, hopMs: 12.5, successRate: 0.97, bytesSent: 8.4e9, bytesReceived: 3.4e6, weights: {from: 'coordinator', fetch: null}}
        ],
        plan: {reason: '2 stages: self 0–39, c0ffeec0 40–79 (must receive 21.0 GB); ~38.3 ms/token', estimatedMsPerToken: 38.25},
        placementMatches: null, failovers: 1,
        failures: [{peer: 'beef'.repeat(16), reason: 'the tunnel closed', at: '2026-11-25T10:00:03.000Z'}],
        spares: [{peer: 'f00d'.repeat(16), replaces: peer, layers: [40, 79], state: 'fetching', doneBytes: 5.25e9, totalBytes: 21e9, reason: null}],
        // drafts that never agreed: every pass yields its own token alone
        speculation: addSpeculation(undefined, {drafter: 'draft', passes: 16, tokens: 16, drafted: 48, accepted: 0})
    }, {
        model: 'qwen-72b', state: 'waiting', reason: 'qwen-72b is to be split over at least 2 stages, and there are 0', stages: [], plan: null,
        placementMatches: null, failovers: 0, failures: [], spares: [], speculation: null
    }],
    hosting: {available: true, reason: null, sessions: 1, freeBytes: 12e9}
};

/** A node API answering /api/node, and /api/cluster with `cluster` (404 when undefined, as a node older than it). */
async function fakeNode(t: {teardown(fn: () => Promise<void>): void}, clusterDocument: ClusterStatus | undefined) {
    const server = createServer((request, response) => {
        const body = request.url === '/api/node' ? nodeStatus : request.url === '/api/cluster' ? clusterDocument : undefined;
        response.writeHead(body === undefined ? 404 : 200, {'content-type': 'application/json'});
        response.end(JSON.stringify(body ?? {error: {message: `Unknown endpoint: GET ${request.url}`}}));
    }).listen(0, '127.0.0.1');
    await once(server, 'listening');
    const dataDir = await mkdtemp(join(tmpdir(), 'strongdoge-status-'));
    t.teardown(async () => {
        server.close();
        await rm(dataDir, {recursive: true, force: true});
    });
    return ['--port', String((server.address() as {port: number}).port), '--data-dir', dataDir];
}

test('status prints the pipelines this node coordinates, their stages, and the layers it hosts', async (t) => {
    const result = await runCli(['status', ...await fakeNode(t, cluster)]);
    t.is(result.code, 0, result.stderr);
    const {stdout} = result;
    t.regex(stdout, /^node {5}q3xk8ume/m);
    t.regex(stdout, /^device {3}CPU, 4 threads; llama\.cpp built for this machine$/m);
    t.regex(stdout, /^models {3}demo \(4 layers, 0 on GPU, flash attention off\)\n {11}speculative lookup: 62% accepted \(13 of 21 drafted\), 2\.4 tokens per pass$/m);
    t.regex(stdout, /^ {9}big \(32 layers, 32 on GPU, flash attention auto\)\n {11}speculative draft with small-draft\.gguf \(200\.0 MB\)$/m, 'no request yet: the drafter alone');
    t.regex(stdout, /^hosting {2}1 session, 12\.0 GB offered$/m);
    t.regex(stdout, /^NAT {6}consistent at 100\.64\.7\.2:40123, not reachable: peers punch holes or relay$/m);
    t.regex(stdout, /^relay {4}auto, not offered$/m);
    t.regex(stdout, /^pipeline llama-3\.1-70b: loading, ~38\.3 ms\/token, 1 failover$/m);
    t.regex(stdout, /^ {9}speculative draft: 0% accepted \(0 of 48 drafted\), 1\.0 tokens per pass$/m);
    t.regex(stdout, /^ {9}plan: 2 stages: self 0–39, c0ffeec0 40–79 \(must receive 21\.0 GB\); ~38\.3 ms\/token$/m);
    t.regex(stdout, /^ {9}last failure 2026-11-25T10:00:03\.000Z beefbeefbeefbeef: the tunnel closed$/m);
    t.regex(stdout, /^ {9}spare f00df00df00df00d for c0ffeec0ffeec0ff \(layers 40-79\): fetching 25% \(5\.3 GB \/ 21\.0 GB\)$/m);
    t.regex(stdout, /^ {9}PEER {14}LAYERS {2}SHARE {2}BYTES {4}WEIGHTS {22}HOP {6}SUCCESS {2}SENT {4}RECEIVED$/m);
    t.regex(stdout, /^ {9}this node {9}0-39 {4}50% {4}21\.0 GB {2}- {28}- {8}- {8}- {7}-$/m);
    t.regex(stdout, /^ {9}c0ffeec0ffeec0ff {2}40-79 {3}50% {4}21\.0 GB {2}sent 40% \(8\.4 GB \/ 21\.0 GB\) {2}12\.5 ms {2}97% {6}8\.4 GB {2}3\.4 MB$/m);
    t.regex(stdout, /^pipeline qwen-72b: waiting, 0 failovers\n {9}waiting: qwen-72b is to be split over at least 2 stages, and there are 0$/m);
    t.notRegex(stdout, /waiting: qwen-72b[^\n]*\n {9}speculative/, 'a pipeline that served nothing yet has no speculation');
});

test('status shows no cluster for a node that neither shards nor hosts, nor for an older node without /api/cluster', async (t) => {
    const idle: ClusterStatus = {pipelines: [], hosting: {available: false, reason: 'offline', sessions: 0, freeBytes: 0}};
    for (const document of [idle, undefined]) {
        const result = await runCli(['status', ...await fakeNode(t, document)]);
        t.is(result.code, 0, result.stderr);
        t.regex(result.stdout, /^requests 3 \(0 failed, 0 cancelled\), 30 tokens generated$/m);
        t.notRegex(result.stdout, /hosting|pipeline/);
    }
});
