import {EventEmitter} from 'node:events';
import {setTimeout as sleep} from 'node:timers/promises';
import Hyperswarm, {type NoiseSecretStream, type PeerDiscovery} from 'hyperswarm';
import {BanList, type BanListOptions} from './ban-list.js';
import type {Capabilities} from './capabilities.js';
import {ConnectError, hyperswarmMaxPeers, originReason, pickEviction, topicDialTarget, type ConnectionOrigin, type EvictionCandidate} from './connection-limits.js';
import {loopbackTestnetOptions} from './loopback.js';
import {hostsTopic, networkTopic, providerTopic, secretProof, type NetworkSpec} from './network-topic.js';
import type {NodeIdentity} from './node-identity.js';
import type {CloseReason} from './channel/errors.js';
import {PeerConnection} from './peer-connection.js';
import type {PeerProtocol} from './peer-protocol.js';
import type {PeerLease, PeerState} from './peer-state.js';
import {PROTOCOL_VERSION, type Hello} from './protocol/control-messages.js';
import {natStatus, offersRelay, pickRelay, wantsRelay, type NatStatus, type RelayCandidate, type RelayMode} from './relay-policy.js';
import {relayKeyPair, RelayServer} from './relay-server.js';
import {SwarmDHT, type ConnectionFailure} from './swarm-dht.js';

export interface SwarmTimings {
    /** How often peers are pinged (RTT, liveness); defaults to 5 s. */
    pingIntervalMs: number,
    /** A peer silent this long is dropped, and Hyperswarm reconnects when it is back; defaults to 30 s. */
    peerSilenceTimeoutMs: number,
    /** A connection whose hello has not arrived by then is dropped (and retried); defaults to 5 s. */
    helloTimeoutMs: number,
    /** Capability updates are sent at most this often; defaults to 2 s. */
    capabilityUpdateMinIntervalMs: number,
    /** Announce and look up again this often, so late joiners and restarted peers are found; defaults to 30 s. */
    discoveryRefreshMs: number,
    /**
     * Extra look-ups soon after joining: nodes that join together each announce while the others look up, so some
     * pairs only meet at a later look-up (docs/architecture.md, "Swarm"); defaults to 1, 3, 7 and 15 s.
     */
    earlyRefreshesMs: number[],
    /**
     * Leaving the swarm waits for the DHT, which can take seconds when the bootstrap nodes are unreachable: stop()
     * returns after this long whatever the DHT does, so quitting stays prompt; defaults to 1 s.
     */
    leaveTimeoutMs: number,
    /** With no peer this long after starting (or after the last one left), a warning says why; defaults to 60 s. */
    isolationWarningMs: number,
    /**
     * A connection younger than this is not closed to make room for another, so the peer that opened it has time to
     * start what it opened it for; defaults to 10 s.
     */
    newConnectionGraceMs: number,
    /** How long `connectTo` waits for a peer's connection and hello (a failed punch takes up to 20 s before a relay); defaults to 45 s. */
    connectTimeoutMs: number
}

export const swarmTimingDefaults: SwarmTimings = {
    pingIntervalMs: 5_000,
    peerSilenceTimeoutMs: 30_000,
    helloTimeoutMs: 5_000,
    capabilityUpdateMinIntervalMs: 2_000,
    discoveryRefreshMs: 30_000,
    earlyRefreshesMs: [1_000, 3_000, 7_000, 15_000],
    leaveTimeoutMs: 1_000,
    isolationWarningMs: 60_000,
    newConnectionGraceMs: 10_000,
    connectTimeoutMs: 45_000
};

/** How many connections a node holds (docs/architecture.md, "Swarm"). */
export interface SwarmConnectionLimits {
    /**
     * Most connections at once, the network topic's and on-demand ones together (`--max-peers`). The node dials the
     * topic up to `topicDialTarget` of it; at the limit a new connection replaces the least useful idle one, or is
     * refused when every one is in use or new; defaults to 64.
     */
    maxPeers: number,
    /** An on-demand connection with nothing running over it this long is closed; 0 = never (`--idle-peer-timeout`); defaults to 5 min. */
    idleTimeoutMs: number
}

export const swarmConnectionDefaults: SwarmConnectionLimits = {maxPeers: 64, idleTimeoutMs: 300_000};

/** Why a peer's connection is held, for `/api/peers`. */
export interface PeerUsage {
    /**
     * `network` (the network's topic, or the peer connected here), `relay-through`, `on-demand:<why>`, what runs over
     * it (`provider:<model>`, `requester:<model>`, `shard-host`, `shard-coordinator`…), and `relay` while this
     * node's connections to other peers go through the peer's relay.
     */
    reasons: string[],
    inUse: boolean,
    /** How long nothing has run over it; 0 while in use. */
    idleMs: number
}

