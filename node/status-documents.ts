import type {EngineSupervisor} from '../engine/engine-supervisor.js';
import type {ClusterCoordinator} from '../inference/sharded/cluster-coordinator.js';
import type {ShardHost} from '../inference/sharded/shard-host.js';
import type {JobProvider} from '../inference/remote/jobs/job-provider.js';
import type {RequestStats} from '../proxy/request-stats.js';
import type {NodeIdentity} from '../swarm/node-identity.js';
import type {SwarmNode} from '../swarm/swarm-node.js';
import type {NodeCapabilities} from './node-capabilities.js';
import type {NodeLedger} from './node-ledger.js';
import type {ClusterStatus, NodeStatus, PeersStatus} from './node-status.js';
import {packageInfo} from './package-info.js';

/** The status API's documents (docs/architecture.md, "Status API"), built from the node's parts; node-status.ts has their schemas. */

export interface NodeStatusSources {
    identity: NodeIdentity,
    settings: {offline: boolean, network: string, networkSecret?: string | undefined},
    startedAt: number,
    proxyUrl: string | undefined,
    engine: EngineSupervisor,
    capabilities: NodeCapabilities,
    swarm: SwarmNode | undefined,
    provider: JobProvider | undefined,
    servedPeerJobs: number,
    ledger: NodeLedger | undefined,
    /** The node's payments (node/node-payments.ts): what it earned, owes, paid and deposited; defaults to none (payments off). */
    payments?: {summary(): NonNullable<NodeStatus['payments']> | null} | undefined,
    stats: RequestStats
}

/** `GET /api/node` */
export function nodeStatus({identity, settings, startedAt, proxyUrl, engine, capabilities, swarm, provider, servedPeerJobs, ledger, payments, stats}: NodeStatusSources): NodeStatus {
    const status = engine.getStatus();
    return {
        id: identity.id,
        shortId: identity.shortId,
        network: settings.offline ? null : settings.network,
        privateNetwork: settings.networkSecret !== undefined,
        version: packageInfo.version,
        uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
        proxyUrl: proxyUrl ?? null,
        device: status.device ?? null,
        compute: capabilities.current().compute,
        engine: {state: status.state, pid: status.pid ?? null, restarts: status.restarts, lastError: status.lastError ?? null,
            running: status.running, queued: status.queued},
        models: status.models.map((model) => ({...model, draft: model.draft ?? null, speculation: status.speculation[model.id] ?? null})),
        peers: swarm?.peers().length ?? 0,
        nat: swarm?.natStatus() ?? null,
        relay: swarm?.relayStatus() ?? null,
        peerJobs: {active: provider?.activeJobs ?? 0, served: servedPeerJobs},
        receipts: (ledger?.log.tally.servedJobs ?? 0) + (ledger?.log.tally.consumedJobs ?? 0),
        ledger: ledger === undefined ? null : {core: ledger.log.key, length: ledger.log.length, points: ledger.log.tally.points,
            anchoring: ledger.anchorer !== undefined},
        payments: payments?.summary() ?? null,
        bannedPeers: swarm?.bans.active().length ?? 0,
        requests: stats.snapshot()
    };
}

/** `GET /api/peers` */
export function peersStatus(swarm: SwarmNode | undefined): PeersStatus {
    const usage = swarm?.usage();
    const counts = swarm?.connectionCounts();
    return {
        peers: swarm?.peers().map((peer) => {
            const used = usage!.get(peer.id) ?? {reasons: [], inUse: false, idleMs: 0};
            return {...peer.toJSON(), route: swarm.route(peer.id), reasons: used.reasons, inUse: used.inUse, idleSeconds: Math.round(used.idleMs / 1000)};
        }) ?? [],
        connections: counts === undefined ? null : {held: counts.held, inUse: counts.inUse, maxPeers: counts.maxPeers,
            idleTimeoutSeconds: Math.round(counts.idleTimeoutMs / 1000)},
        announced: swarm?.announcements() ?? null,
        banned: swarm?.bans.active().map(({peerId, reason, offences, until}) =>
            ({peerId, reason, offences, until: new Date(until).toISOString()})) ?? [],
        unreachable: swarm?.connectionFailures().map((failure) => ({...failure, at: new Date(failure.at).toISOString()})) ?? []
    };
}

/** `GET /api/cluster`: the pipelines this node coordinates, and why it hosts no layers when it does not. */
export function clusterStatus(clusters: readonly ClusterCoordinator[], shardHost: ShardHost | undefined, offline: boolean): ClusterStatus {
    return {
        pipelines: clusters.map((cluster) => cluster.describe()),
        hosting: {
            available: shardHost?.available ?? false,
            reason: shardHost === undefined ? (offline ? 'offline' : 'this node does not serve peers (--serve-peers off)') : shardHost.unavailableReason,
            sessions: shardHost?.sessionCount ?? 0,
            freeBytes: shardHost?.freeBytes ?? 0
        }
    };
}
