import {addSpeculation} from '../core/speculation-summary.js';
import {emptyDashboardState, type DashboardState} from '../tui/dashboard-state.js';

/** Two requests of the 8B model drafted by lookup: 13 of 21 drafted tokens kept, 24 tokens in 10 passes. */
export const LOOKUP_SPECULATION = addSpeculation(addSpeculation(undefined, {drafter: 'lookup', passes: 6, tokens: 15, drafted: 13, accepted: 9}),
    {drafter: 'lookup', passes: 4, tokens: 9, drafted: 8, accepted: 4});
/** The 70B pipeline's draft model: 42 of 60 drafted tokens kept, 62 tokens in 20 passes. */
export const DRAFT_SPECULATION = addSpeculation(undefined, {drafter: 'draft', passes: 20, tokens: 62, drafted: 60, accepted: 42});

export function busyDashboardState(): DashboardState {
    const base = emptyDashboardState();
    return {
        ...base,
        node: {id: 'ab'.repeat(32), shortId: 'q3xk8ume', network: 'public', privateNetwork: false, version: '0.1.0',
            proxyUrl: 'http://127.0.0.1:9337/v1', apiKeyRequired: true, nat: {type: 'random', reachable: false}, relayPairs: null},
        device: {backend: 'cuda', gpuNames: ['NVIDIA GeForce RTX 4090'], vramTotalBytes: 24e9, vramFreeBytes: 20e9, cpuThreads: 15,
            measuredTflops: 120.5, lookupTflops: 165, generationTokensPerSecond: 140},
        engine: {state: 'ready', restarts: 1, running: 2, queued: 1, models: [{id: 'llama-3.1-8b', speculation: LOOKUP_SPECULATION}]},
        progress: [{label: 'loading qwen-7b', fraction: 0.42}],
        peers: [
            {id: 'c0ffee'.repeat(10) + 'c0ff', rttMs: 23.4, tflops: 60.1, backend: 'cuda', vramTotalBytes: 12e9, models: ['llama-3.1-8b'], successRate: 0.97, requestsSent: 31, relayed: false, reasons: ['network', 'provider:llama-3.1-8b']},
            {id: 'deadbeef'.repeat(8), rttMs: null, tflops: null, backend: false, vramTotalBytes: 0, models: [], successRate: 0.5, requestsSent: 0, relayed: true, reasons: ['network']}
        ],
        cluster: {
            pipelines: [{
                model: 'llama-3.1-70b', state: 'ready', reason: null,
                stages: [
                    {peer: 'ab'.repeat(32), self: true, layers: [0, 39], bytes: 21e9, transferBytes: 0, loadRatio: 0.5, hopMs: null, successRate: null, bytesSent: 0, bytesReceived: 0},
                    {peer: 'c0ffee'.repeat(10) + 'c0ff', self: false, layers: [40, 79], bytes: 21e9, transferBytes: 21e9, loadRatio: 0.5, hopMs: 12.5, successRate: 0.97, bytesSent: 21.3e9, bytesReceived: 3.4e6}
                ],
                plan: {reason: '2 stages: the fewest that fit', estimatedMsPerToken: 38.25},
                placementMatches: true, failovers: 0, failures: [], speculation: DRAFT_SPECULATION
            }],
            hosting: {available: true, reason: null, sessions: 1, freeBytes: 12e9}
        },
        throughput: {local: [0, 10, 50, 120, 80, 140], forPeers: [0, 0, 30, 30, 0, 60]},
        requests: [
            {id: 'r2', model: 'llama-3.1-8b', route: 'peers:c0ffeec0ffeec0ff', tokens: 128, tokensPerSecond: 88.2, status: 200, finishedAt: Date.parse('2026-11-25T10:00:05Z')},
            {id: 'r1', model: 'llama-3.1-8b', route: 'local', tokens: 12, tokensPerSecond: 140, status: 503, finishedAt: Date.parse('2026-11-25T10:00:01Z')}
        ],
        ledger: {core: 'c061f56bb76bad5f851292c6733d11961f59a9e6d4f014ce509aa2aca8373a73', records: 42, points: 1234, pendingRecords: 3, pendingAnchor: null, lastAnchor: {tx: '0x9f86d081884c7d659a2feaa0c55ad015', block: 123456, logLength: 40, at: new Date(Date.now() - 5 * 60_000).toISOString()}, nextAnchorAt: new Date(Date.now() + 55 * 60_000).toISOString(), anchoringOff: null},
        errors: [{at: 0, message: 'peer banned: flood: too many messages'}]
    };
}
