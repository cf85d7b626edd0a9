import {withDefaults} from '../../../core/with-defaults.js';
import type {PeerLease} from '../../../swarm/peer-state.js';
import type {SwarmNode} from '../../../swarm/swarm-node.js';

/**
 * Hosts beyond the connected peers (issue 26, docs/architecture.md, "Finding providers and hosts"): nodes with room
 * for peers' layers announce on the network's hosts topic; a coordinator that cannot plan from its peers looks the
 * topic up, connects to a few hosts by key and waits for their first RTT, so that the planner weighs them like any
 * peer. The connections are held until the next plan forms (its stages then hold theirs), at most twice
 * `hostsPerLookup` of them while it cannot (those of the last look-up and as many before), and the idle timeout
 * closes those it did not use.
 */

export interface HostFinderOptions {
    swarm: SwarmNode,
    /** Hosts connected to per look-up, at most; defaults to 8. */
    hostsPerLookup: number,
    /** Look-ups at most this often: each is a DHT query and a few connections; defaults to 30 s. */
    intervalMs: number,
    /** How long a look-up waits for the DHT, and then for the hosts' connections and first RTT; defaults to 10 s. */
    waitMs: number
}

export const hostFinderDefaults = {
    hostsPerLookup: 8,
    intervalMs: 30_000,
    waitMs: 10_000
};

export class HostFinder {
    private readonly options: HostFinderOptions;
    private lastLookupAt = -Infinity;
    /** By peer id, the hosts connected for planning, oldest first. */
    private readonly leases = new Map<string, PeerLease>();
    private lookingUp: Promise<number> | undefined;

    constructor(options: Partial<HostFinderOptions> & Pick<HostFinderOptions, 'swarm'>) {
        this.options = withDefaults(hostFinderDefaults, options);
    }

    /** Whether a look-up may run now (not within `intervalMs` of the last). */
    get due() {
        return Date.now() - this.lastLookupAt >= this.options.intervalMs;
    }

    /**
     * Looks the hosts topic up and connects to those not connected nor `excluded`; resolves how many new hosts are
     * connected with an RTT measured (0 when it is not due, or finds none).
     */
    find(excluded: (peerId: string) => boolean): Promise<number> {
        if (this.lookingUp !== undefined || !this.due)
            return this.lookingUp ?? Promise.resolve(0);
        this.lastLookupAt = Date.now();
        this.lookingUp = this.lookUp(excluded).finally(() => {
            this.lookingUp = undefined;
        });
        return this.lookingUp;
    }

    /** Lets go of the hosts connected for planning: the plan's stages hold theirs now. */
    release() {
        for (const lease of this.leases.values())
            lease.release();
        this.leases.clear();
    }

    /**
     * Before a look-up: lets go of the hosts found before that left or have no room left, and of the oldest beyond
     * `room`, so that a pipeline that cannot form pins a bounded number of connections while it waits.
     */
    private prune(room: number) {
        const {swarm} = this.options;
        for (const [peerId, lease] of this.leases)
            if ((swarm.peer(peerId)?.capabilities.shardHost?.freeBytes ?? 0) === 0) {
                lease.release();
                this.leases.delete(peerId);
            }
        for (const [peerId, lease] of this.leases) {
            if (this.leases.size <= room)
                break;
            lease.release();
            this.leases.delete(peerId);
        }
    }

    private async lookUp(excluded: (peerId: string) => boolean) {
        const {swarm, hostsPerLookup, waitMs} = this.options;
        const found = await swarm.lookupHosts({timeoutMs: waitMs}).catch(() => [] as string[]);
        this.prune(hostsPerLookup);
        const fresh = found.filter((peerId) => swarm.peer(peerId) === undefined && !excluded(peerId)).slice(0, hostsPerLookup);
        const connected = await Promise.all(fresh.map(async (peerId) => {
            try {
                const lease = await swarm.connectTo(peerId, 'shard-host');
                // The oldest first: a host found again counts as new.
                this.leases.get(peerId)?.release();
                this.leases.delete(peerId);
                this.leases.set(peerId, lease);
                return await this.measured(peerId, waitMs);
            } catch {
                // Unreachable, banned, or no room among this node's connections: the others may do.
                return false;
            }
        }));
        return connected.filter(Boolean).length;
    }

    /** Waits for the peer's first RTT sample (its connection pings at once): the planner weighs hosts by it. */
    private async measured(peerId: string, waitMs: number) {
        const {swarm} = this.options;
        const until = Date.now() + waitMs;
        while (Date.now() < until) {
            const peer = swarm.peer(peerId);
            if (peer === undefined)
                return false;
            if (peer.rtt.smoothedMs !== undefined)
                return true;
            await new Promise((resolve) => setTimeout(resolve, 50));
        }
        return swarm.peer(peerId) !== undefined;
    }
}
