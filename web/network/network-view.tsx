import type {ComponentChildren} from 'preact';
import type {ClusterStatus, LedgerStatus, NetworkModelsStatus, NodeStatus, PeersStatus} from '../../node/node-status.js';
import {fetchStatus} from '../api-client.js';
import {formatAge, formatBytes, formatDuration, formatHosting, formatMs, formatPercent, formatProviderCount, formatTime, plural, shortPeerId} from '../format.js';
import {usePoll, type Polled} from '../use-poll.js';
import {PipelineDiagram} from './pipeline-diagram.js';
import {ThroughputChart} from './throughput-chart.js';
import type {ThroughputSample} from './throughput-samples.js';

/**
 * The network as this node sees it, from the `/api/*` documents (node/node-status.ts), polled while shown. What a
 * peer sends (ids, model names, reasons) is rendered as text: Preact never reads a string as markup.
 */

/** How often the documents are read while the view is shown; the ledger and the model table change slowly. */
export const NETWORK_POLL_MS = 2_000;
const SLOW_POLL_MS = 5_000;

const loadPeers = (signal: AbortSignal) => fetchStatus('/api/peers', signal);
const loadCluster = (signal: AbortSignal) => fetchStatus('/api/cluster', signal);
const loadNetworkModels = (signal: AbortSignal) => fetchStatus('/api/network/models', signal);
const loadLedger = (signal: AbortSignal) => fetchStatus('/api/ledger', signal);

function Card({title, id, children, error}: {title: ComponentChildren, id: string, children: ComponentChildren, error?: string | null}) {
    return (
        <section class="card" id={id} aria-labelledby={`${id}-title`}>
            <h2 id={`${id}-title`}>{title}</h2>
            {error && <p class="error" role="status">{error}</p>}
            {children}
        </section>
    );
}

/** A card whose document has not arrived yet. */
function Pending({title, id, error}: {title: string, id: string, error: string | null}) {
    return <Card title={title} id={id} error={error}><p class="muted">Loading…</p></Card>;
}

function Fact({label, children}: {label: string, children: ComponentChildren}) {
    return <><dt>{label}</dt><dd>{children}</dd></>;
}

function NodeCard({node, error, throughput}: {node: NodeStatus | null, error: string | null, throughput: ThroughputSample[]}) {
    if (node === null)
        return <Pending title="This node" id="node" error={error}/>;
    const {device, engine} = node;
    return (
        <Card title="This node" id="node" error={error}>
            <dl class="facts">
                <Fact label="id"><span class="mono" title={node.id}>{node.shortId}</span></Fact>
                <Fact label="network">{node.network === null ? 'offline' : `${node.network}${node.privateNetwork ? ' (private)' : ''}`} · {plural(node.peers, 'peer')}</Fact>
                <Fact label="version">{node.version} · up {formatDuration(node.uptimeSeconds)}</Fact>
                <Fact label="device">{device === null ? 'measuring…' : [
                    device.backend === false ? 'CPU' : device.backend.toUpperCase(),
                    device.gpuNames.join(', '),
                    device.vramTotalBytes > 0 && `${formatBytes(device.vramFreeBytes)} free of ${formatBytes(device.vramTotalBytes)}`,
                    plural(device.cpuThreads, 'thread')
                ].filter(Boolean).join(' · ')}</Fact>
                <Fact label="compute">{node.compute.measuredTflops === null ? 'not measured' : `${node.compute.measuredTflops.toFixed(2)} TFLOP/s`}
                    {node.compute.generationTokensPerSecond !== null && ` · ${node.compute.generationTokensPerSecond.toFixed(1)} tokens/s`}</Fact>
                <Fact label="engine"><span class={`badge state-${engine.state}`} data-engine-state={engine.state}>{engine.state}</span> {engine.running} running · {engine.queued} queued
                    {engine.restarts > 0 && ` · ${plural(engine.restarts, 'restart')}`}</Fact>
                {engine.lastError !== null && <Fact label="last error"><span class="warning">{engine.lastError}</span></Fact>}
                <Fact label="requests">{node.requests.total} · {node.requests.succeeded} ok · {node.requests.failed} failed · {node.requests.cancelled} cancelled</Fact>
                {node.nat !== null && <Fact label="NAT">{node.nat.type} · {node.nat.reachable ? 'reachable' : 'unreachable'}{node.relay?.offering ? ` · relaying ${plural(node.relay.pairs, 'pair')}` : ''}</Fact>}
            </dl>
            <h3>Models</h3>
            {node.models.length === 0 ? <p class="muted">none loaded</p> : (
                <ul class="plain">
                    {node.models.map((model) => (
                        <li key={model.id}><span class="mono">{model.id}</span> <span class="muted">· {plural(model.layers, 'layer')} · {formatBytes(model.sizeBytes)} · context {model.contextSize} · {model.gpuLayers} on GPU</span></li>
                    ))}
                </ul>
            )}
            <h3>Throughput</h3>
            <ThroughputChart samples={throughput}/>
        </Card>
    );
}

