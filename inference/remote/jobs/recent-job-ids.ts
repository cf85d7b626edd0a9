import {LRUCache} from 'lru-cache';

/**
 * Job ids that ended lately, oldest forgotten first: frames for them still arrive for a while (a cancel crosses the
 * last tokens on the wire) and are no violation; a frame for a job id never seen is. `has` does not refresh an id.
 */
export function recentJobIds(capacity = 4096) {
    return new LRUCache<string, true>({max: capacity});
}
