import type {Capabilities} from './capabilities.js';
import type {GossipModelView} from './gossip/model-gossip.js';

/**
 * The network's model table: every model in the network, who holds it, and what running it takes; beyond the
 * connected peers, what gossip says of the rest of the network (docs/architecture.md, "Network model table").
 */

export interface NodeCapabilities {
    /** Node id (hex public key). */
    id: string,
    self: boolean,
    capabilities: Capabilities
}

export interface ModelHolder {
    nodeId: string,
    self: boolean,
    whole: boolean,
    loaded: boolean,
    /** Layer ranges held for sharding, when not whole. */
    layers: {first: number, last: number}[],
    pricePerMillionTokens: number | null
}

export interface NetworkModel {
    id: string,
    sha256: string | null,
    sizeBytes: number,
    layers: number,
    quantization: string,
    resources: {
        /** Memory to hold every weight: RAM on CPU, VRAM when fully offloaded. */
        wholeModelBytes: number,
        perLayerBytes: number[]
    },
    /** Connected nodes (and this one) that hold it; empty for a model known by gossip only. */
    holders: ModelHolder[],
    /** What gossip says of it across the network; null for a model gossip does not know (not hashed yet, say). */
    gossip: NetworkModelGossip | null
}

/** A model's providers as gossip counts them, beyond the connected peers (swarm/gossip/model-gossip.ts). */
export interface NetworkModelGossip {
    /** Distinct providers heard of within the TTL, this node included: a lower bound once `providerCountCapped`. */
    providerCount: number,
    providerCountCapped: boolean,
    /** A few of them, this node first, then the freshest; `direct`: the provider told this node itself. */
    providers: {nodeId: string, self: boolean, direct: boolean, ageMs: number}[],
    /** The freshest provider's age: how long ago this node last had word of one. */
    ageMs: number
}

/** Models are the same when their files hash the same; unhashed ones are matched by id. */
function modelKey(id: string, sha256: string | null) {
    return sha256 ?? `id:${id}`;
}

/**
 * The table from the nodes' capabilities, then `gossip` (`ModelGossipProtocol.entries()`): a gossiped model that a
 * node's offer holds too adds its providers there; one no connected node holds is listed with no holders.
 */
export function buildNetworkModelTable(nodes: NodeCapabilities[], gossip: readonly GossipModelView[] = []): NetworkModel[] {
    const table = new Map<string, NetworkModel>();
    for (const node of nodes) {
        const price = node.capabilities.pricePerMillionTokens;
        for (const offer of node.capabilities.models) {
            const key = modelKey(offer.id, offer.sha256);
            const entry = table.get(key) ?? {
                id: offer.id, sha256: offer.sha256, sizeBytes: offer.sizeBytes, layers: offer.layers, quantization: offer.quantization,
                resources: {wholeModelBytes: offer.sizeBytes, perLayerBytes: offer.layerBytes},
                holders: [], gossip: null
            };
            entry.holders.push({nodeId: node.id, self: node.self, whole: true, loaded: offer.loaded, layers: [], pricePerMillionTokens: price});
            table.set(key, entry);
        }
        for (const shard of node.capabilities.shards) {
            const entry = [...table.values()].find((model) => model.id === shard.model);
            if (entry === undefined)
                continue;
            const holder = entry.holders.find((existing) => existing.nodeId === node.id);
            if (holder?.whole)
                continue;
            if (holder)
                holder.layers.push({first: shard.firstLayer, last: shard.lastLayer});
            else
                entry.holders.push({nodeId: node.id, self: node.self, whole: false, loaded: false,
                    layers: [{first: shard.firstLayer, last: shard.lastLayer}], pricePerMillionTokens: price});
        }
    }
    for (const model of gossip) {
        const entry = table.get(model.sha256);
        if (entry !== undefined) {
            entry.gossip = gossipOf(model);
            continue;
        }
        // known by gossip only: no layer sizes travel with it
        table.set(model.sha256, {id: model.name, sha256: model.sha256, sizeBytes: model.sizeBytes, layers: model.layers, quantization: model.quantization,
            resources: {wholeModelBytes: model.sizeBytes, perLayerBytes: []}, holders: [], gossip: gossipOf(model)});
    }
    return [...table.values()].sort((a, b) => a.id.localeCompare(b.id));
}

function gossipOf({providerCount, providerCountCapped, providers, ageMs}: GossipModelView): NetworkModelGossip {
    return {providerCount, providerCountCapped, ageMs,
        providers: providers.map(({id, self, direct, ageMs: age}) => ({nodeId: id, self, direct, ageMs: age}))};
}
