import {Router, type Request, type RequestHandler, type Response} from 'express';
import type {InferenceService} from '../../inference/inference-service.js';
import type {GenerationRequest, GenerationResult, ToolCall} from '../../core/inference-types.js';
import {ApiError} from '../api-error.js';
import {parseBody} from '../request-schemas.js';
import {assertModelServed, cancelOnClientClose, countingSentTokens, type ResponseLocals, routingFor, startGeneration, streamFailure} from '../routes/route-helpers.js';
import {NdjsonWriter} from '../stream-writers.js';
import {
    chatRequestOf, generateRequestOf, modelIdOf, ollamaChatSchema, ollamaEmbeddingsSchema, ollamaEmbedSchema, ollamaGenerateSchema,
    ollamaNameOf, ollamaShowSchema
} from './ollama-requests.js';

/**
 * The Ollama API on strongdoge's port, so that clients that speak only Ollama work unchanged
 * (docs/architecture.md, "Ollama API"): NDJSON streams by default, durations in nanoseconds, errors as `{error}`.
 */

/** The paths this router answers: errors on them take Ollama's shape (`proxy-app.ts`). */
export const OLLAMA_PATHS = new Set(['/api/tags', '/api/show', '/api/ps', '/api/version', '/api/chat', '/api/generate', '/api/embed', '/api/embeddings']);

/** Far in the future: strongdoge keeps its models loaded while it runs (Ollama's `expires_at`). */
const LOADED_UNTIL = '2100-01-01T00:00:00Z';
const NS_PER_MS = 1e6;

/** What Ollama's model endpoints describe, from the node. */
export interface ModelCatalog {
    version: string,
    /** Every model of the network this node knows of, with what its file says. */
    models(): (ModelFacts & {id: string})[],
    /** The models this node's engine has loaded. */
    loaded(): {id: string, contextSize: number}[]
}

export interface OllamaRouterOptions {
    inference: InferenceService,
    catalog: ModelCatalog,
    /** Counts requests as the OpenAI routes' (`recordStats` in proxy-app.ts). */
    recordStats: RequestHandler,
    json: RequestHandler
}

interface ModelFacts {
    sizeBytes: number,
    sha256: string | null,
    quantization: string,
    layers: number
}

function details(facts: ModelFacts | undefined) {
    return {
        parent_model: '', format: 'gguf', family: 'llama', families: ['llama'],
        parameter_size: '', quantization_level: facts?.quantization ?? ''
    };
}

function modelEntry(id: string, facts: ModelFacts | undefined, created: number) {
    return {
        name: ollamaNameOf(id), model: ollamaNameOf(id), modified_at: new Date(created * 1000).toISOString(),
        size: facts?.sizeBytes ?? 0, digest: facts?.sha256 ?? '', details: details(facts)
    };
}

function durations(result: GenerationResult, startedAt: number) {
    return {
        // Ollama ends a turn of calls with 'stop'.
        done_reason: result.finishReason === 'tool_calls' ? 'stop' : result.finishReason,
        total_duration: Math.round((performance.now() - startedAt) * NS_PER_MS),
        load_duration: 0,
        prompt_eval_count: result.usage.promptTokens,
        prompt_eval_duration: Math.round(result.timings.promptMs * NS_PER_MS),
        eval_count: result.usage.completionTokens,
        eval_duration: Math.round(result.timings.generationMs * NS_PER_MS)
    };
}

/** `/api/chat` and `/api/generate` differ in their body and in where the text goes. */
interface OllamaFlavor {
    parse(body: unknown): {request: GenerationRequest, stream: boolean, empty: boolean},
    /** The reply's text, or its calls (chat only). */
    text(text: string, toolCalls?: ToolCall[]): object
}

/** A call as Ollama writes it: the arguments as an object. */
function ollamaToolCall({name, arguments: args}: ToolCall) {
    return {function: {name, arguments: JSON.parse(args) as unknown}};
}

const chatFlavor: OllamaFlavor = {
    parse(body) {
        const parsed = parseBody(ollamaChatSchema, body);
        return {request: chatRequestOf(parsed), stream: parsed.stream ?? true, empty: parsed.messages.length === 0};
    },
    text: (text, toolCalls = []) => ({message: {role: 'assistant', content: text, ...(toolCalls.length > 0 && {tool_calls: toolCalls.map(ollamaToolCall)})}})
};

const generateFlavor: OllamaFlavor = {
    parse(body) {
        const parsed = parseBody(ollamaGenerateSchema, body);
        return {request: generateRequestOf(parsed), stream: parsed.stream ?? true, empty: parsed.prompt === '' && !parsed.raw};
    },
    text: (text) => ({response: text})
};

