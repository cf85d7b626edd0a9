import type {RequestHandler} from 'express';
import {ApiError} from '../api-error.js';
import {dogeToWei, weiToDoge} from '../../ledger/payments/pricing.js';
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
    revokeLedger: (wallet: string) => Promise<object>,
    /** The payment wallet: address, balance, price, channels (docs/architecture.md, "Payments"). */
    wallet: () => Promise<object>,
    /** Deposits to a peer's channel, redeems vouchers now, asks to close a channel or withdraws from it; each mined. */
    walletAction: (action: WalletAction, body: {peer?: string, amount?: string}) => Promise<object>
}

export type WalletAction = 'deposit' | 'redeem' | 'close' | 'withdraw';

const LEDGER_CORE = /^[0-9a-f]{64}$/;
const WALLET = /^0x[0-9a-fA-F]{40}$/;
const PEER_ID = /^[0-9a-f]{64}$/;

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

/**
 * `POST /api/wallet/deposit` with `{"peer": "<node id>", "amount": "12.5"}` (DOGE, a decimal string or a number),
 * `POST /api/wallet/close|withdraw` with `{"peer": …}`, `POST /api/wallet/redeem`. The amount reaches the node as
 * DOGE in plain decimals, checked to be above 0 and within wei's 18 places.
 */
export function walletActionHandler(act: StatusSources['walletAction'], action: WalletAction): RequestHandler {
    return async (req, res) => {
        const body = (req.body ?? {}) as {peer?: unknown, amount?: unknown};
        if (typeof body !== 'object' || Array.isArray(body))
            throw ApiError.invalid('The body must be a JSON object.', null, 'invalid_value');
        if (action === 'redeem') {
            res.json(await act(action, {}));
            return;
        }
        const {peer} = body;
        if (typeof peer !== 'string' || !PEER_ID.test(peer))
            throw ApiError.invalid('peer must be a peer\'s node id: 64 lowercase hex digits (`strongdoge peers` lists them).', 'peer', 'invalid_value');
        if (action !== 'deposit') {
            res.json(await act(action, {peer}));
            return;
        }
        res.json(await act(action, {peer, amount: dogeAmount(body.amount)}));
    };
}

/** A positive amount of DOGE as plain decimals (`1.5`, never `1.5e-7`); a 400 naming `amount` otherwise. */
function dogeAmount(amount: unknown) {
    const invalid = () => ApiError.invalid('amount must be an amount of DOGE above 0, as a decimal string or a number, with at most 18 decimals.',
        'amount', 'invalid_value');
    if ((typeof amount !== 'string' || amount.length > 80) && (typeof amount !== 'number' || !Number.isFinite(amount)))
        throw invalid();
    let wei: bigint;
    try {
        wei = dogeToWei(amount);
    } catch {
        throw invalid();
    }
    if (wei <= 0n)
        throw invalid();
    return weiToDoge(wei);
}

/** `POST /api/ledger/anchor`, `GET /api/wallet`: a document that waits on the chain. */
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
