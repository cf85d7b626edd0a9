import {basename} from 'node:path';
import {Command} from 'commander';
import type {Capabilities} from '../../swarm/capabilities.js';
import type {ClusterStatus, NodeStatus, PeersStatus, PeerStatus, SpeculationStatus} from '../../node/node-status.js';
import {fetchNodeStatus, fetchNodeStatusIfKnown, type NodeAddressFlags} from '../node-client.js';
import {clusterActive} from '../../tui/dashboard-state.js';
import {formatBytes, plural, shortPeerId} from '../../core/display.js';
import {formatDuration, formatEngineBuild, formatHosting, formatLayers, formatNatAddress, formatTable, formatTransfer, formatWeights} from '../../tui/text-format.js';
import {addNodeAddressOptions} from './shared-options.js';

function deviceText(capabilities: Capabilities) {
    const {device, compute} = capabilities;
    const gpu = device.backend ? `${device.backend} ${device.gpuNames[0] ?? ''}`.trim() : 'CPU';
    const vram = device.backend ? ` ${formatBytes(device.vramFreeBytes)}/${formatBytes(device.vramTotalBytes)} free` : '';
    const tflops = compute.measuredTflops ?? compute.lookupTflops;
    return `${gpu}${vram}${tflops === null ? '' : `, ${tflops.toFixed(2)} TFLOPS`}`;
}

function routeText(route: PeerStatus['route']) {
    if (route.kind !== 'relayed')
        return 'direct';
    return `via ${route.relay?.slice(0, 8) ?? route.relayKey?.slice(0, 8) ?? 'relay'}`;
}

/** Why the connection is held, and how long it has been idle when nothing runs over it: `network, relay` or `on-demand:x (idle 2m)`. */
function whyText(peer: PeerStatus) {
    return `${peer.reasons.join(', ') || '-'}${peer.inUse || peer.idleSeconds === 0 ? '' : ` (idle ${formatDuration(peer.idleSeconds)})`}`;
}

/** `announced on the DHT as a provider of 1 model and as a host`: how peers beyond the connected ones find this node. */
function announcedText({models, host}: NonNullable<PeersStatus['announced']>) {
    const as = [...(models.length > 0 ? [`a provider of ${plural(models.length, 'model')}`] : []), ...(host ? ['a host for peers\' layers'] : [])];
    return as.length === 0 ? 'announced on the DHT as nothing beyond the network (no model loaded, no room for layers)' : `announced on the DHT as ${as.join(' and as ')}`;
}

/** `7 of 64 connections (--max-peers), 2 in use; on-demand ones close after 5m idle`. */
function connectionsText(connections: NonNullable<PeersStatus['connections']>) {
    const idle = connections.idleTimeoutSeconds === 0 ? 'never closed as idle' : `close after ${formatDuration(connections.idleTimeoutSeconds)} idle`;
    return `${connections.held} of ${connections.maxPeers} connections (--max-peers), ${connections.inUse} in use; on-demand ones ${idle}`;
}

function natText(nat: NonNullable<NodeStatus['nat']>) {
    return `${formatNatAddress(nat)}, ${nat.reachable ? 'reachable by peers' : 'not reachable: peers punch holes or relay'}`;
}

function relayText(relay: NonNullable<NodeStatus['relay']>) {
    const through = relay.through.length > 0 ? `; through ${relay.through.map((id) => shortPeerId(id)).join(', ')} first` : '';
    if (!relay.offering)
        return `${relay.mode}, not offered${through}`;
    const cap = relay.maxMbps === null ? '' : ` (cap ${relay.maxMbps} Mbit/s)`;
    return `${relay.mode}, offered: ${relay.clients} clients, ${relay.pairs} pairs, ${formatBytes(relay.bytesRelayed)} relayed, ${relay.mbps.toFixed(2)} Mbit/s${cap}${through}`;
}

