import {EventEmitter} from 'node:events';
import {setTimeout as sleep} from 'node:timers/promises';
import Hyperswarm, {type NoiseSecretStream, type PeerDiscovery} from 'hyperswarm';
import {BanList, type BanListOptions} from './ban-list.js';
import type {Capabilities} from './capabilities.js';
import {loopbackTestnetOptions} from './loopback.js';
import {networkTopic, secretProof, type NetworkSpec} from './network-topic.js';
import type {NodeIdentity} from './node-identity.js';
import type {CloseReason} from './channel/errors.js';
import {PeerConnection} from './peer-connection.js';
import type {PeerProtocol} from './peer-protocol.js';
import type {PeerState} from './peer-state.js';
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
    isolationWarningMs: number
}

export const swarmTimingDefaults: SwarmTimings = {
    pingIntervalMs: 5_000,
    peerSilenceTimeoutMs: 30_000,
    helloTimeoutMs: 5_000,
    capabilityUpdateMinIntervalMs: 2_000,
    discoveryRefreshMs: 30_000,
    earlyRefreshesMs: [1_000, 3_000, 7_000, 15_000],
    leaveTimeoutMs: 1_000,
    isolationWarningMs: 60_000
};

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
    relay?: Partial<SwarmRelayOptions>
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
    relayOffer: [offering: boolean]
}

/** This node in the swarm: joins its network's topic, keeps one control connection per peer, bans misbehaviour. */
export class SwarmNode extends EventEmitter<SwarmNodeEvents> {
    readonly bans: BanList;
    private readonly timings: SwarmTimings;
    private readonly relayOptions: SwarmRelayOptions;
    private readonly relayKeys;
    private relayServer: RelayServer | undefined;
    private offeringRelay = false;
    private dht: SwarmDHT | undefined;
    private alone = {since: Date.now(), warned: false};
    private readonly connections = new Map<string, PeerConnection>();
    private readonly protocols: PeerProtocol[] = [];
    private swarm: Hyperswarm | undefined;
    private discovery: PeerDiscovery | undefined;
    private timers: NodeJS.Timeout[] = [];
    private lastCapabilities = '';
    /** The models and shards the last capabilities sent could serve (servingOf). */
    private lastServing = '';
    private capabilityTimer: NodeJS.Timeout | undefined;
    private lastCapabilitySentAt = 0;

    constructor(private readonly options: SwarmNodeOptions) {
        super();
        this.timings = {...swarmTimingDefaults, ...options.timings};
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

    async stop() {
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
        // Hyperswarm keeps one connection per peer; a newer one replaces the old.
        this.connections.get(peerId)?.close({kind: 'local', message: 'replaced by a newer connection'});
        stream.on('error', () => undefined); // PeerConnection reports errors; this keeps a reset from crashing the process
        const connection = new PeerConnection(stream, {
            network: this.options.network,
            expectProof: this.options.network.secret !== undefined,
            hello: () => this.hello(stream),
            helloTimeoutMs: this.timings.helloTimeoutMs
        });
        this.connections.set(peerId, connection);
        connection.on('ready', () => {
            for (const protocol of this.protocols)
                protocol.attach(connection);
            this.alone.warned = false;
            this.emit('peerJoined', connection.state!);
        });
        connection.on('capabilities', () => this.emit('capabilities', connection.state!));
        connection.on('closed', (reason) => {
            if (this.connections.get(peerId) === connection)
                this.connections.delete(peerId);
            if (reason.kind === 'violation') {
                const record = this.bans.ban(peerId, reason.message);
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
    }
}

/** What a node can serve now: the models it has loaded and the shards it offers. */
function servingOf(capabilities: Capabilities) {
    return JSON.stringify([capabilities.models.filter((model) => model.loaded).map((model) => model.id).sort(), capabilities.shards]);
}
