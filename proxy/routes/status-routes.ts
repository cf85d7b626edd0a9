import type {RequestHandler} from 'express';
import type {InferenceService} from '../../inference/inference-service.js';

/** 503 while models load, 200 once requests can be served: what load balancers and scripts poll. */
export function healthHandler(inference: InferenceService): RequestHandler {
    return (_req, res) => {
        const readiness = inference.readiness();
        res.status(readiness.ready ? 200 : 503).json({
            status: readiness.ready ? 'ok' : 'loading',
            state: readiness.state,
            ...(readiness.loadProgress && {load_progress: readiness.loadProgress})
        });
    };
}

export interface StatusSources {
    node: () => object,
    peers: () => object,
    networkModels: () => object
}

export function jsonHandler(describe: () => object): RequestHandler {
    return (_req, res) => {
        res.json(describe());
    };
}
