import {randomBytes, timingSafeEqual} from 'node:crypto';
import express, {type ErrorRequestHandler, type NextFunction, type Request, type Response} from 'express';
import {ApiError, clip, toApiError} from './api-error.js';
import type {InferenceService} from '../inference/inference-service.js';
import {CLIENT_CLOSED_STATUS, type RequestStats} from './request-stats.js';
import {createOllamaRouter, OLLAMA_PATHS, type ModelCatalog} from './ollama/ollama-routes.js';
import {embeddingsHandler} from './routes/embedding-routes.js';
import {chatCompletionsHandler, completionsHandler} from './routes/generation-routes.js';
import {getModelHandler, listModelsHandler} from './routes/model-routes.js';
import {ANTHROPIC_PATHS, countTokensHandler, messagesHandler} from './routes/messages-routes.js';
import {responsesHandler} from './routes/responses-routes.js';
import type {ResponseLocals} from './routes/route-helpers.js';
import {actionHandler, healthHandler, jsonHandler, verifyLedgerHandler, revokeLedgerHandler, type StatusSources, walletActionHandler} from './routes/status-routes.js';
import {shortPeerId} from '../core/display.js';
import {webPageRouter, type WebPageOptions} from './web-page.js';

export interface ProxyAppOptions {
    inference: InferenceService,
    stats: RequestStats,
    /** JSON documents of /api: the node, its peers, the models of the network. */
    status: StatusSources,
    /** The models Ollama's endpoints describe. */
    catalog: ModelCatalog,
    /** When set, /v1 and /api require `Authorization: Bearer <apiKey>` (or `x-api-key: <apiKey>`, as Anthropic's clients send it). */
    apiKey?: string,
    /** Largest accepted request body. */
    maxBodyBytes?: number,
    /** The web page at `/` (proxy/web-page.ts). */
    webPage?: WebPageOptions
}

export const proxyAppDefaults = {
    maxBodyBytes: 4 * 1024 * 1024
};

function requireApiKey(apiKey: string) {
    const expected = Buffer.from(apiKey);
    return (req: Request, _res: Response, next: NextFunction) => {
        // Anthropic's clients send the key as `x-api-key`.
        const header = req.get('authorization') ?? '';
        const presented = Buffer.from(req.get('x-api-key') ?? header.replace(/^Bearer\s+/i, ''));
        if (presented.length !== expected.length || !timingSafeEqual(presented, expected))
            throw new ApiError(401, 'Missing or incorrect API key: send "Authorization: Bearer <key>" (or "x-api-key: <key>") with the key given to --api-key.',
                'authentication_error', null, 'invalid_api_key');
        next();
    };
}

/**
 * Refuses a browser's request sent from another site (README, "Security"): without CORS a page elsewhere cannot read
 * the answers, but a "simple" POST (text/plain) would still run, and spend this node's compute and DOGE. Browsers
 * say where a request comes from (`Sec-Fetch-Site`, `Origin`); clients outside a browser send neither.
 */
function refuseCrossSite(req: Request, _res: Response, next: NextFunction) {
    if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS')
        return next();
    const site = req.get('sec-fetch-site');
    const origin = req.get('origin');
    let foreign = site !== undefined && site !== 'same-origin' && site !== 'none';
    if (!foreign && origin !== undefined) {
        try {
            foreign = new URL(origin).host !== req.get('host');
        } catch {
            foreign = true;
        }
    }
    if (foreign)
        throw new ApiError(403, 'Requests sent by a web page of another site are refused: call this API from its own page, or from outside a browser.',
            'invalid_request_error', null, 'cross_site_request');
    next();
}

function recordStats(stats: RequestStats) {
    return (req: Request, res: Response<unknown, ResponseLocals>, next: NextFunction) => {
        const startedAt = performance.now();
        res.locals.requestId = randomBytes(12).toString('hex');
        stats.started();
        res.once('close', () => {
            const result = res.locals.result;
            stats.finished({
                id: res.locals.requestId ?? '',
                endpoint: req.path,
                model: res.locals.model === undefined ? undefined : clip(res.locals.model),
                status: res.locals.failedStatus ?? (res.writableFinished ? res.statusCode : CLIENT_CLOSED_STATUS),
                stream: res.locals.stream ?? false,
                route: res.locals.servedBy ? `${res.locals.servedBy.via ?? 'peers'}:${res.locals.servedBy.peers.map((peer) => shortPeerId(peer)).join(',')}` : 'local',
                promptTokens: result?.usage.promptTokens ?? res.locals.promptTokens ?? 0,
                // A client that left was still sent tokens: they were generated for it.
                completionTokens: result?.usage.completionTokens ?? res.locals.sentTokens ?? 0,
                durationMs: performance.now() - startedAt,
                generationTokensPerSecond: result?.timings.generationTokensPerSecond ?? 0,
                finishedAt: Date.now()
            });
        });
        next();
    };
}

