import {statusDocuments, type StatusDocument, type StatusPath} from '../node/node-status.js';
import {loadNodeSettings} from './config/load-node-settings.js';

export class NodeUnreachableError extends Error {
    constructor(readonly origin: string, cause: string) {
        super(`no strongdoge node answers at ${origin} (${cause}); start one with \`strongdoge\`, or pass --host/--port`);
        this.name = 'NodeUnreachableError';
    }
}

/** The node answered, with an error status. */
class NodeStatusError extends Error {
    constructor(readonly status: number, message: string) {
        super(message);
        this.name = 'NodeStatusError';
    }
}

export interface NodeAddressFlags {
    host?: string,
    port?: string,
    apiKey?: string,
    dataDir?: string
}

/**
 * Reads one status document of the running node's API, found the way `start` finds its settings (flags, env,
 * config file), and checks it against the status contract.
 */
export async function fetchNodeStatus<P extends StatusPath>(flags: NodeAddressFlags, path: P, post?: object): Promise<StatusDocument<P>> {
    const settings = await loadNodeSettings({...flags});
    const host = settings.host === '0.0.0.0' ? '127.0.0.1' : settings.host === '::' ? '::1' : settings.host;
    const origin = `http://${host.includes(':') ? `[${host}]` : host}:${settings.port}`;
    let response: Response;
    try {
        response = await fetch(origin + path, {
            headers: {...(settings.apiKey && {authorization: `Bearer ${settings.apiKey}`}), ...(post && {'content-type': 'application/json'})},
            ...(post && {method: 'POST', body: JSON.stringify(post)}),
            // Anchoring and verifying wait on the chain: longer than a status read.
            signal: AbortSignal.timeout(post ? 300_000 : 10_000)
        });
    } catch (error) {
        const cause = (error as {cause?: {code?: string}}).cause?.code ?? (error as Error).message;
        throw new NodeUnreachableError(origin, cause);
    }
    const body = await response.json().catch(() => undefined) as {error?: {message: string}} | undefined;
    if (!response.ok)
        throw new NodeStatusError(response.status, `${origin}${path}: ${response.status} ${body?.error?.message ?? response.statusText}`);
    const parsed = statusDocuments[path].safeParse(body);
    if (!parsed.success)
        throw new Error(`${origin}${path} answered a document this version does not understand (${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}); is it another strongdoge version?`);
    return parsed.data as StatusDocument<P>;
}

/** A status document an older node does not have: null where it answers 404. */
export async function fetchNodeStatusIfKnown<P extends StatusPath>(flags: NodeAddressFlags, path: P): Promise<StatusDocument<P> | null> {
    try {
        return await fetchNodeStatus(flags, path);
    } catch (error) {
        if (error instanceof NodeStatusError && error.status === 404)
            return null;
        throw error;
    }
}
