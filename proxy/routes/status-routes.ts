import type {RequestHandler} from 'express';
import {ApiError} from '../api-error.js';
import type {InferenceService} from '../../inference/inference-service.js';

/**
 * 503 while a model loads or a pipeline forms, 200 once every model can be served: what load balancers and scripts
 * poll. `models` says, per model, what it waits for.
 */
export function healthHandler(inference: InferenceService): RequestHandler {
    return (_req, res) => {
        const readiness = inference.readiness();
        res.status(readiness.ready ? 200 : 503).json({
            status: readiness.ready ? 'ok' : 'loading',
            state: readiness.state,
            ...(readiness.loadProgress && {load_progress: readiness.loadProgress}),
            ...(readiness.models && {models: readiness.models})
        });
    };
}

export interface StatusSources {
    node: () => object,
    peers: () => object,
    networkModels: () => object,
    /** Pipelines this node coordinates and layers it hosts. */
    cluster: () => object,
    /** The contribution log: length, points, recent records, anchors. */
    ledger: () => object,
    /** Anchors the log now. */
    anchorLedger: () => Promise<object>,
    /** Verifies this node's log, or the log `core` of another node. */
    verifyLedger: (core?: string) => Promise<object>,
    /** Revokes the owner's authorizations of a wallet to anchor the log. */
    revokeLedger: (wallet: string) => Promise<object>
}

const LEDGER_CORE = /^[0-9a-f]{64}$/;
const WALLET = /^0x[0-9a-fA-F]{40}$/;

/** `POST /api/ledger/verify` with an optional `{"core": "<hex key>"}`: another node's log, replicated from a peer. */
export function verifyLedgerHandler(verify: StatusSources['verifyLedger']): RequestHandler {
    return async (req, res) => {
        const core = (req.body as {core?: unknown} | undefined)?.core;
        if (core !== undefined && (typeof core !== 'string' || !LEDGER_CORE.test(core)))
            throw ApiError.invalid('core must be a log\'s key: 64 hex digits.', 'core', 'invalid_value');
        res.json(await verify(core));
    };
}

/**
 * `POST /api/ledger/revoke` with `{"wallet": "0x…"}`: the wallet's authorizations to anchor this node's log are
 * revoked on the chain (the ledger checks the address's checksum).
 */
export function revokeLedgerHandler(revoke: StatusSources['revokeLedger']): RequestHandler {
    return async (req, res) => {
        const wallet = (req.body as {wallet?: unknown} | undefined)?.wallet;
        if (typeof wallet !== 'string' || !WALLET.test(wallet))
            throw ApiError.invalid('wallet must be a wallet address: 0x and 40 hex digits.', 'wallet', 'invalid_value');
        res.json(await revoke(wallet));
    };
}

/** `POST /api/ledger/anchor`. */
export function actionHandler(run: () => Promise<object>): RequestHandler {
    return async (_req, res) => {
        res.json(await run());
    };
}

export function jsonHandler(describe: () => object): RequestHandler {
    return (_req, res) => {
        res.json(describe());
    };
}
