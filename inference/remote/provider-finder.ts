import {setTimeout as sleep} from 'node:timers/promises';
import {LRUCache} from 'lru-cache';
import {shortPeerId} from '../../core/display.js';
import {pickRandom} from '../../core/random-pick.js';
import {withDefaults} from '../../core/with-defaults.js';
import {ConnectError} from '../../swarm/connection-limits.js';
import type {GossipModelView} from '../../swarm/gossip/model-gossip.js';
import type {PeerLease} from '../../swarm/peer-state.js';
import type {SwarmNode} from '../../swarm/swarm-node.js';

/**
 * Finding providers of a model no connected peer serves (issue 26, docs/architecture.md, "Swarm"): the network
 * model table that gossip spreads names a few providers of each model by node id; a request for one connects to the
 * best of them by key (`SwarmNode.connectTo`), waits for their capabilities to show it loaded, and routes as today.
 */

export interface ProviderFinderOptions {
    swarm: SwarmNode,
    /** The network model table as gossip knows it: `ModelGossipProtocol.entries`. */
    gossipModels: () => readonly GossipModelView[],
    /** Providers connected to at once for a request; defaults to 2 (the second is the failover's). */
    providersPerSearch: number,
    /**
     * How long a request waits on the providers it tried before it tries the next ones beside them (a dial to a
     * provider that is gone waits out the connect timeout, 45 s); a failed attempt reported by the DHT tries them at
     * once; defaults to 2 s.
     */
    stepMs: number,
    /**
     * How long a request waits for a provider to connect and show the model loaded, and for room among its
     * connections; defaults to 10 s. A connection still under way then is kept for the request's failovers.
     */
    waitMs: number,
    /**
     * How long the providers a look-up of a model's DHT topic found are used for other requests before the next
     * look-up (requests for a model nobody reachable serves would each ask the DHT); defaults to 30 s.
     */
    lookupTtlMs: number
}

export const providerFinderDefaults = {
    providersPerSearch: 2,
    stepMs: 2_000,
    waitMs: 10_000,
    lookupTtlMs: 30_000
};

/** Look-ups of model topics remembered (each a model's hash and its providers' ids). */
const MAX_REMEMBERED_LOOKUPS = 256;
/** Files of one model name whose topics a request looks up: those with the most providers (gossip may list many). */
const MAX_HASHES_LOOKED_UP = 2;
/** Providers no connection reached, passed over by every request this long. */
const UNREACHABLE_MS = 60_000;
const MAX_UNREACHABLE = 1_024;

/**
 * The providers gossip names for `model` (by the name its entries carry, whatever their hash), best first: those that
 * named themselves to this node before second-hand ones, the freshest first among equals; never this node, nor the
 * ids in `exclude`. Pure.
 */
export function chooseProviders(entries: readonly GossipModelView[], model: string, exclude: ReadonlySet<string>, count: number): string[] {
    const best = new Map<string, {direct: boolean, ageMs: number}>();
    for (const entry of entries) {
        if (entry.name !== model)
            continue;
        for (const provider of entry.providers) {
            if (provider.self || exclude.has(provider.id))
                continue;
            const known = best.get(provider.id);
            if (known === undefined || better(provider, known))
                best.set(provider.id, {direct: provider.direct, ageMs: provider.ageMs});
        }
    }
    return [...best].sort(([a, first], [b, second]) => (better(first, second) ? -1 : better(second, first) ? 1 : a.localeCompare(b)))
        .slice(0, count).map(([id]) => id);
}

function better(a: {direct: boolean, ageMs: number}, b: {direct: boolean, ageMs: number}) {
    return a.direct !== b.direct ? a.direct : a.ageMs < b.ageMs;
}

/** Whether the model is loaded at the connected peer `peerId`. */
function serving(swarm: SwarmNode, peerId: string, model: string) {
    return swarm.peer(peerId)?.capabilities.models.some((offer) => offer.id === model && offer.loaded) ?? false;
}

export class ProviderFinder {
    private readonly options: ProviderFinderOptions;
    /** By model hash, the look-up of its topic, done or under way: shared by the requests within the TTL. */
    private readonly lookups: LRUCache<string, Promise<string[]>>;
    /** Providers whose connection failed within the connect timeout lately: gone, or unreachable from here. */
    private readonly unreachable = new LRUCache<string, true>({max: MAX_UNREACHABLE, ttl: UNREACHABLE_MS});

