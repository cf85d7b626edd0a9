import type {Request, RequestHandler, Response} from 'express';
import {ApiError} from '../api-error.js';
import type {InferenceService} from '../../inference/inference-service.js';
import {embeddingSchema, parseBody} from '../request-schemas.js';
import {assertModelServed, cancelOnClientClose, routingFor, type ResponseLocals} from './route-helpers.js';

/** OpenAI's base64 encoding: the little-endian float32 bytes of the vector. */
function toBase64(vector: number[]) {
    const floats = Float32Array.from(vector);
    return Buffer.from(floats.buffer, floats.byteOffset, floats.byteLength).toString('base64');
}

export function embeddingsHandler(inference: InferenceService): RequestHandler {
    return async (req: Request, res: Response<unknown, ResponseLocals>) => {
        const body = parseBody(embeddingSchema, req.body);
        res.locals.model = body.model;
        assertModelServed(inference, body.model);
        const inputs = typeof body.input === 'string' ? [body.input] : body.input;
        const result = await inference.embed(body.model, inputs, {signal: cancelOnClientClose(res), ...routingFor(req, res)});
        const dimensions = result.vectors[0]?.length ?? 0;
        if (body.dimensions != null && body.dimensions !== dimensions)
            throw ApiError.unsupported('dimensions', `This model's embeddings have ${dimensions} dimensions; other sizes are not supported.`);
        res.locals.promptTokens = result.promptTokens;
        const base64 = body.encoding_format === 'base64';
        res.json({
            object: 'list',
            data: result.vectors.map((vector, index) => ({
                object: 'embedding', index, embedding: base64 ? toBase64(vector) : vector
            })),
            model: body.model,
            usage: {prompt_tokens: result.promptTokens, total_tokens: result.promptTokens}
        });
    };
}
