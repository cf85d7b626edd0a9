import type {Capabilities} from './capabilities.js';

/** The network's model table: every model in the network, who holds it, and what running it takes (docs/architecture.md, "Network model table"). */

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
    holders: ModelHolder[]
}

/** Models are the same when their files hash the same; unhashed ones are matched by id. */
function modelKey(id: string, sha256: string | null) {
    return sha256 ?? `id:${id}`;
}

export function buildNetworkModelTable(nodes: NodeCapabilities[]): NetworkModel[] {
    const table = new Map<string, NetworkModel>();
    for (const node of nodes) {
        const price = node.capabilities.pricePerMillionTokens;
        for (const offer of node.capabilities.models) {
            const key = modelKey(offer.id, offer.sha256);
            const entry = table.get(key) ?? {
                id: offer.id, sha256: offer.sha256, sizeBytes: offer.sizeBytes, layers: offer.layers, quantization: offer.quantization,
                resources: {wholeModelBytes: offer.sizeBytes, perLayerBytes: offer.layerBytes},
                holders: []
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
    return [...table.values()].sort((a, b) => a.id.localeCompare(b.id));
}