export interface SwarmRelayOptions {
    /** Whether this node relays for peers: `auto` once the DHT finds it reachable, `on` regardless; defaults to `auto`. */
    mode: RelayMode,
    /** Relayed traffic above which new relay clients are refused, in megabits per second; defaults to no cap. */
    maxMbps?: number,
    /** Node ids of relays to go through first (`--relay-through`); they are joined as peers. */
    through: string[]
}

export const swarmRelayDefaults: SwarmRelayOptions = {mode: 'auto', through: []};

/** How this node reaches a peer. */
export interface PeerRoute {
    kind: 'direct' | 'relayed',
    /** The relay's node id, when a connected peer announced it. */
    relay: string | null,
    relayKey: string | null
}

export interface SwarmNodeOptions {
    identity: NodeIdentity,
    network: NetworkSpec,
    software: string,
    /** DHT bootstrap nodes; defaults to Hyperswarm's public bootstrap. */
    bootstrap?: {host: string, port: number}[],
    capabilities: () => Capabilities,
    /** Timings; each defaults to `swarmTimingDefaults`. */
    timings?: Partial<SwarmTimings>,
    /** Ban durations; default to `banListDefaults`. */
    bans?: Partial<BanListOptions>,
    /** Relaying for peers, and relays to use; each defaults to `swarmRelayDefaults`. */
    relay?: Partial<SwarmRelayOptions>,
    /** How many connections, and when idle ones close; each defaults to `swarmConnectionDefaults`. */
    limits?: Partial<SwarmConnectionLimits>
}

export interface SwarmNodeEvents {
    peerJoined: [peer: PeerState],
    peerLeft: [peerId: string, reason: CloseReason],
    peerBanned: [peerId: string, reason: string, until: number],
    peerIncompatible: [peerId: string, message: string],
    capabilities: [peer: PeerState],
    /** A connection that closed before its hello completed. */
    connectionFailed: [peerId: string, reason: CloseReason],
    /** HyperDHT could not open a connection to a peer (hole punch failed, relay unreachable, …). */
    connectAttemptFailed: [failure: ConnectionFailure],
    /** No peer for `isolationWarningMs`: what the DHT sees of this node, and the last failures. */
    isolated: [nat: NatStatus, failures: ConnectionFailure[]],
    /** This node started or stopped offering to relay for peers. */
    relayOffer: [offering: boolean],
    /** A new connection closed at once: `--max-peers` reached, and every connection in use. */
    connectionRefused: [peerId: string, reason: string]
}

/** A `connectTo` under way: the peer joined by key until its hello completes. */
interface Dial {
    why: string,
    startedAt: number,
    done: Promise<PeerState>,
    finish(result: PeerState | ConnectError): void
}

/** This node in the swarm: joins its network's topic, keeps one control connection per peer, bans misbehaviour. */
export class SwarmNode extends EventEmitter<SwarmNodeEvents> {
    readonly bans: BanList;
    private readonly timings: SwarmTimings;
    private readonly limits: SwarmConnectionLimits;
    private readonly relayOptions: SwarmRelayOptions;
    private readonly relayKeys;
    private relayServer: RelayServer | undefined;
    private offeringRelay = false;
    private dht: SwarmDHT | undefined;
    private alone = {since: Date.now(), warned: false};
    private readonly connections = new Map<string, PeerConnection>();
    private readonly dials = new Map<string, Dial>();
    private stopped = false;
    private readonly protocols: PeerProtocol[] = [];
    private swarm: Hyperswarm | undefined;
    private discovery: PeerDiscovery | undefined;
    /**
     * The DHT topics this node announces on besides its network's, by what it announces there: a model's file hash
     * or `HOSTS`. Joined as a server only: found by peers' look-ups, not dialed through.
     */
    private readonly announced = new Map<string, Buffer>();
    private timers: NodeJS.Timeout[] = [];
    private lastCapabilities = '';
    /** The models and shards the last capabilities sent could serve (servingOf). */
    private lastServing = '';
    private capabilityTimer: NodeJS.Timeout | undefined;
    private lastCapabilitySentAt = 0;

    constructor(private readonly options: SwarmNodeOptions) {
        super();
        this.timings = {...swarmTimingDefaults, ...options.timings};
        this.limits = {...swarmConnectionDefaults, ...options.limits};
        this.bans = new BanList(options.bans);
        this.relayOptions = {...swarmRelayDefaults, ...options.relay};
        this.relayKeys = relayKeyPair(options.identity.secretKey);
    }

