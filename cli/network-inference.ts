import {ApiError} from '../proxy/api-error.js';
import type {InferenceService, ServedModel} from '../proxy/inference-service.js';
import type {SwarmNode} from '../swarm/swarm-node.js';
import type {LocalInference} from './local-inference.js';

/**
 * The proxy's view of the network: this node's models, plus those its peers hold (listed with `owned_by`
 * naming them). Requests are served locally; models only peers hold are refused clearly until remote
 * inference lands.
 */
export class NetworkInference implements InferenceService {
    constructor(private readonly local: LocalInference, private readonly swarm: SwarmNode | undefined) {}

    listModels(): ServedModel[] {
        const local = this.local.listModels();
        const localIds = new Set(local.map((model) => model.id));
        const remote = new Map<string, ServedModel>();
        for (const peer of this.swarm?.peers() ?? []) {
            for (const offer of peer.capabilities.models) {
                if (localIds.has(offer.id) || remote.has(offer.id))
                    continue;
                remote.set(offer.id, {id: offer.id, created: Math.floor(peer.connectedAt / 1000), ownedBy: `peer:${peer.id.slice(0, 16)}`});
            }
        }
        return [...local, ...remote.values()];
    }

    readiness() {
        return this.local.readiness();
    }

    generate(...args: Parameters<InferenceService['generate']>) {
        this.assertLocal(args[0].model);
        return this.local.generate(...args);
    }

    embed(...args: Parameters<InferenceService['embed']>) {
        this.assertLocal(args[0]);
        return this.local.embed(...args);
    }

    private assertLocal(model: string) {
        if (!this.local.listModels().some((served) => served.id === model))
            throw new ApiError(503, `The model '${model}' is held by peers, not by this node, and this version cannot route requests to peers yet.`,
                'server_error', 'model', 'model_only_on_peers');
    }
}