/** `62% accepted (80 of 129 drafted), 2.4 tokens per pass`: what speculation yielded so far. */
function speculationText({acceptance, accepted, drafted, tokensPerPass}: NonNullable<SpeculationStatus>) {
    const kept = acceptance === null ? 'nothing drafted yet' : `${Math.round(acceptance * 100)}% accepted (${accepted} of ${drafted} drafted)`;
    return `${kept}, ${tokensPerPass === null ? '-' : tokensPerPass.toFixed(1)} tokens per pass`;
}

/** A served model, and below it how its tokens are drafted (`--speculative`, `--draft-model`) and what that yielded. */
function modelLines(model: NodeStatus['models'][number]) {
    const draft = model.draft === null ? '' : ` with ${basename(model.draft.path)} (${formatBytes(model.draft.sizeBytes)})`;
    return [`${model.id} (${model.layers} layers, ${model.gpuLayers} on GPU, flash attention ${model.flashAttention})`,
        `  speculative ${model.speculative}${draft}${model.speculation === null ? '' : `: ${speculationText(model.speculation)}`}`];
}

function peersCommand() {
    return addNodeAddressOptions(new Command('peers').description('list the peers of the running node'))
        .action(async (flags: NodeAddressFlags & {json?: boolean}) => {
            const document = await fetchNodeStatus(flags, '/api/peers');
            const {peers, banned, unreachable, connections} = document;
            if (flags.json) {
                process.stdout.write(JSON.stringify(document, null, 2) + '\n');
                return;
            }
            if (peers.length === 0)
                process.stdout.write('no peers connected\n');
            else
                process.stdout.write(formatTable(['PEER', 'WHY', 'RTT', 'ROUTE', 'DEVICE', 'MODELS', 'LOAD', 'SUCCESS', 'VERSION'], peers.map((peer) => [
                    shortPeerId(peer.id),
                    whyText(peer),
                    peer.rttMs === null ? '-' : `${peer.rttMs.toFixed(1)} ms`,
                    routeText(peer.route),
                    deviceText(peer.capabilities),
                    peer.capabilities.models.map((model) => model.loaded ? model.id : `${model.id} (on disk)`).join(', ') || '-',
                    `${peer.capabilities.load.active}+${peer.capabilities.load.queued}`,
                    `${Math.round(peer.requests.successRate * 100)}% of ${peer.requests.sent}`,
                    peer.software
                ])) + '\n');
            if (connections !== null)
                process.stdout.write(`\n${connectionsText(connections)}\n`);
            if (document.announced !== null)
                process.stdout.write(`${announcedText(document.announced)}\n`);
            if (unreachable.length > 0)
                process.stdout.write(`\n${unreachable.length} unreachable: ${unreachable.map((failure) =>
                    `${shortPeerId(failure.peerId)} (${failure.code}${failure.relay ? ` via relay ${shortPeerId(failure.relay)}` : ''}, ${failure.attempts} attempt${failure.attempts === 1 ? '' : 's'})`).join('; ')}\n`);
            if (banned.length > 0)
                process.stdout.write(`\n${banned.length} banned: ${banned.map((ban) => `${shortPeerId(ban.peerId)} (${ban.reason})`).join('; ')}\n`);
        });
}

