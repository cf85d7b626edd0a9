import type {RequestHandler} from 'express';
import type {InferenceService, ServedModel} from '../../inference/inference-service.js';
import {assertModelServed} from './route-helpers.js';

function toModelObject(model: ServedModel) {
    return {id: model.id, object: 'model', created: model.created, owned_by: model.ownedBy};
}

export function listModelsHandler(inference: InferenceService): RequestHandler {
    return (_req, res) => {
        res.json({object: 'list', data: inference.listModels().map(toModelObject)});
    };
}

export function getModelHandler(inference: InferenceService): RequestHandler<{id: string}> {
    return (req, res) => {
        assertModelServed(inference, req.params.id);
        res.json(toModelObject(inference.listModels().find((model) => model.id === req.params.id)!));
    };
}