    /** Attaches a protocol to every peer connection, present and future. */
    use(protocol: PeerProtocol) {
        this.protocols.push(protocol);
        for (const connection of this.connections.values())
            if (connection.ready)
                protocol.attach(connection);
    }

    get id() {
        return this.options.identity.id;
    }

    get network() {
        return this.options.network.name;
    }

    /** Peers that completed the hello handshake. */
    peers(): PeerState[] {
        return [...this.connections.values()].flatMap((connection) => connection.ready ? [connection.state!] : []);
    }

    /** Connections whose hello has not completed yet: peers about to join. */
    handshaking(): number {
        let count = 0;
        for (const connection of this.connections.values())
            if (!connection.ready)
                count++;
        return count;
    }

    peer(peerId: string): PeerState | undefined {
        const connection = this.connections.get(peerId);
        return connection?.ready ? connection.state : undefined;
    }

    /**
     * A peer that let a job stall may be gone without a goodbye (killed, frozen, unplugged): ping it, and drop
     * the connection unless it answers within `timeoutMs`, so it can reconnect cleanly when it is back.
     */
    probe(peerId: string, timeoutMs: number) {
        const connection = this.connections.get(peerId);
        if (connection?.state === undefined)
            return;
        const probedAt = Date.now();
        connection.ping();
        setTimeout(() => {
            if (connection.state!.lastSeenAt < probedAt)
                connection.close({kind: 'network', message: `no answer within ${timeoutMs} ms after a stalled job`});
        }, timeoutMs).unref();
    }

    /** How the DHT sees this node's NAT; null before the swarm starts. */
    natStatus(): NatStatus | null {
        return this.dht === undefined ? null : natStatus(this.dht);
    }

    /** Whether this node relays for peers, and how much. */
    relayStatus() {
        return {
            mode: this.relayOptions.mode,
            offering: this.offeringRelay,
            key: this.relayKeys.publicKey.toString('hex'),
            through: this.relayOptions.through,
            ...(this.relayServer?.stats() ?? {clients: 0, pairs: 0, bytesRelayed: 0, mbps: 0, maxMbps: this.relayOptions.maxMbps ?? null})
        };
    }

    /** Direct, or through which relay. */
    route(peerId: string): PeerRoute {
        const connection = this.connections.get(peerId);
        const relayKey = connection === undefined ? null : this.dht?.relayKeyOf(connection.stream) ?? null;
        // The relay node's own connection comes from the relay's address too, and is direct.
        if (relayKey === null || connection?.state?.capabilities.relay?.key === relayKey)
            return {kind: 'direct', relay: null, relayKey: null};
        const relay = this.peers().find((peer) => peer.capabilities.relay?.key === relayKey);
        return {kind: 'relayed', relay: relay?.id ?? null, relayKey};
    }

    /** The last failed attempt to each peer that is not connected. */
    connectionFailures(): ConnectionFailure[] {
        return (this.dht?.connectionFailures() ?? []).filter((failure) => !this.connections.get(failure.peerId)?.ready);
    }

    /** Connections held (handshakes included), how many of them are in use, and the limit. */
    connectionCounts() {
        const relays = this.relaysInUse();
        let inUse = 0;
        for (const connection of this.connections.values())
            if (this.isInUse(connection, relays))
                inUse++;
        return {held: this.connections.size, inUse, maxPeers: this.limits.maxPeers, idleTimeoutMs: this.limits.idleTimeoutMs};
    }

    /** Why each connected peer's connection is held, by peer id. */
    usage(): Map<string, PeerUsage> {
        const relays = this.relaysInUse();
        const now = Date.now();
        const usage = new Map<string, PeerUsage>();
        for (const connection of this.connections.values()) {
            const state = connection.state;
            if (state === undefined || !connection.ready)
                continue;
            const reasons = [originReason(connection.origin), ...state.heldFor, ...(relays.has(connection.peerId) ? ['relay'] : [])];
            const inUse = this.isInUse(connection, relays);
            usage.set(connection.peerId, {reasons: [...new Set(reasons)], inUse, idleMs: inUse ? 0 : state.idleMs(now)});
        }
        return usage;
    }

