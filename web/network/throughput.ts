/** The tokens/s samples (throughput-samples.ts) of `/api/node` as the page polls it. */
import {useEffect, useState} from 'preact/hooks';
import type {NodeStatus} from '../../node/node-status.js';
import {addSample, type Reading, type ThroughputSample} from './throughput-samples.js';

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
