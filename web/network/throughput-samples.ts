/**
 * Tokens per second generated for this node's clients, from the growth of `/api/node`'s
 * `requests.completionTokens` between two polls: the page keeps the history from when it opened, the node keeps none.
 */

export interface ThroughputSample {
    /** ms since the epoch, the end of the interval. */
    at: number,
    tokensPerSecond: number
}

/** The chart's span: the last five minutes, as the terminal dashboard's sparkline. */
export const THROUGHPUT_WINDOW_MS = 5 * 60_000;

export interface Reading {
    at: number,
    tokens: number,
    /** A restarted node starts its counters anew. */
    nodeId: string,
    uptimeSeconds: number
}

export function addSample(samples: ThroughputSample[], previous: Reading | undefined, current: Reading): ThroughputSample[] {
    const kept = samples.filter((sample) => sample.at > current.at - THROUGHPUT_WINDOW_MS);
    if (previous === undefined || previous.nodeId !== current.nodeId || current.uptimeSeconds < previous.uptimeSeconds
        || current.tokens < previous.tokens || current.at <= previous.at)
        return kept;
    return [...kept, {at: current.at, tokensPerSecond: (current.tokens - previous.tokens) / ((current.at - previous.at) / 1000)}];
}