function generationHandler(flavor: OllamaFlavor, inference: InferenceService): RequestHandler {
    return async (req: Request, res: Response<unknown, ResponseLocals>) => {
        const startedAt = performance.now();
        const {request, stream, empty} = flavor.parse(req.body);
        const {signal, ...routing} = startGeneration(inference, req, res, request, stream);
        const base = () => ({model: ollamaNameOf(request.model), created_at: new Date().toISOString()});
        // An empty prompt asks Ollama to load the model: strongdoge's are loaded already.
        if (empty) {
            res.json({...base(), ...flavor.text(''), done: true, done_reason: 'load'});
            return;
        }
        if (!stream) {
            const result = await inference.generate(request, {signal, ...routing});
            res.locals.result = result;
            res.json({...base(), ...flavor.text(result.text, result.toolCalls), done: true, ...durations(result, startedAt)});
            return;
        }
        const writer = new NdjsonWriter(res);
        try {
            const result = await inference.generate(request, {
                signal, ...routing,
                onText: countingSentTokens(res, (text, {toolCall}) => writer.send({...base(), ...flavor.text(text, toolCall && [toolCall]), done: false}))
            });
            res.locals.result = result;
            writer.send({...base(), ...flavor.text(''), done: true, ...durations(result, startedAt)});
            writer.done();
        } catch (error) {
            if (signal.aborted)
                return;
            // Past the 200, Ollama reports a failure as an error line in the stream.
            writer.send({error: streamFailure(res, error, writer.isOpen).message});
            writer.done();
        }
    };
}

export function createOllamaRouter({inference, catalog, recordStats, json}: OllamaRouterOptions) {
    const facts = (id: string): ModelFacts | undefined => catalog.models().find((model) => model.id === id);
    const served = (name: string) => {
        const id = modelIdOf(name);
        assertModelServed(inference, id);
        return inference.listModels().find((model) => model.id === id)!;
    };
    const router = Router();

    router.get('/api/version', (_req, res) => {
        res.json({version: catalog.version});
    });
    router.get('/api/tags', (_req, res) => {
        res.json({models: inference.listModels().map((model) => modelEntry(model.id, facts(model.id), model.created))});
    });
    router.get('/api/ps', (_req, res) => {
        res.json({models: catalog.loaded().map((model) => ({
            ...modelEntry(model.id, facts(model.id), Math.floor(Date.now() / 1000)), size_vram: 0, expires_at: LOADED_UNTIL,
            context_length: model.contextSize
        }))});
    });
    router.post('/api/show', json, (req, res) => {
        const model = served(parseBody(ollamaShowSchema, req.body));
        const known = facts(model.id);
        res.json({
            modelfile: '', parameters: '', template: '',
            details: details(known),
            model_info: {'general.architecture': 'llama', 'general.block_count': known?.layers ?? 0},
            capabilities: ['completion', 'embedding'],
            modified_at: new Date(model.created * 1000).toISOString()
        });
    });
    router.post('/api/chat', recordStats, json, generationHandler(chatFlavor, inference));
    router.post('/api/generate', recordStats, json, generationHandler(generateFlavor, inference));
    router.post('/api/embed', recordStats, json, async (req: Request, res: Response<unknown, ResponseLocals>) => {
        const startedAt = performance.now();
        const body = parseBody(ollamaEmbedSchema, req.body);
        const model = served(body.model);
        res.locals.model = model.id;
        const inputs = typeof body.input === 'string' ? [body.input] : body.input;
        const result = await inference.embed(model.id, inputs, {signal: cancelOnClientClose(res), ...routingFor(req, res)});
        if (body.dimensions != null && body.dimensions !== result.vectors[0]?.length)
            throw ApiError.unsupported('dimensions', `This model's embeddings have ${result.vectors[0]?.length ?? 0} dimensions; other sizes are not supported.`);
        res.locals.promptTokens = result.promptTokens;
        res.json({model: ollamaNameOf(model.id), embeddings: result.vectors, total_duration: Math.round((performance.now() - startedAt) * NS_PER_MS),
            load_duration: 0, prompt_eval_count: result.promptTokens});
    });
    router.post('/api/embeddings', recordStats, json, async (req: Request, res: Response<unknown, ResponseLocals>) => {
        const body = parseBody(ollamaEmbeddingsSchema, req.body);
        const model = served(body.model);
        res.locals.model = model.id;
        const result = await inference.embed(model.id, [body.prompt], {signal: cancelOnClientClose(res), ...routingFor(req, res)});
        res.locals.promptTokens = result.promptTokens;
        res.json({embedding: result.vectors[0]});
    });
    return router;
}