/** Pipelines this node coordinates, each with its stages, and the layers it hosts: lines under `status`'s keys. */
function clusterLines(cluster: ClusterStatus) {
    const indent = (text: string) => text.split('\n').map((line) => `${' '.repeat(9)}${line}`).join('\n');
    const lines = [`hosting  ${formatHosting(cluster.hosting)}`];
    for (const pipeline of cluster.pipelines) {
        const failures = `${pipeline.failovers} failover${pipeline.failovers === 1 ? '' : 's'}`;
        lines.push(`pipeline ${pipeline.model}: ${pipeline.state}${pipeline.plan ? `, ~${pipeline.plan.estimatedMsPerToken.toFixed(1)} ms/token` : ''}, ${failures}`
            + `${pipeline.placementMatches === false ? ', llama.cpp placed layers off the plan' : ''}`);
        if (pipeline.reason !== null)
            lines.push(indent(`waiting: ${pipeline.reason}`));
        if (pipeline.speculation !== null)
            lines.push(indent(`speculative ${pipeline.speculation.drafter}: ${speculationText(pipeline.speculation)}`));
        if (pipeline.plan)
            lines.push(indent(`plan: ${pipeline.plan.reason}`));
        const last = pipeline.failures.at(-1);
        if (last)
            lines.push(indent(`last failure ${last.at} ${shortPeerId(last.peer)}: ${last.reason}`));
        for (const spare of pipeline.spares)
            lines.push(indent(`spare ${shortPeerId(spare.peer)} for ${shortPeerId(spare.replaces)} (layers ${formatLayers(spare.layers)}): ${spare.state === 'fetching'
                ? `fetching ${formatTransfer(spare.doneBytes, spare.totalBytes)}` : spare.state}${spare.reason === null ? '' : `, ${spare.reason}`}`));
        if (pipeline.stages.length > 0)
            lines.push(indent(formatTable(['PEER', 'LAYERS', 'SHARE', 'BYTES', 'WEIGHTS', 'HOP', 'SUCCESS', 'SENT', 'RECEIVED'], pipeline.stages.map((stage) => [
                stage.self ? 'this node' : shortPeerId(stage.peer),
                formatLayers(stage.layers),
                `${Math.round(stage.loadRatio * 100)}%`,
                formatBytes(stage.bytes),
                stage.self ? '-' : formatWeights(stage.weights, stage.bytesSent, stage.transferBytes),
                stage.hopMs === null ? '-' : `${stage.hopMs.toFixed(1)} ms`,
                stage.successRate === null ? '-' : `${Math.round(stage.successRate * 100)}%`,
                stage.self ? '-' : formatBytes(stage.bytesSent),
                stage.self ? '-' : formatBytes(stage.bytesReceived)
            ]))));
    }
    return lines;
}

function statusCommand() {
    return addNodeAddressOptions(new Command('status').description('show the running node: identity, network, device, models, traffic, and its pipelines and hosted layers'))
        .action(async (flags: NodeAddressFlags & {json?: boolean}) => {
            const node = await fetchNodeStatus(flags, '/api/node');
            if (flags.json) {
                process.stdout.write(JSON.stringify(node, null, 2) + '\n');
                return;
            }
            const device = (node.device?.backend ? `${node.device.backend} (${node.device.gpuNames.join(', ')})` : `CPU, ${node.device?.cpuThreads ?? '?'} threads`)
                + (node.device ? `; llama.cpp ${formatEngineBuild(node.device.build)}` : '');
            const lines = [
                ['node', `${node.shortId}  (${node.id})`],
                ['version', node.version],
                ['up', formatDuration(node.uptimeSeconds)],
                ['API', `${node.proxyUrl}`],
                ['network', node.network === null ? 'offline' : `${node.network}${node.privateNetwork ? ' (private)' : ''}, ${node.peers} peers`],
                ...(node.nat ? [['NAT', natText(node.nat)]] : []),
                ...(node.relay ? [['relay', relayText(node.relay)]] : []),
                ['device', device],
                ['engine', `${node.engine.state}, ${node.engine.running} running, ${node.engine.queued} queued, ${node.engine.restarts} restarts`],
                ['models', node.models.flatMap(modelLines).join(`\n${' '.repeat(9)}`) || 'none'],
                ['requests', `${node.requests.total} (${node.requests.failed} failed, ${node.requests.cancelled} cancelled), ${node.requests.completionTokens} tokens generated`],
                ['ledger', node.ledger === null ? 'opening' : `${node.ledger.points} points, ${node.ledger.length} records in log ${node.ledger.core.slice(0, 16)}…, anchoring ${node.ledger.anchoring ? 'on' : 'off'}`]
            ];
            // A node older than /api/cluster answers 404: it has no cluster to show.
            const cluster = await fetchNodeStatusIfKnown(flags, '/api/cluster');
            const shown = [...lines.map(([key, value]) => `${key!.padEnd(9)}${value}`), ...(cluster && clusterActive(cluster) ? clusterLines(cluster) : [])];
            process.stdout.write(shown.join('\n') + '\n');
        });
}

export function statusCommands() {
    return [statusCommand(), peersCommand()];
}