    constructor(options: Partial<ProviderFinderOptions> & Pick<ProviderFinderOptions, 'swarm' | 'gossipModels'>) {
        this.options = withDefaults(providerFinderDefaults, options);
        this.lookups = new LRUCache({max: MAX_REMEMBERED_LOOKUPS, ttl: this.options.lookupTtlMs});
    }

    /** A search for one request: release it when the request ends. */
    search(model: string) {
        return new ProviderSearch(this.options, model, {
            lookup: (sha256) => this.lookup(sha256),
            unreachable: (peerId) => this.unreachable.has(peerId),
            noteUnreachable: (peerId) => this.unreachable.set(peerId, true)
        });
    }

    /** The providers announced on the topic of the model with this hash, looked up at most once per TTL. */
    private lookup(sha256: string) {
        let lookup = this.lookups.get(sha256);
        if (lookup === undefined) {
            const {swarm, waitMs} = this.options;
            lookup = swarm.lookupProviders(sha256, {timeoutMs: waitMs}).catch(() => [] as string[]);
            this.lookups.set(sha256, lookup);
        }
        return lookup;
    }
}

/**
 * The providers one request connected to: each connection held by a lease (`on-demand:provider:<model>`) until the
 * request ends; the jobs running over them hold them too, and once both are over the idle timeout closes them.
 */
export class ProviderSearch {
    /** Why each provider tried could not serve. */
    private readonly failures: string[] = [];
    private readonly leases = new Map<string, PeerLease>();
    /** Providers being tried or failed: a look for more passes them over. */
    private readonly tried = new Set<string>();
    /** Every provider this search asked for a connection. */
    private readonly asked = new Set<string>();
    /** Providers whose attempt is under way. */
    private readonly connecting = new Set<string>();
    private readonly pending = new Set<Promise<boolean>>();
    /** Providers whose dial the DHT reported failed once: still under way (a relay may do), no longer waited for alone. */
    private readonly faltering = new Set<string>();
    /** The providers the DHT topic named, once looked up, in an order of this search's own. */
    private lookedUp: string[] | undefined;
    /** Aborted once the request ends: attempts still under way give up. */
    private readonly ended = new AbortController();
    /** Wakes `settled` early: an attempt faltered. */
    private wake = () => {};

    constructor(private readonly options: ProviderFinderOptions, private readonly model: string, private readonly shared: {
        lookup: (sha256: string) => Promise<string[]>,
        unreachable: (peerId: string) => boolean,
        noteUnreachable: (peerId: string) => void
    }) {}

    /** Providers (named by gossip or announced on the DHT) that this search tried to connect to. */
    get providersTried() {
        return this.asked.size;
    }

    /**
     * Connects to the next best providers not tried yet (none connected already: ranking saw those), and resolves
     * true once one of these, or of those still connecting, shows the model loaded; false once none can within
     * `waitMs`. Those tried that have not answered within a step (or whose dial faltered) are left to go on, and the
     * next ones are tried beside them, so a gone provider gossip still names costs a step, not the request.
     */
    async next(signal?: AbortSignal): Promise<boolean> {
        const {swarm, waitMs, stepMs} = this.options;
        const giveUpAt = Date.now() + waitMs;
        const falter = (failure: {peerId: string}) => {
            if (this.connecting.has(failure.peerId) && !this.faltering.has(failure.peerId)) {
                this.faltering.add(failure.peerId);
                this.wake();
            }
        };
        swarm.on('connectAttemptFailed', falter);
        try {
            for (;;) {
                const started = await this.tryMore(signal, giveUpAt);
                if (this.pending.size === 0 || signal?.aborted)
                    return false;
                const left = giveUpAt - Date.now();
                const outcome = await this.settled(started > 0 ? Math.min(left, stepMs) : left, signal);
                if (outcome === 'loaded')
                    return true;
                if (signal?.aborted || Date.now() >= giveUpAt || (outcome === 'failed' && started === 0 && !this.morePossible()))
                    return false;
            }
        } finally {
            swarm.off('connectAttemptFailed', falter);
        }
    }

