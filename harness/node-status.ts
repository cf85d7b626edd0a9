import {statusDocuments, type StatusDocument, type StatusPath} from '../node/node-status.js';

/** Reads a status document from a running node's API and checks it against the status contract. */
export async function fetchStatus<P extends StatusPath>(daemon: {origin: string}, path: P): Promise<StatusDocument<P>> {
    const response = await fetch(daemon.origin + path);
    if (!response.ok)
        throw new Error(`${path}: ${response.status}`);
    return statusDocuments[path].parse(await response.json()) as StatusDocument<P>;
}
