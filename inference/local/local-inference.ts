import type {EngineSupervisor} from '../../engine/engine-supervisor.js';
import type {EmbedOptions, GenerateOptions, InferenceStrategy, Readiness, ServedModel} from '../inference-service.js';
import type {GenerationRequest} from '../../core/inference-types.js';

export interface LocalInferenceOptions {
    engine: EngineSupervisor,
    /** The models this node's engine loads. */
    modelIds: string[]
}

/** Requests served by this node's own engine. */
export class LocalInference implements InferenceStrategy {
    private readonly created = Math.floor(Date.now() / 1000);
    private readonly engine: EngineSupervisor;
    private readonly modelIds: string[];

    constructor(options: LocalInferenceOptions) {
        ({engine: this.engine, modelIds: this.modelIds} = options);
    }

    listModels(): ServedModel[] {
        return this.modelIds.map((id) => ({id, created: this.created, ownedBy: 'strongdoge'}));
    }

    readiness(): Readiness {
        const status = this.engine.getStatus();
        return {
            ready: status.state === 'ready',
            state: status.state,
            ...(status.state !== 'ready' && {loadProgress: status.loadProgress})
        };
    }

    generate(request: GenerationRequest, {onText, onProgress, signal}: GenerateOptions) {
        return this.engine.generate(request, {...(onText && {onText}), ...(onProgress && {onProgress}), ...(signal && {signal})});
    }

    embed(model: string, inputs: string[], {signal}: EmbedOptions) {
        return this.engine.embed(model, inputs, {...(signal && {signal})});
    }
}