    /** Whether a look for more could still find a provider not tried: gossip may name new ones, the DHT is not asked yet. */
    private morePossible() {
        return this.lookedUp === undefined;
    }

    /**
     * Connects to the next best providers not tried, connected (ranking saw those) nor unreachable lately: gossip's
     * first, then those announced on the model's DHT topic (gossip names only a few). At most `providersPerSearch`
     * at once beside those still under way that have not faltered. How many it started.
     */
    private async tryMore(signal: AbortSignal | undefined, giveUpAt: number) {
        const {swarm, gossipModels, providersPerSearch} = this.options;
        let waiting = 0;
        for (const peerId of this.connecting)
            if (!this.faltering.has(peerId))
                waiting++;
        const room = Math.min(providersPerSearch, 2 * providersPerSearch - waiting);
        if (room <= 0)
            return 0;
        const exclude = new Set([...this.tried, ...swarm.peers().map((peer) => peer.id)]);
        const usable = (peerId: string) => !exclude.has(peerId) && !this.shared.unreachable(peerId);
        let chosen = chooseProviders(gossipModels(), this.model, exclude, Number.MAX_SAFE_INTEGER).filter(usable).slice(0, room);
        if (chosen.length === 0)
            chosen = (await this.announced(signal, giveUpAt)).filter(usable).slice(0, room);
        for (const peerId of chosen) {
            this.tried.add(peerId);
            this.asked.add(peerId);
            const attempt = this.attempt(peerId, signal);
            this.pending.add(attempt);
            this.connecting.add(peerId);
            void attempt.then(() => {
                this.pending.delete(attempt);
                this.connecting.delete(peerId);
                this.faltering.delete(peerId);
            });
        }
        return chosen.length;
    }

    /** Waits for the attempts under way: one shows the model loaded, all fail, one falters, or the time runs out first. */
    private settled(waitMs: number, signal: AbortSignal | undefined): Promise<'loaded' | 'failed' | 'faltered' | 'timeout'> {
        return new Promise((resolve) => {
            let left = this.pending.size;
            let over = false;
            const done = (outcome: 'loaded' | 'failed' | 'faltered' | 'timeout') => {
                if (over)
                    return;
                over = true;
                clearTimeout(timer);
                this.wake = () => {};
                signal?.removeEventListener('abort', abort);
                resolve(outcome);
            };
            const abort = () => done('timeout');
            // A provider that connects later serves a failover of this request, or the next request.
            const timer = setTimeout(abort, Math.max(0, waitMs));
            this.wake = () => done('faltered');
            signal?.addEventListener('abort', abort, {once: true});
            for (const attempt of this.pending)
                void attempt.then((ok) => {
                    left--;
                    if (ok)
                        done('loaded');
                    else if (left === 0)
                        done('failed');
                });
        });
    }

    /**
     * The providers announced on the DHT topics of the files gossip knows under this model's name (the two with the
     * most providers), looked up once per search and shared with other requests (`lookupTtlMs`); this search waits for
     * it until `giveUpAt` or its end, the look-up goes on. Shuffled: each request tries its own, not the first the
     * DHT named to all.
     */
    private async announced(signal: AbortSignal | undefined, giveUpAt: number): Promise<string[]> {
        if (this.lookedUp !== undefined)
            return this.lookedUp;
        const hashes = this.options.gossipModels().filter((entry) => entry.name === this.model)
            .sort((a, b) => b.providerCount - a.providerCount || a.ageMs - b.ageMs).slice(0, MAX_HASHES_LOOKED_UP).map((entry) => entry.sha256);
        // Until giveUpAt or the request's end (the sleep then throws), whichever comes first; the look-up goes on.
        const done = new AbortController();
        const gaveUp = sleep(Math.max(0, giveUpAt - Date.now()), [] as string[][], {signal: AbortSignal.any([done.signal, ...(signal ? [signal] : [])])})
            .catch(() => [] as string[][]);
        try {
            const found = await Promise.race([Promise.all([...new Set(hashes)].map((sha256) => this.shared.lookup(sha256))), gaveUp]);
            this.lookedUp = pickRandom([...new Set(found.flat())]);
        } finally {
            done.abort();
        }
        return this.lookedUp;
    }

