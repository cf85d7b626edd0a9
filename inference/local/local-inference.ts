import type {EngineSupervisor} from '../../engine/engine-supervisor.js';
import type {InferenceService, ServedModel} from '../inference-service.js';

/** The proxy's view of this node's own engine. */
export class LocalInference implements InferenceService {
    private readonly created = Math.floor(Date.now() / 1000);

    constructor(private readonly engine: EngineSupervisor, private readonly modelIds: string[]) {}

    listModels(): ServedModel[] {
        return this.modelIds.map((id) => ({id, created: this.created, ownedBy: 'strongdoge'}));
    }

    readiness() {
        const status = this.engine.getStatus();
        return {
            ready: status.state === 'ready',
            state: status.state,
            ...(status.state !== 'ready' && {loadProgress: status.loadProgress})
        };
    }

    generate(...args: Parameters<EngineSupervisor['generate']>) {
        return this.engine.generate(...args);
    }

    embed(...args: Parameters<EngineSupervisor['embed']>) {
        return this.engine.embed(...args);
    }
}