function PeersCard({polled}: {polled: Polled<PeersStatus>}) {
    const peers = polled.data?.peers ?? [];
    return (
        <Card title={`Peers (${peers.length})`} id="peers" error={polled.error}>
            {peers.length === 0 ? <p class="muted">{polled.data === null ? 'Loading…' : 'No peers connected.'}</p> : (
                <div class="table-scroll">
                    <table>
                        <thead><tr><th>peer</th><th>route</th><th>RTT</th><th>models</th><th>success</th><th>device</th><th>software</th></tr></thead>
                        <tbody>
                            {peers.map((peer) => (
                                <tr key={peer.id} data-peer={peer.id}>
                                    <td class="mono" title={peer.id}>{shortPeerId(peer.id)}</td>
                                    <td>{peer.route.kind}{peer.route.relay !== null && <span class="muted mono"> via {shortPeerId(peer.route.relay)}</span>}</td>
                                    <td>{formatMs(peer.rttMs)}</td>
                                    <td class="peer-models">{peer.capabilities.models.length === 0 ? <span class="muted">none</span> : peer.capabilities.models.map((model) => (
                                        <span key={model.id} class={`chip${model.loaded ? '' : ' muted'}`} title={model.loaded ? 'loaded' : 'on disk'}>{model.id}</span>
                                    ))}</td>
                                    <td>{peer.requests.sent === 0 ? <span class="muted">no requests</span>
                                        // The counts as they are: `successRate` starts from a prior, for ranking (docs/architecture.md, "Peer ranking").
                                        : <span title={`ranked as ${formatPercent(peer.requests.successRate)}`}>{peer.requests.succeeded} of {peer.requests.sent} ok</span>}</td>
                                    <td>{peer.capabilities.device.backend === false ? 'CPU' : peer.capabilities.device.backend}{peer.capabilities.device.vramTotalBytes > 0 && ` · ${formatBytes(peer.capabilities.device.vramTotalBytes)}`}</td>
                                    <td>{peer.software}</td>
                                </tr>
                            ))}
                        </tbody>
                    </table>
                </div>
            )}
            {(polled.data?.banned.length ?? 0) > 0 && (
                <details><summary>{plural(polled.data!.banned.length, 'banned peer')}</summary>
                    <ul class="plain">{polled.data!.banned.map((ban) => <li key={ban.peerId}><span class="mono">{shortPeerId(ban.peerId)}</span>: {ban.reason} <span class="muted">until {formatTime(ban.until)}</span></li>)}</ul>
                </details>
            )}
            {(polled.data?.unreachable.length ?? 0) > 0 && (
                <details><summary>{plural(polled.data!.unreachable.length, 'unreachable peer')}</summary>
                    <ul class="plain">{polled.data!.unreachable.map((peer) => <li key={peer.peerId}><span class="mono">{shortPeerId(peer.peerId)}</span>: {peer.code} <span class="muted">{peer.message}</span></li>)}</ul>
                </details>
            )}
        </Card>
    );
}

type NetworkModel = NetworkModelsStatus['models'][number];

/**
 * Who provides a model: the connected holders, then what gossip says of the network, a few providers named, each
 * marked as having told this node itself (`direct`) or heard of through peers.
 */
function Providers({model}: {model: NetworkModel}) {
    const {holders, gossip} = model;
    return (
        <>
            {holders.map((holder) => (
                <span key={holder.nodeId} class={`chip${holder.loaded ? '' : ' muted'}`} title={holder.nodeId}>
                    {holder.self ? 'this node' : shortPeerId(holder.nodeId)}{holder.whole ? '' : ` layers ${holder.layers.map((range) => `${range.first}-${range.last}`).join(',')}`}
                </span>
            ))}
            {gossip !== null && (
                <div class="gossip" data-provider-count={gossip.providerCount}>
                    <span class="gossip-count" title={gossip.providerCountCapped ? 'gossip stops counting here: there may be more' : 'distinct providers gossip heard of lately, this node too if it serves it'}>
                        {formatProviderCount(gossip.providerCount, gossip.providerCountCapped)}</span> <span class="muted gossip-age">by gossip · heard {formatAge(gossip.ageMs)}</span>
                    <div>
                        {gossip.providers.map((provider) => (
                            <span key={provider.nodeId} class={`chip gossip-provider${provider.direct ? ' direct' : ''}`} data-node-id={provider.nodeId}
                                title={`${provider.nodeId} · ${provider.self ? 'this node' : provider.direct ? 'told this node itself' : 'heard of through peers'} · ${formatAge(provider.ageMs)}`}>
                                {provider.self ? 'this node' : shortPeerId(provider.nodeId)}
                                {!provider.self && <span class="muted"> {provider.direct ? 'direct' : 'second-hand'}</span>}
                            </span>
                        ))}
                        {gossip.providers.length < gossip.providerCount && <span class="muted">+{gossip.providerCount - gossip.providers.length}{gossip.providerCountCapped ? ' or more' : ''}</span>}
                    </div>
                </div>
            )}
            {holders.length === 0 && gossip === null && <span class="muted">none</span>}
        </>
    );
}

