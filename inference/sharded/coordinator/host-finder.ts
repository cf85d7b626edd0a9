import {setTimeout as sleep} from 'node:timers/promises';
import {plural} from '../../../core/display.js';
import {withDefaults} from '../../../core/with-defaults.js';
import type {PeerLease} from '../../../swarm/peer-state.js';
import type {SwarmNode} from '../../../swarm/swarm-node.js';

/**
 * Hosts beyond the connected peers (issue 26, docs/architecture.md, "Finding providers and hosts"): nodes with room
 * for peers' layers announce on the network's hosts topic; a coordinator that cannot plan from its peers looks the
 * topic up, connects to a few hosts by key and waits for their first RTT, so that the planner weighs them like any
 * peer. The connections are held for the plan that follows (its stages then hold theirs); if it still cannot form,
 * they are let go, stay while idle room allows, and the idle timeout closes them: a pipeline that cannot form pins
 * nothing while it waits.
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
    /** By peer id, the hosts connected for the next plan. */
    private readonly leases = new Map<string, PeerLease>();
    private lookingUp: Promise<number> | undefined;
    private stopped = false;
    /** What the last look-up found, for the pipeline's waiting reason. */
    private last: {found: number, connected: number} | undefined;

    constructor(options: Partial<HostFinderOptions> & Pick<HostFinderOptions, 'swarm'>) {
        this.options = withDefaults(hostFinderDefaults, options);
    }

    /** Whether a look-up may run now (not within `intervalMs` of the last). */
    get due() {
        return !this.stopped && Date.now() - this.lastLookupAt >= this.options.intervalMs;
    }

    /**
     * Looks the hosts topic up and connects to those not connected nor `excluded`; resolves how many new hosts are
     * connected with an RTT measured within `waitMs` of the look-up's answer (0 when it is not due, or finds none).
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

    /** The last look-up in words, to follow the planner's reason: `; the DHT's hosts topic named 3 hosts beyond the connected peers, 2 connected…`. */
    summary() {
        if (this.last === undefined)
            return '';
        const {found, connected} = this.last;
        return `; the DHT's hosts topic named ${found === 0 ? 'no host' : plural(found, 'host')} beyond the connected peers`
            + `${found === 0 ? '' : `, ${connected} connected`} (looked up every ${this.options.intervalMs / 1000} s)`;
    }

    /** Lets go of the hosts connected for planning: the plan's stages hold theirs now, or the plan did not form. */
    release() {
        for (const lease of this.leases.values())
            lease.release();
        this.leases.clear();
    }

    /** Releases every host, and any connection still under way as it arrives. */
    stop() {
        this.stopped = true;
        this.release();
    }

    private async lookUp(excluded: (peerId: string) => boolean) {
        const {swarm, hostsPerLookup, waitMs} = this.options;
        const found = await swarm.lookupHosts({timeoutMs: waitMs}).catch(() => [] as string[]);
        const fresh = found.filter((peerId) => swarm.peer(peerId) === undefined && !excluded(peerId)).slice(0, hostsPerLookup);
        const giveUpAt = Date.now() + waitMs;
        const connected = await Promise.all(fresh.map(async (peerId) => {
            const lease = swarm.connectTo(peerId, 'shard-host').then((held) => this.keep(peerId, held), () => false);
            // A dial may take the connect timeout (45 s): the plan goes on without it, and one that connects later is
            // kept for the next plan.
            return await Promise.race([lease, sleep(Math.max(0, giveUpAt - Date.now()), false, {ref: false})]) && await this.measured(peerId, giveUpAt);
        }));
        this.last = {found: fresh.length, connected: connected.filter(Boolean).length};
        return this.last.connected;
    }

    /** Holds a host's connection for the next plan, unless the coordinator stopped meanwhile. */
    private keep(peerId: string, lease: PeerLease) {
        if (this.stopped) {
            lease.release();
            return false;
        }
        this.leases.get(peerId)?.release();
        this.leases.set(peerId, lease);
        return true;
    }

    /** Waits until `giveUpAt` for the peer's first RTT sample (a new connection pings at once): the planner weighs hosts by it. */
    private async measured(peerId: string, giveUpAt: number) {
        const {swarm} = this.options;
        while (Date.now() < giveUpAt) {
            const peer = swarm.peer(peerId);
            if (peer === undefined)
                return false;
            if (peer.rtt.smoothedMs !== undefined)
                return true;
            await sleep(50);
        }
        return swarm.peer(peerId) !== undefined;
    }
}