    /** Why the providers asked did not serve, for the error the client sees. */
    why() {
        return [...this.failures, ...[...this.connecting].map((peerId) => `${shortPeerId(peerId)}: still connecting`)].join('; ');
    }

    /** Lets go of a provider that failed the request: its connection may close to make room for the next. */
    drop(peerId: string) {
        this.leases.get(peerId)?.release();
        this.leases.delete(peerId);
    }

    /** Ends the search's hold on its connections; those still connecting are let go as they arrive. */
    release() {
        this.ended.abort();
        for (const lease of this.leases.values())
            lease.release();
        this.leases.clear();
    }

    private async attempt(peerId: string, signal: AbortSignal | undefined) {
        const {swarm, waitMs} = this.options;
        const giveUpAt = Date.now() + waitMs;
        let lease: PeerLease;
        for (;;)
            try {
                lease = await swarm.connectTo(peerId, `provider:${this.model}`);
                break;
            } catch (error) {
                // Every connection is in use (the one to a provider that just failed among them, until it closes):
                // the room may come soon, and the limit is this node's, so a later look may try the provider again.
                const full = error instanceof ConnectError && error.code === 'peer_limit';
                if (full && await this.roomSoon(giveUpAt - Date.now(), signal))
                    continue;
                if (full)
                    this.tried.delete(peerId);
                if (error instanceof ConnectError && error.code === 'unreachable')
                    this.shared.noteUnreachable(peerId);
                this.failures.push(`${shortPeerId(peerId)}: ${error instanceof ConnectError ? error.code : 'error'} (${(error as Error).message})`);
                return false;
            }
        if (this.ended.signal.aborted) {
            lease.release();
            return false;
        }
        this.leases.set(peerId, lease);
        if (await this.loaded(peerId, signal))
            return true;
        this.failures.push(`${shortPeerId(peerId)}: ${this.options.swarm.peer(peerId) === undefined ? 'left' : 'connected'} without '${this.model}'`
            + ` loaded within ${this.options.waitMs / 1000} s`);
        return false;
    }

    /** Whether a connection closes within `waitMs`, while the request lasts. */
    private async roomSoon(waitMs: number, signal: AbortSignal | undefined) {
        if (waitMs <= 0 || this.ended.signal.aborted || signal?.aborted)
            return false;
        const {swarm} = this.options;
        let done = (_left: boolean) => {};
        let timer: NodeJS.Timeout | undefined;
        const left = () => done(true);
        const stop = () => done(false);
        try {
            return await new Promise<boolean>((resolve) => {
                done = resolve;
                swarm.once('peerLeft', left);
                this.ended.signal.addEventListener('abort', stop, {once: true});
                signal?.addEventListener('abort', stop, {once: true});
                timer = setTimeout(stop, waitMs);
            });
        } finally {
            clearTimeout(timer);
            swarm.off('peerLeft', left);
            this.ended.signal.removeEventListener('abort', stop);
            signal?.removeEventListener('abort', stop);
        }
    }

    /** Waits, at most `waitMs`, for the peer's capabilities to show the model loaded; false if it leaves. */
    private async loaded(peerId: string, signal: AbortSignal | undefined): Promise<boolean> {
        const {swarm, waitMs} = this.options;
        if (serving(swarm, peerId, this.model))
            return true;
        let check = () => {};
        let timer: NodeJS.Timeout | undefined;
        try {
            return await new Promise<boolean>((resolve) => {
                check = () => {
                    if (serving(swarm, peerId, this.model))
                        resolve(true);
                    else if (swarm.peer(peerId) === undefined || signal?.aborted)
                        resolve(false);
                };
                swarm.on('capabilities', check);
                swarm.on('peerLeft', check);
                signal?.addEventListener('abort', check, {once: true});
                timer = setTimeout(() => resolve(serving(swarm, peerId, this.model)), waitMs);
            });
        } finally {
            clearTimeout(timer);
            swarm.off('capabilities', check);
            swarm.off('peerLeft', check);
            signal?.removeEventListener('abort', check);
        }
    }
}