function ModelsCard({polled}: {polled: Polled<NetworkModelsStatus>}) {
    const models = polled.data?.models ?? [];
    const gossipOnly = models.filter((model) => model.holders.length === 0).length;
    const capped = models.some((model) => model.gossip?.providerCountCapped);
    return (
        <Card title={`Network models (${models.length})`} id="network-models" error={polled.error}>
            {models.length === 0 ? <p class="muted">{polled.data === null ? 'Loading…' : 'No models in the network yet.'}</p> : (
                <>
                    <div class="table-scroll">
                        <table>
                            <thead><tr><th>model</th><th>quant</th><th>size</th><th>layers</th><th>providers</th></tr></thead>
                            <tbody>
                                {models.map((model) => (
                                    <tr key={`${model.id} ${model.sha256}`} data-sha256={model.sha256 ?? undefined} data-gossip-only={model.holders.length === 0 ? '' : undefined}>
                                        <td class="mono"><span class="model-name">{model.id}</span>
                                            {model.holders.length === 0 && <> <span class="badge gossip-only" title="no connected peer holds it: a request for it connects to a provider on demand">known by gossip</span></>}</td>
                                        <td>{model.quantization}</td>
                                        <td>{formatBytes(model.sizeBytes)}</td>
                                        <td>{model.layers}</td>
                                        <td class="model-providers"><Providers model={model}/></td>
                                    </tr>
                                ))}
                            </tbody>
                        </table>
                    </div>
                    {(gossipOnly > 0 || capped) && <p class="muted gossip-note">
                        {gossipOnly > 0 && `${plural(gossipOnly, 'model')} known by gossip only: no connected peer holds ${gossipOnly === 1 ? 'it' : 'them'}, and a request for ${gossipOnly === 1 ? 'it' : 'one'} connects to a provider on demand.`}
                        {gossipOnly > 0 && capped && ' '}
                        {capped && 'A count marked ≥ is a lower bound: gossip stops counting there.'}
                    </p>}
                </>
            )}
        </Card>
    );
}

function ClusterCard({polled}: {polled: Polled<ClusterStatus>}) {
    const cluster = polled.data;
    if (cluster === null)
        return <Pending title="Pipelines" id="pipelines" error={polled.error}/>;
    return (
        <Card title={`Pipelines (${cluster.pipelines.length})`} id="pipelines" error={polled.error}>
            {cluster.pipelines.length === 0 && <p class="muted">This node coordinates no pipeline.</p>}
            {cluster.pipelines.map((pipeline) => <PipelineDiagram key={pipeline.model} pipeline={pipeline}/>)}
            <p class="muted">Hosting layers for peers: {formatHosting(cluster.hosting)}</p>
        </Card>
    );
}

function LedgerCard({polled}: {polled: Polled<LedgerStatus>}) {
    const ledger = polled.data;
    if (ledger === null)
        return <Pending title="Ledger" id="ledger" error={polled.error}/>;
    const {anchoring} = ledger;
    const last = anchoring.lastAnchor;
    return (
        <Card title="Ledger" id="ledger" error={polled.error}>
            <dl class="facts">
                <Fact label="points"><span class="big-number">{ledger.points.toFixed(3)}</span></Fact>
                <Fact label="witnessed">{ledger.tally.witnessedPoints.toFixed(3)} points</Fact>
                <Fact label="log">{plural(ledger.length, 'record')}{ledger.pendingRecords > 0 && ` · ${ledger.pendingRecords} pending`} <span class="mono muted" title={ledger.core}>{ledger.core.slice(0, 16)}</span></Fact>
                <Fact label="jobs">{ledger.tally.servedJobs} served · {ledger.tally.consumedJobs} consumed · {ledger.tally.shardSessions} shard sessions</Fact>
                <Fact label="last anchor">{last === null ? 'none yet' : `block ${last.blockNumber} · ${plural(last.logLength, 'record')} · ${formatTime(last.at)}`}</Fact>
                <Fact label="anchoring">{anchoring.enabled ? `on (chain ${anchoring.chainId})` : `off${anchoring.offReason === null ? '' : `: ${anchoring.offReason}`}`}
                    {anchoring.nextAttemptAt !== null && ` · next ${formatTime(anchoring.nextAttemptAt)}`}</Fact>
                {anchoring.lastError !== null && <Fact label="last error"><span class="warning">{anchoring.lastError}</span></Fact>}
            </dl>
        </Card>
    );
}

export function NetworkView({node, throughput, active}: {node: Polled<NodeStatus>, throughput: ThroughputSample[], active: boolean}) {
    const peers = usePoll(loadPeers, NETWORK_POLL_MS, active);
    const cluster = usePoll(loadCluster, NETWORK_POLL_MS, active);
    const models = usePoll(loadNetworkModels, SLOW_POLL_MS, active);
    const ledger = usePoll(loadLedger, SLOW_POLL_MS, active);
    return (
        <div class="network">
            <NodeCard node={node.data} error={node.error} throughput={throughput}/>
            <PeersCard polled={peers}/>
            <ClusterCard polled={cluster}/>
            <ModelsCard polled={models}/>
            <LedgerCard polled={ledger}/>
        </div>
    );
}