    /**
     * A connection to a peer by its id, held for `why` (a provider of a model, a host for a pipeline…) until the
     * lease is released: the peer's connection if there is one, else one opened by key (Hyperswarm's `joinPeer`,
     * through a relay where needed). It counts against `--max-peers`: at the limit the least useful idle connection
     * is closed first, and with none idle this fails with `peer_limit`. A connection opened here is closed once
     * nothing has run over it for `--idle-peer-timeout` (docs/architecture.md, "Swarm").
     */
    async connectTo(peerId: string, why: string): Promise<PeerLease> {
        const reason = `on-demand:${why}`;
        if (!/^[0-9a-f]{64}$/.test(peerId) || peerId === this.id)
            throw new ConnectError('invalid_peer', `not a peer's node id: ${peerId.slice(0, 80)}`);
        if (this.swarm === undefined || this.stopped)
            throw new ConnectError('stopped', 'the swarm is not running');
        if (this.bans.isBanned(peerId))
            throw new ConnectError('banned', `peer ${peerId.slice(0, 16)} is banned`);
        const connected = this.peer(peerId);
        if (connected !== undefined)
            return connected.lease(reason);
        let dial = this.dials.get(peerId);
        if (dial === undefined) {
            // A handshake under way with the peer already holds its place.
            const refusal = this.connections.has(peerId) ? undefined : this.makeRoom(peerId);
            if (refusal !== undefined)
                throw new ConnectError('peer_limit', refusal);
            dial = this.dial(peerId, why);
        }
        // Resumed before any other network event: nothing can close the connection before the lease is taken.
        return (await dial.done).lease(reason);
    }

    /** What this node is announced on the DHT as: a provider of these models (file hashes), a host with room. */
    announcements() {
        return {models: [...this.announced.keys()].filter((what) => what !== HOSTS).sort(), host: this.announced.has(HOSTS)};
    }

    /**
     * The node ids announced on `topic`, as the DHT's nodes closest to it answer, never this node's: at most `limit`,
     * stopping early once that many are known, or after `timeoutMs` (a look-up takes a few round trips).
     */
    async lookup(topic: Buffer, {limit = 20, timeoutMs = 10_000, signal}: {limit?: number, timeoutMs?: number, signal?: AbortSignal} = {}): Promise<string[]> {
        if (this.dht === undefined || this.stopped)
            throw new ConnectError('stopped', 'the swarm is not running');
        const found = new Set<string>();
        if (signal?.aborted)
            return [];
        const query = this.dht.lookup(topic);
        const stop = () => query.destroy();
        const timer = setTimeout(stop, timeoutMs).unref();
        signal?.addEventListener('abort', stop, {once: true});
        try {
            for await (const answer of query) {
                for (const peer of answer.peers ?? []) {
                    const id = peer.publicKey.toString('hex');
                    if (id !== this.id && !this.bans.isBanned(id))
                        found.add(id);
                }
                if (found.size >= limit)
                    break;
            }
        } catch {
            // Destroyed at the timeout, or too few DHT nodes answered: what was found stands.
        } finally {
            clearTimeout(timer);
            signal?.removeEventListener('abort', stop);
            query.destroy();
        }
        return [...found].slice(0, limit);
    }

    /** The providers of a model announced on the DHT, by the file's SHA-256 (hex). */
    lookupProviders(sha256: string, options?: {limit?: number, timeoutMs?: number, signal?: AbortSignal}) {
        return this.lookup(providerTopic(this.options.network, sha256), options);
    }

    /** The hosts announced on the DHT. */
    lookupHosts(options?: {limit?: number, timeoutMs?: number, signal?: AbortSignal}) {
        return this.lookup(hostsTopic(this.options.network), options);
    }

