import type {RequestRecord} from '../proxy/request-stats.js';
import type {DashboardStore} from '../tui/dashboard-store.js';
import type {StrongdogeNode} from './strongdoge-node.js';

/** How often the slower-changing parts (peers, device, engine) are read, and a throughput sample closes. */
const REFRESH_MS = 1_000;

/** Feeds one node's events into the dashboard store; returns a function that stops feeding. */
export function feedDashboard(node: StrongdogeNode, store: DashboardStore, apiKeyRequired: boolean): () => void {
    const refresh = () => {
        const info = node.describe();
        store.set('node', {
            id: info.id, shortId: info.shortId, network: info.network, privateNetwork: info.privateNetwork,
            version: info.version, proxyUrl: info.proxyUrl ?? null, apiKeyRequired,
            nat: info.nat && {type: info.nat.type, reachable: info.nat.reachable},
            relayPairs: info.relay?.offering ? info.relay.pairs : null
        });
        store.set('engine', {state: info.engine.state, restarts: info.engine.restarts, running: info.engine.running,
            queued: info.engine.queued, models: info.models.map((model) => ({id: model.id, speculation: model.speculation}))});
        if (info.device)
            store.set('device', {...info.device, measuredTflops: info.compute.measuredTflops, lookupTflops: info.compute.lookupTflops,
                generationTokensPerSecond: info.compute.generationTokensPerSecond});
        const usage = node.swarm?.usage();
        store.set('peers', (node.swarm?.peers() ?? []).map((peer) => ({
            id: peer.id, rttMs: peer.rtt.smoothedMs ?? null,
            tflops: peer.capabilities.compute.measuredTflops ?? peer.capabilities.compute.lookupTflops,
            backend: peer.capabilities.device.backend, vramTotalBytes: peer.capabilities.device.vramTotalBytes,
            models: peer.capabilities.models.map((model) => model.id), successRate: peer.successRate, requestsSent: peer.requestsSent,
            relayed: node.swarm!.route(peer.id).kind === 'relayed',
            reasons: usage?.get(peer.id)?.reasons ?? []
        })));
        // The status API's own document: the weights sent while a pipeline loads advance once a second with it.
        store.set('cluster', node.describeCluster());
        const ledger = node.ledger?.describe();
        if (ledger !== undefined) {
            const {anchoring} = ledger;
            store.set('ledger', {
                core: ledger.core, records: ledger.length, points: ledger.points, pendingRecords: ledger.pendingRecords,
                pendingAnchor: anchoring.pending && {logLength: anchoring.pending.logLength, tx: anchoring.pending.txHash},
                lastAnchor: anchoring.lastAnchor && {tx: anchoring.lastAnchor.txHash, block: anchoring.lastAnchor.blockNumber,
                    logLength: anchoring.lastAnchor.logLength, at: anchoring.lastAnchor.at},
                nextAnchorAt: anchoring.nextAttemptAt, anchoringOff: anchoring.offReason
            });
        }
        store.set('payments', info.payments);
        store.tickThroughput();
    };

    const onLoadProgress = (model: string, fraction: number) => {
        const others = store.state.progress.filter((item) => item.label !== `loading ${model}`);
        store.set('progress', fraction >= 1 ? others : [...others, {label: `loading ${model}`, fraction}]);
    };
    const onTokens = (kind: 'local' | 'forPeers', count: number) => store.countTokens(kind, count);
    const onRequest = (record: RequestRecord) => store.addRequest({
        id: record.id, model: record.model ?? '?', route: record.route, tokens: record.completionTokens,
        tokensPerSecond: record.generationTokensPerSecond, status: record.status, finishedAt: record.finishedAt
    });

    node.engine.on('loadProgress', onLoadProgress);
    node.tokens.on('tokens', onTokens);
    node.stats.on('request', onRequest);
    refresh();
    const timer = setInterval(refresh, REFRESH_MS);
    return () => {
        clearInterval(timer);
        node.engine.off('loadProgress', onLoadProgress);
        node.tokens.off('tokens', onTokens);
        node.stats.off('request', onRequest);
    };
}

/** Log records at warning level and above become the dashboard's error line, readable, without stacks. */
export function dashboardLogSink(store: DashboardStore) {
    return {
        write(line: string) {
            try {
                const record = JSON.parse(line) as {level: number, msg?: string, err?: {message?: string}};
                if (record.level >= 40)
                    store.addError(`${record.msg ?? ''}${record.err?.message && !record.msg?.includes(record.err.message) ? `: ${record.err.message}` : ''}`);
            } catch {
                // not a log record
            }
            return true;
        }
    };
}
