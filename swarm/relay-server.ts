import {createHash} from 'node:crypto';
import {EventEmitter} from 'node:events';
import {Server as BlindRelayServer} from 'blind-relay';
import HyperDHT, {type HyperDHTServer, type KeyPair, type RawStream} from 'hyperdht';
import {RelayMeter} from './relay-policy.js';

export interface RelayServerOptions {
    dht: HyperDHT,
    keyPair: KeyPair,
    /** Relayed traffic above which no new relay client is accepted (megabits per second); defaults to no cap. */
    maxMbps?: number,
    /** How often the relayed rate is measured; defaults to 1 s. */
    meterIntervalMs?: number,
    /** The window the rate is averaged over; defaults to 10 s. */
    meterWindowMs?: number
}

export const relayServerDefaults = {
    meterIntervalMs: 1_000,
    meterWindowMs: 10_000
};

export interface RelayServerEvents {
    /** The relayed rate went over the cap (true) or back under it (false). */
    capped: [capped: boolean]
}

/** The key a node's relay listens on: derived from its identity, so it is the same at every start. */
export function relayKeyPair(identitySecretKey: Buffer): KeyPair {
    return HyperDHT.keyPair(createHash('sha256').update('strongdoge/relay').update(identitySecretKey).digest());
}

/**
 * A blind relay (hyperdht's `relayThrough`) for peers that cannot reach each other directly: it forwards their
 * packets natively and sees only ciphertext (docs/architecture.md, "Relays").
 */
export class RelayServer extends EventEmitter<RelayServerEvents> {
    private readonly relay: BlindRelayServer;
    private readonly streams = new Set<RawStream>();
    private readonly meter: RelayMeter;
    private server: HyperDHTServer | undefined;
    private timer: NodeJS.Timeout | undefined;
    private closedStreamBytes = 0;
    private rateMbps = 0;
    private capped = false;
    private clients = 0;
    private started = false;

    constructor(private readonly options: RelayServerOptions) {
        super();
        const {dht, meterWindowMs} = {...relayServerDefaults, ...options};
        this.meter = new RelayMeter(meterWindowMs);
        this.relay = new BlindRelayServer({
            createStream: (streamOptions) => {
                // Framed as hyperdht's own relayed streams are.
                const stream = dht.createRawStream({...streamOptions, framed: true});
                this.streams.add(stream);
                stream.once('close', () => {
                    this.streams.delete(stream);
                    this.closedStreamBytes += stream.bytesReceived;
                });
                return stream;
            }
        });
    }

    get publicKey() {
        return this.options.keyPair.publicKey;
    }

    get listening() {
        return this.started;
    }

    get overCap() {
        return this.capped;
    }

    async start() {
        const {dht, keyPair, meterIntervalMs} = {...relayServerDefaults, ...this.options};
        // Over the cap, new clients are refused before the handshake; pairs already relayed go on.
        // A relay is reached at its public address: its LAN addresses would only send clients on a detour.
        this.server = dht.createServer({firewall: () => this.capped, shareLocalAddress: false}, (socket) => {
            this.clients++;
            socket.on('error', () => undefined);
            socket.once('close', () => this.clients--);
            this.relay.accept(socket, {id: socket.remotePublicKey}).on('error', () => undefined);
        });
        await this.server.listen(keyPair);
        this.started = true;
        this.timer = setInterval(() => this.measure(), meterIntervalMs).unref();
    }

    /** Bytes this relay has forwarded since it started. */
    get bytesRelayed() {
        let bytes = this.closedStreamBytes;
        for (const stream of this.streams)
            bytes += stream.bytesReceived;
        return bytes;
    }

    stats() {
        return {
            clients: this.clients,
            pairs: this.relay.stats.pairings.active,
            bytesRelayed: this.bytesRelayed,
            mbps: this.rateMbps,
            maxMbps: this.options.maxMbps ?? null
        };
    }

    async stop() {
        clearInterval(this.timer);
        // Ending the sessions waits for their pairs; the DHT's own teardown closes what is left.
        this.relay.close().catch(() => undefined);
        await this.server?.close().catch(() => undefined);
    }

    private measure() {
        this.rateMbps = this.meter.sample(this.bytesRelayed, Date.now());
        const capped = this.options.maxMbps !== undefined && this.rateMbps > this.options.maxMbps;
        if (capped !== this.capped) {
            this.capped = capped;
            this.emit('capped', capped);
        }
    }
}