    /** Joins a peer by key until its hello completes, the time runs out or the node stops. */
    private dial(peerId: string, why: string): Dial {
        const key = Buffer.from(peerId, 'hex');
        let settle!: (result: PeerState | ConnectError) => void;
        const done = new Promise<PeerState>((resolve, reject) => {
            settle = (result) => result instanceof ConnectError ? reject(result) : resolve(result);
        });
        const timer = setTimeout(() => {
            const failure = this.dht?.connectionFailures().find((entry) => entry.peerId === peerId);
            dial.finish(new ConnectError('unreachable', `no connection to ${peerId.slice(0, 16)} within ${this.timings.connectTimeoutMs / 1000} s`
                + (failure === undefined ? '' : ` (last attempt: ${failure.code}${failure.relay === null ? '' : ` via relay ${failure.relay.slice(0, 16)}`})`)));
        }, this.timings.connectTimeoutMs);
        const dial: Dial = {why, startedAt: Date.now(), done, finish: (result) => {
            if (this.dials.get(peerId) !== dial)
                return;
            clearTimeout(timer);
            this.dials.delete(peerId);
            // Joined by key only until connected: Hyperswarm would otherwise dial it again whenever the connection closes.
            if (!this.relayOptions.through.includes(peerId))
                this.swarm?.leavePeer(key);
            settle(result);
        }};
        // A failed dial is the caller's to handle; this keeps an unawaited one from being an unhandled rejection.
        done.catch(() => undefined);
        this.dials.set(peerId, dial);
        // Hyperswarm 4.17 counts a peer's connections that closed within 15 s as failed attempts, waits a second per
        // attempt before dialing it again and gives up at 5: an on-demand connection closed as idle counts too. A
        // connectTo is a deliberate dial: it starts afresh, as Hyperswarm does for a peer a topic finds again. Hyperswarm
        // also bans for good a peer this node's firewall once refused: the ban list (checked above) has the last word.
        const known = (this.swarm as unknown as {peers?: Map<string, {_reset?(): void, ban?(banned: boolean): void}>}).peers?.get(peerId);
        known?._reset?.();
        known?.ban?.(false);
        this.swarm!.joinPeer(key);
        // Hyperswarm 4.17's joinPeer does not dial a peer the topic's look-up already queued (left undialed at the
        // limit) until its next dialing pass, which nothing starts: start it (it has no public way).
        (this.swarm as unknown as {_attemptClientConnections?(): void})._attemptClientConnections?.();
        return dial;
    }

    /**
     * Makes room for one more connection: at `--max-peers` the least useful idle connection is closed (docs/
     * architecture.md, "Swarm"); returns why not when every connection is in use or too new to close.
     */
    private makeRoom(forPeerId: string): string | undefined {
        const {maxPeers} = this.limits;
        while (this.heldExcept(forPeerId) >= maxPeers) {
            const victim = pickEviction(this.evictionCandidates(forPeerId));
            if (victim === undefined && this.giveUpFailingDial(forPeerId))
                continue;
            if (victim === undefined)
                return `at --max-peers ${maxPeers}: all ${this.heldExcept(forPeerId)} connections are in use or opened within the last`
                    + ` ${this.timings.newConnectionGraceMs / 1000} s`;
            this.connections.get(victim.peerId)!.close({kind: 'local', message: `closed to make room for ${forPeerId.slice(0, 16)} (--max-peers ${maxPeers})`});
        }
        return undefined;
    }

    /**
     * Ends a `connectTo` under way whose attempts the DHT reported failed since it began (a peer gone, or unreachable
     * from here, that would keep its place for the connect timeout): its place goes to a new connection. False when
     * there is none.
     */
    private giveUpFailingDial(exceptPeerId: string) {
        const failures = new Map(this.dht?.connectionFailures().map((failure) => [failure.peerId, failure]));
        for (const [peerId, dial] of this.dials) {
            const failure = failures.get(peerId);
            if (peerId === exceptPeerId || this.connections.has(peerId) || failure === undefined || failure.at < dial.startedAt)
                continue;
            dial.finish(new ConnectError('unreachable', `no connection to ${peerId.slice(0, 16)} (last attempt: ${failure.code}); its place went to`
                + ` ${exceptPeerId.slice(0, 16)} (--max-peers ${this.limits.maxPeers})`));
            return true;
        }
        return false;
    }

    /** Connections held and places kept for `connectTo`s under way, but for `peerId`'s. */
    private heldExcept(peerId: string) {
        let held = this.connections.size - (this.connections.has(peerId) ? 1 : 0);
        for (const dialed of this.dials.keys())
            if (dialed !== peerId && !this.connections.has(dialed))
                held++;
        return held;
    }

    /** Connections that may be closed to make room: ready, not in use, past their grace period, not a `--relay-through` relay. */
    private evictionCandidates(exceptPeerId: string): EvictionCandidate[] {
        const now = Date.now();
        const relays = this.relaysInUse();
        return [...this.connections.values()].flatMap((connection) => {
            const state = connection.state;
            if (state === undefined || !connection.ready || connection.peerId === exceptPeerId || connection.origin.kind === 'relay-through'
                || now - connection.openedAt < this.timings.newConnectionGraceMs || this.isInUse(connection, relays))
                return [];
            return [{peerId: connection.peerId, origin: connection.origin, capabilities: state.capabilities, rttMs: state.rtt.smoothedMs ?? null,
                requestsSucceeded: state.requestsSucceeded, idleMs: state.idleMs(now)}];
        });
    }

