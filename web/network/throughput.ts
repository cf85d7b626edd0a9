import {useEffect, useState} from 'preact/hooks';
import type {NodeStatus} from '../../node/node-status.js';

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

interface Reading {
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

/** The samples of `status` as it is polled; a new sample each time it changes. */
export function useThroughput(status: NodeStatus | null) {
    const [state, setState] = useState<{samples: ThroughputSample[], last?: Reading}>({samples: []});
    useEffect(() => {
        if (status === null)
            return;
        const reading = {at: Date.now(), tokens: status.requests.completionTokens, nodeId: status.id, uptimeSeconds: status.uptimeSeconds};
        setState((previous) => ({samples: addSample(previous.samples, previous.last, reading), last: reading}));
    }, [status]);
    return state.samples;
}