const errorHandler: ErrorRequestHandler = (error, req, res, _next) => {
    const apiError = bodyParserError(error) ?? toApiError(error);
    if (res.headersSent) {
        res.end();
        return;
    }
    if (apiError.retryAfterSeconds !== undefined)
        res.setHeader('Retry-After', String(apiError.retryAfterSeconds));
    if (ANTHROPIC_PATHS.has(req.path)) {
        const {status, body} = apiError.toAnthropic();
        res.status(status).json(body);
        return;
    }
    // Ollama's clients read `{"error": "<message>"}`; OpenAI's read an error object.
    res.status(apiError.status).json(OLLAMA_PATHS.has(req.path) ? {error: apiError.message} : apiError.toBody());
};

/**
 * body-parser reports malformed and oversized bodies with a `type`; body-parser and the router report other
 * client mistakes (a body that is not in its declared content-encoding, a path that is not valid percent-encoding)
 * as http-errors with a 4xx `status`.
 */
function bodyParserError(error: {type?: string, limit?: number, status?: unknown}) {
    if (error instanceof ApiError)
        return undefined;
    switch (error?.type) {
        case 'entity.parse.failed':
            return ApiError.invalid('The request body is not valid JSON.', null, 'invalid_json');
        case 'entity.too.large':
            return new ApiError(413, `The request body is larger than the ${error.limit} bytes allowed.`,
                'invalid_request_error', null, 'request_too_large');
        case 'encoding.unsupported':
        case 'charset.unsupported':
            return new ApiError(415, 'The request body must be UTF-8 JSON.', 'invalid_request_error', null, 'unsupported_media_type');
        case 'request.aborted':
            return ApiError.invalid('The request body was not received completely.', null, 'request_aborted');
    }
    if (typeof error?.status === 'number' && error.status >= 400 && error.status < 500)
        return new ApiError(400, 'The request could not be read: its body is not in its declared content-encoding, or its path is not valid percent-encoding.',
            'invalid_request_error', null, 'malformed_request');
    return undefined;
}

export function createProxyApp(options: ProxyAppOptions) {
    const {inference, stats, status, catalog, apiKey, maxBodyBytes, webPage} = {...proxyAppDefaults, ...options};
    const app = express();
    app.disable('x-powered-by');
    app.set('etag', false);

    // Any content type is read as JSON: `curl -d '{…}'` sends form encoding by default.
    const json = express.json({limit: maxBodyBytes, type: () => true, strict: false});

    app.get('/health', healthHandler(inference));
    // The page and its files are open: it asks for the key before it calls /v1 or /api.
    app.use(webPageRouter(webPage));

    const api = express.Router();
    api.use(refuseCrossSite);
    if (apiKey)
        api.use(requireApiKey(apiKey));
    api.get('/api/node', jsonHandler(status.node));
    api.get('/api/peers', jsonHandler(status.peers));
    api.get('/api/network/models', jsonHandler(status.networkModels));
    api.get('/api/cluster', jsonHandler(status.cluster));
    api.get('/api/ledger', jsonHandler(status.ledger));
    api.post('/api/ledger/anchor', actionHandler(status.anchorLedger));
    api.post('/api/ledger/verify', json, verifyLedgerHandler(status.verifyLedger));
    api.post('/api/ledger/revoke', json, revokeLedgerHandler(status.revokeLedger));
    api.get('/api/wallet', actionHandler(status.wallet));
    for (const action of ['deposit', 'redeem', 'close', 'withdraw'] as const)
        api.post(`/api/wallet/${action}`, json, walletActionHandler(status.walletAction, action));
    api.get('/v1/models', listModelsHandler(inference));
    api.get('/v1/models/:id', getModelHandler(inference));
    api.post('/v1/chat/completions', recordStats(stats), json, chatCompletionsHandler(inference));
    api.post('/v1/completions', recordStats(stats), json, completionsHandler(inference));
    api.post('/v1/embeddings', recordStats(stats), json, embeddingsHandler(inference));
    api.post('/v1/responses', recordStats(stats), json, responsesHandler(inference));
    api.post('/v1/messages', recordStats(stats), json, messagesHandler(inference));
    api.post('/v1/messages/count_tokens', recordStats(stats), json, countTokensHandler(inference));
    api.use(createOllamaRouter({inference, catalog, recordStats: recordStats(stats), json}));
    app.use(api);

    app.use((req, _res) => {
        throw new ApiError(404, `Unknown endpoint: ${clip(req.method)} ${clip(req.path)}`, 'invalid_request_error', null, 'unknown_url');
    });
    app.use(errorHandler);
    return app;
}
