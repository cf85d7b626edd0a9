import type {ModelReadiness, Readiness} from '../inference/inference-service.js';

export interface NodeReadinessSources {
    /** The engine's readiness (this node's whole models). */
    engine: Readiness,
    /** The models the engine loads. */
    engineModels: readonly string[],
    /** `start()` finished: until then peers and /api/node lack this node's compute. */
    started: boolean,
    /** Each pipeline this node coordinates, by model. */
    pipelines: readonly {model: string, readiness: ModelReadiness}[]
}

/**
 * `/health`'s answer: ready once the node has started and every model can serve, its engine's and each pipeline's
 * (a pipeline serves only once formed and loaded over its hosts); per model, what it waits for.
 */
export function nodeReadiness({engine, engineModels, started, pipelines}: NodeReadinessSources): Readiness {
    const engineWait = !engine.ready ? `engine ${engine.state}` : !started ? 'the node is starting' : undefined;
    const models: Record<string, ModelReadiness> = {};
    for (const model of engineModels) {
        const progress = engine.loadProgress?.[model];
        models[model] = engineWait === undefined ? {ready: true}
            : {ready: false, waiting: progress === undefined ? engineWait : `${engineWait}: ${Math.round(progress * 100)}% loaded`};
    }
    for (const {model, readiness} of pipelines)
        models[model] = readiness;
    const ready = engineWait === undefined && pipelines.every(({readiness}) => readiness.ready);
    const state = engineWait === undefined ? (ready ? engine.state : 'forming pipelines') : engine.ready ? 'starting' : engine.state;
    return {...engine, ready, state, models};
}
