import type {StatusDocument, StatusPath} from '../node/node-status.js';

/**
 * The node's API as the page calls it: paths relative to the page (so a reverse proxy may serve it under a prefix),
 * the API key of `--api-key` from this tab's session, errors as OpenAI error objects say them.
 */

const KEY_STORAGE = 'strongdoge.apiKey';
/** The key when sessionStorage refuses it. */
let memoryKey: string | null = null;

/** The key asked for once, kept in sessionStorage only: it goes when the tab closes, never into localStorage. */
export function storedApiKey(): string | null {
    try {
        return sessionStorage.getItem(KEY_STORAGE);
    } catch {
        return null;
    }
}

const keyListeners = new Set<() => void>();

/** Called when a key is entered: what failed for want of it may try again at once. */
export function onApiKeyChange(listener: () => void) {
    keyListeners.add(listener);
    return () => {
        keyListeners.delete(listener);
    };
}

export function storeApiKey(key: string | null) {
    try {
        if (key === null)
            sessionStorage.removeItem(KEY_STORAGE);
        else
            sessionStorage.setItem(KEY_STORAGE, key);
    } catch {
        // Storage refused (private mode with a quota of 0): the key lasts until the page reloads.
    }
    memoryKey = key;
    for (const listener of keyListeners)
        listener();
}

export class ApiRequestError extends Error {
    constructor(readonly status: number, message: string, readonly code: string | null) {
        super(message);
    }
}

const unauthorizedListeners = new Set<() => void>();

/** Called whenever the node answers 401: the key is missing or wrong, and the page asks for it. */
export function onUnauthorized(listener: () => void) {
    unauthorizedListeners.add(listener);
    return () => {
        unauthorizedListeners.delete(listener);
    };
}

/** The error a failed response carries: `{error: {message, code}}` (OpenAI's shape, as every /v1 and /api route answers). */
async function responseError(response: Response) {
    const body = await response.json().catch(() => null) as {error?: {message?: unknown, code?: unknown}} | null;
    const message = typeof body?.error?.message === 'string' ? body.error.message : `${response.status} ${response.statusText}`;
    return new ApiRequestError(response.status, message, typeof body?.error?.code === 'string' ? body.error.code : null);
}

/** `fetch` of an API path (`/v1/…`, `/api/…`) with the key; a response that is not 2xx throws its error. */
export async function apiFetch(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    const key = storedApiKey() ?? memoryKey;
    if (key !== null)
        headers.set('authorization', `Bearer ${key}`);
    const response = await fetch(path.replace(/^\//, ''), {...init, headers, cache: 'no-store'});
    if (response.ok)
        return response;
    if (response.status === 401)
        for (const listener of unauthorizedListeners)
            listener();
    throw await responseError(response);
}

/** A status document (node/node-status.ts describes each). */
export async function fetchStatus<P extends StatusPath>(path: P, signal?: AbortSignal): Promise<StatusDocument<P>> {
    return await (await apiFetch(path, signal === undefined ? {} : {signal})).json() as StatusDocument<P>;
}

/** One entry of `GET /v1/models`: `owned_by` is `strongdoge` (this node), `strongdoge:pipeline` or `peer:<short id>`. */
export interface ModelEntry {
    id: string,
    owned_by: string
}

export async function fetchModels(): Promise<ModelEntry[]> {
    const body = await (await apiFetch('/v1/models')).json() as {data: ModelEntry[]};
    return body.data;
}
