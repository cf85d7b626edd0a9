import {loadNodeSettings} from './config/load-node-settings.js';

export class NodeUnreachableError extends Error {
    constructor(readonly origin: string, cause: string) {
        super(`no strongdoge node answers at ${origin} (${cause}); start one with \`strongdoge\`, or pass --host/--port`);
        this.name = 'NodeUnreachableError';
    }
}

export interface NodeAddressFlags {
    host?: string,
    port?: string,
    apiKey?: string,
    dataDir?: string
}

/** Talks to the running node's API, found the way `start` finds its settings (flags, env, config file). */
export async function fetchNodeJson<T>(flags: NodeAddressFlags, path: string): Promise<T> {
    const settings = await loadNodeSettings({...flags});
    const host = settings.host === '0.0.0.0' ? '127.0.0.1' : settings.host === '::' ? '::1' : settings.host;
    const origin = `http://${host.includes(':') ? `[${host}]` : host}:${settings.port}`;
    let response: Response;
    try {
        response = await fetch(origin + path, {
            headers: settings.apiKey ? {authorization: `Bearer ${settings.apiKey}`} : {},
            signal: AbortSignal.timeout(10_000)
        });
    } catch (error) {
        const cause = (error as {cause?: {code?: string}}).cause?.code ?? (error as Error).message;
        throw new NodeUnreachableError(origin, cause);
    }
    const body = await response.json().catch(() => undefined) as T & {error?: {message: string}};
    if (!response.ok)
        throw new Error(`${origin}${path}: ${response.status} ${body?.error?.message ?? response.statusText}`);
    return body;
}
