import type {EngineSupervisor} from '../engine/engine-supervisor.js';
import type {ClusterCoordinator} from '../inference/sharded/cluster-coordinator.js';
import type {JobProvider} from '../inference/remote/jobs/job-provider.js';
import type {JobRequester} from '../inference/remote/jobs/job-requester.js';
import type {SwarmNode} from '../swarm/swarm-node.js';
import type {Logger} from './logger.js';
import {shortPeerId} from '../core/display.js';

/**
 * The log lines of the node's parts' events. Sizes, timings and reasons only: prompts and outputs, a client's or a
 * peer's, are never logged (README, "Security").
 */

export function logEngineEvents(engine: EngineSupervisor, logger: Logger) {
    let lastLoggedProgress = -1;
    engine.on('loadProgress', (model, progress) => {
        if (progress === 1 || progress - lastLoggedProgress >= 0.25) {
            lastLoggedProgress = progress === 1 ? -1 : progress;
            logger.info({model, progress: Number(progress.toFixed(2))}, 'loading model');
        }
    });
    engine.on('state', (state) => logger.debug({state}, 'engine state'));
    engine.on('workerExit', (code, signal) => {
        if (engine.state !== 'stopped')
            logger.error({code, signal, restarts: engine.getStatus().restarts}, 'engine process exited; restarting');
    });
    engine.on('workerLog', (line) => logger.warn({source: 'engine'}, line));
}

export function logPipelineEvents(cluster: ClusterCoordinator, logger: Logger) {
    cluster.on('log', (level, message, fields) => logger[level](fields, message));
    cluster.on('state', (state) => logger.info({model: cluster.modelId, state, reason: cluster.reason}, 'pipeline'));
    cluster.engine.on('workerLog', (line) => logger.warn({source: 'pipeline engine'}, line));
    cluster.engine.on('workerExit', (code, signal) => logger.warn({model: cluster.modelId, code, signal}, 'pipeline engine exited; the pipeline is formed again'));
}

export function logPeerJobs(provider: JobProvider | undefined, requester: JobRequester | undefined, logger: Logger) {
    provider?.on('served', (job) => logger.info({peerJob: {peer: shortPeerId(job.peerId), kind: job.kind, model: job.model, promptTokens: job.promptTokens,
        completionTokens: job.completionTokens, durationMs: Math.round(job.durationMs), outcome: job.outcome}}, 'served a peer job'));
    provider?.on('refused', (peerId, code) => logger.info({peer: shortPeerId(peerId), code}, 'refused a peer job'));
    provider?.on('voucherRefused', (peerId, jobId, reason) => logger.warn({peer: shortPeerId(peerId), jobId, reason},
        'a peer\'s voucher does not pay for its job: it gets no job until it does'));
    for (const side of [provider, requester])
        side?.on('receiptRejected', (peerId, jobId, reason) => logger.warn({peer: shortPeerId(peerId), jobId, reason}, 'rejected a receipt'));
}

export function logSwarmEvents(swarm: SwarmNode, logger: Logger) {
    swarm.on('peerJoined', (peer) => logger.info({peer: shortPeerId(peer.id), software: peer.software,
        models: peer.capabilities.models.map((model) => model.id)}, 'peer connected'));
    swarm.on('peerLeft', (peerId, reason) => logger.info({peer: shortPeerId(peerId), reason: reason.message}, 'peer disconnected'));
    swarm.on('connectionRefused', (peerId, reason) => logger.debug({peer: shortPeerId(peerId), reason}, 'peer connection refused'));
    swarm.on('peerBanned', (peerId, reason, until) => logger.warn({peer: shortPeerId(peerId), reason, until: new Date(until).toISOString()}, 'peer banned'));
    swarm.on('connectAttemptFailed', ({peerId, code, message, relay, attempts}) => logger.debug({peer: shortPeerId(peerId), code,
        ...(relay !== null && {relay: shortPeerId(relay)}), attempts, reason: message}, 'could not connect to a peer'));
    swarm.on('isolated', (nat, failures) => logger.warn({nat: nat.type, reachable: nat.reachable,
        failedAttempts: failures.map(({peerId, code}) => ({peer: shortPeerId(peerId), code}))},
    failures.some((failure) => failure.code.includes('HOLEPUNCH'))
        ? 'no peer reached yet: hole punching failed and no relay was usable; a reachable node with --relay on, or --relay-through <node id>, would carry the connection'
        : 'no peer reached yet'));
    swarm.on('relayOffer', (offering) => logger.info({relay: offering, ...swarm.relayStatus()}, offering ? 'relaying for peers' : 'stopped relaying for peers'));
    swarm.on('connectionFailed', (peerId, reason) => logger.debug({peer: shortPeerId(peerId), reason: reason.message}, 'peer connection failed before hello'));
    swarm.on('peerIncompatible', (peerId, message) => logger.warn({peer: shortPeerId(peerId)}, `incompatible peer: ${message}`));
}