    /** Something runs over it, this node's connections to others go through its relay, a `connectTo` awaits it, or it is a `--relay-through` relay. */
    private isInUse(connection: PeerConnection, relaysInUse: ReadonlySet<string>) {
        return connection.origin.kind === 'relay-through' || relaysInUse.has(connection.peerId) || this.dials.has(connection.peerId)
            || (connection.state?.inUse ?? false);
    }

    /** The peers whose relays carry this node's connections to others. */
    private relaysInUse(): Set<string> {
        const byKey = new Map<string, string>();
        for (const peer of this.peers())
            if (peer.capabilities.relay)
                byKey.set(peer.capabilities.relay.key, peer.id);
        const relays = new Set<string>();
        if (byKey.size === 0 || this.dht === undefined)
            return relays;
        for (const connection of this.connections.values()) {
            const relayKey = this.dht.relayKeyOf(connection.stream);
            const relay = relayKey === null ? undefined : byKey.get(relayKey);
            // The relay node's own connection comes from the relay's address too, and is direct.
            if (relay !== undefined && relay !== connection.peerId)
                relays.add(relay);
        }
        return relays;
    }

    async start() {
        const {identity, bootstrap} = this.options;
        this.dht = new SwarmDHT({
            ...(bootstrap && {bootstrap}),
            ...loopbackTestnetOptions(bootstrap),
            pickRelay: (target) => pickRelay(this.relayCandidates(), target),
            onConnectFailed: (failure) => this.emit('connectAttemptFailed', failure)
        });
        this.swarm = new Hyperswarm({
            keyPair: {publicKey: identity.publicKey, secretKey: identity.secretKey},
            dht: this.dht,
            // Hyperswarm stops dialing the topic's peers short of the limit; connections from peers are held to it in accept().
            maxPeers: hyperswarmMaxPeers(topicDialTarget(this.limits.maxPeers), this.relayOptions.through.length),
            // Asked for incoming connections too (a random NAT relays both ways); outgoing ones are decided again
            // per peer by SwarmDHT.connect.
            relayThrough: (force) => {
                const relay = wantsRelay({forced: force === true, randomized: this.dht!.randomized, failedBefore: false})
                    ? pickRelay(this.relayCandidates(), '')
                    : null;
                return relay === null ? null : Buffer.from(relay.relayKey, 'hex');
            },
            // Banned peers are refused before the Noise handshake completes.
            firewall: (remotePublicKey) => this.bans.isBanned(remotePublicKey.toString('hex'))
        });
        this.swarm.on('connection', (stream) => this.accept(stream));
        for (const event of ['persistent', 'network-update', 'nat-update'])
            this.dht.on(event, () => this.updateRelayOffer());
        for (const relay of this.relayOptions.through)
            this.swarm.joinPeer(Buffer.from(relay, 'hex'));
        this.discovery = this.swarm.join(networkTopic(this.options.network), {server: true, client: true});
        for (const topic of this.announced.values())
            this.swarm.join(topic, {server: true, client: false});
        await this.discovery.flushed();
        // Announced: look up again so peers that joined at the same instant find each other (docs/architecture.md, "Swarm").
        // (refresh() without options: options would change the session's client/server mode.)
        this.refreshDiscovery();
        this.timers.push(setInterval(() => this.tick(), this.timings.pingIntervalMs));
        this.timers.push(setInterval(() => this.refreshDiscovery(), this.timings.discoveryRefreshMs));
        for (const delay of this.timings.earlyRefreshesMs)
            this.timers.push(setTimeout(() => this.refreshDiscovery(), delay));
        for (const timer of this.timers)
            timer.unref();
        this.alone = {since: Date.now(), warned: false};
        this.updateRelayOffer();
        this.announceServing(this.currentCapabilities());
    }

    private relayCandidates(): RelayCandidate[] {
        return this.peers().flatMap((peer) => peer.capabilities.relay ? [{
            nodeId: peer.id,
            relayKey: peer.capabilities.relay.key,
            explicit: this.relayOptions.through.includes(peer.id),
            rttMs: peer.rtt.smoothedMs ?? null
        }] : []);
    }

    /** Starts offering to relay when the mode and the DHT's view of this node allow it, and stops past the cap. */
    private updateRelayOffer() {
        const nat = this.natStatus();
        if (nat === null || this.swarm === undefined)
            return;
        const offering = offersRelay(this.relayOptions.mode, nat.reachable, this.relayServer?.overCap ?? false);
        if (offering && this.relayServer === undefined) {
            const server = new RelayServer({dht: this.dht!, keyPair: this.relayKeys,
                ...(this.relayOptions.maxMbps !== undefined && {maxMbps: this.relayOptions.maxMbps})});
            this.relayServer = server;
            server.on('capped', () => this.updateRelayOffer());
            // Announced once it listens: a peer that tries it earlier would fail its attempt.
            server.start().then(() => this.updateRelayOffer(), () => {
                if (this.relayServer === server)
                    this.relayServer = undefined;
            });
            return;
        }
        if (offering && this.relayServer?.listening !== true)
            return;
        if (offering !== this.offeringRelay) {
            this.offeringRelay = offering;
            this.emit('relayOffer', offering);
            this.capabilitiesChanged();
        }
    }

    /** What this node announces: the node's capabilities and, in the swarm's hands, its relay. */
    private currentCapabilities(): Capabilities {
        return {...this.options.capabilities(), relay: this.offeringRelay ? {key: this.relayKeys.publicKey.toString('hex')} : null};
    }

    /**
     * Sends our capabilities to every peer if they changed, at most once per interval; a change of what this node
     * can serve now (a model loaded or unloaded) goes at once, so peers do not turn requests away meanwhile.
     */
    capabilitiesChanged() {
        const capabilities = this.currentCapabilities();
        this.announceServing(capabilities);
        const serialized = JSON.stringify(capabilities);
        if (serialized === this.lastCapabilities)
            return;
        const serving = servingOf(capabilities);
        const servingChanged = serving !== this.lastServing;
        if (this.capabilityTimer !== undefined && !servingChanged)
            return;
        const wait = this.lastCapabilitySentAt + this.timings.capabilityUpdateMinIntervalMs - Date.now();
        if (wait > 0 && !servingChanged) {
            this.capabilityTimer = setTimeout(() => {
                this.capabilityTimer = undefined;
                this.capabilitiesChanged();
            }, wait);
            return;
        }
        clearTimeout(this.capabilityTimer);
        this.capabilityTimer = undefined;
        this.lastCapabilities = serialized;
        this.lastServing = serving;
        this.lastCapabilitySentAt = Date.now();
        for (const connection of this.connections.values())
            connection.sendCapabilities(capabilities);
    }

    /**
     * Keeps this node announced on the DHT topics of what it serves: each hashed model it has loaded (whole, or as a
     * pipeline's coordinator) and, while it offers room for layers, the hosts topic (docs/architecture.md, "Finding
     * providers and hosts").
     */
    private announceServing(capabilities: Capabilities) {
        if (this.stopped)
            return;
        const serving = new Set(capabilities.models.flatMap((offer) => offer.loaded && offer.sha256 !== null ? [offer.sha256] : []));
        if ((capabilities.shardHost?.freeBytes ?? 0) > 0)
            serving.add(HOSTS);
        for (const [what, topic] of this.announced)
            if (!serving.has(what)) {
                this.announced.delete(what);
                void this.swarm?.leave(topic).catch(() => undefined);
            }
        for (const what of serving)
            if (!this.announced.has(what)) {
                const topic = what === HOSTS ? hostsTopic(this.options.network) : providerTopic(this.options.network, what);
                this.announced.set(what, topic);
                // Before start(), the topic is joined there.
                this.swarm?.join(topic, {server: true, client: false});
            }
    }

    async stop() {
        this.stopped = true;
        for (const dial of [...this.dials.values()])
            dial.finish(new ConnectError('stopped', 'the node is stopping'));
        for (const timer of this.timers)
            clearTimeout(timer);
        clearTimeout(this.capabilityTimer);
        for (const connection of this.connections.values())
            connection.close({kind: 'local', message: 'node stopping'});
        if (this.swarm === undefined)
            return;
        // The DHT says goodbye in the background past the timeout: nothing waits on it after that.
        const destroyed = Promise.all([this.relayServer?.stop(), this.swarm.destroy()]).catch(() => undefined);
        const waited = new AbortController();
        await Promise.race([destroyed, sleep(this.timings.leaveTimeoutMs, undefined, {ref: false, signal: waited.signal})]);
        waited.abort();
    }

    private hello(stream: NoiseSecretStream): Hello {
        const {network, software, identity} = this.options;
        // lastCapabilities stays what the peers connected before were sent: an update held back by the interval
        // still goes to them (the new peer may get it twice, which is harmless).
        const capabilities = this.currentCapabilities();
        return {
            protocol: PROTOCOL_VERSION,
            software,
            network: network.name,
            proof: network.secret === undefined ? null : secretProof(network.secret, stream.handshakeHash, identity.publicKey).toString('hex'),
            capabilities
        };
    }

    private accept(stream: NoiseSecretStream) {
        const peerId = stream.remotePublicKey.toString('hex');
        if (this.bans.isBanned(peerId)) {
            stream.destroy();
            return;
        }
        // Hyperswarm keeps one connection per peer; a newer one replaces the old, and takes over its origin and uses.
        const replaced = this.connections.get(peerId);
        replaced?.close({kind: 'local', message: 'replaced by a newer connection'});
        stream.on('error', () => undefined); // PeerConnection reports errors; this keeps a reset from crashing the process
        const dial = this.dials.get(peerId);
        const origin: ConnectionOrigin = dial !== undefined ? {kind: 'on-demand', why: dial.why}
            : this.relayOptions.through.includes(peerId) ? {kind: 'relay-through'} : replaced?.origin ?? {kind: 'network'};
        // Peers connect to this node whatever its count (Hyperswarm limits only its own dials): held to the limit here.
        const refusal = this.makeRoom(peerId);
        if (refusal !== undefined && origin.kind !== 'relay-through') {
            stream.destroy();
            dial?.finish(new ConnectError('peer_limit', refusal));
            this.emit('connectionRefused', peerId, refusal);
            return;
        }
        const connection = new PeerConnection(stream, {
            network: this.options.network,
            expectProof: this.options.network.secret !== undefined,
            hello: () => this.hello(stream),
            helloTimeoutMs: this.timings.helloTimeoutMs,
            origin
        });
        this.connections.set(peerId, connection);
        connection.on('ready', () => {
            if (replaced?.state !== undefined)
                connection.state!.adoptUses(replaced.state);
            for (const protocol of this.protocols)
                protocol.attach(connection);
            this.alone.warned = false;
            this.dials.get(peerId)?.finish(connection.state!);
            this.emit('peerJoined', connection.state!);
        });
        connection.on('capabilities', () => this.emit('capabilities', connection.state!));
        connection.on('closed', (reason) => {
            if (this.connections.get(peerId) === connection)
                this.connections.delete(peerId);
            if (reason.kind === 'violation') {
                const record = this.bans.ban(peerId, reason.message);
                this.dials.get(peerId)?.finish(new ConnectError('banned', `peer ${peerId.slice(0, 16)} is banned: ${reason.message}`));
                this.emit('peerBanned', peerId, reason.message, record.until);
            } else if (reason.kind === 'incompatible') {
                this.emit('peerIncompatible', peerId, reason.message);
            }
            if (connection.state !== undefined) {
                if (this.peers().length === 0)
                    this.alone = {since: Date.now(), warned: false};
                this.emit('peerLeft', peerId, reason);
            }
            else
                this.emit('connectionFailed', peerId, reason);
        });
    }

    private refreshDiscovery() {
        this.discovery?.refresh().catch(() => undefined);
    }

    private tick() {
        const now = Date.now();
        this.updateRelayOffer();
        if (this.peers().length === 0 && !this.alone.warned && now - this.alone.since >= this.timings.isolationWarningMs) {
            this.alone.warned = true;
            this.emit('isolated', this.natStatus()!, this.connectionFailures());
        }
        for (const connection of this.connections.values()) {
            if (connection.state !== undefined && now - connection.state.lastSeenAt > this.timings.peerSilenceTimeoutMs)
                connection.close({kind: 'network', message: `silent for ${this.timings.peerSilenceTimeoutMs / 1000} s`});
            else
                connection.ping();
        }
        this.closeIdle(now);
    }

    /**
     * Closes the on-demand connections nothing has run over for `--idle-peer-timeout`. The network topic's stay: they
     * are the node's neighbours, bounded by `--max-peers`, and Hyperswarm would dial the topic again for each one closed.
     */
    private closeIdle(now: number) {
        const {idleTimeoutMs} = this.limits;
        if (idleTimeoutMs === 0)
            return;
        const relays = this.relaysInUse();
        for (const connection of this.connections.values())
            if (connection.origin.kind === 'on-demand' && connection.ready && !this.isInUse(connection, relays)
                && connection.state!.idleMs(now) >= idleTimeoutMs)
                connection.close({kind: 'local', message: `idle for ${idleTimeoutMs / 1000} s (--idle-peer-timeout)`});
    }
}

/** The key of the hosts topic among the announced ones (the others are models' hashes, 64 hex digits). */
const HOSTS = 'hosts';

/** What a node can serve now: the models it has loaded and the shards it offers. */
function servingOf(capabilities: Capabilities) {
    return JSON.stringify([capabilities.models.filter((model) => model.loaded).map((model) => model.id).sort(), capabilities.shards]);
}
