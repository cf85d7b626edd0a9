import HyperDHT, {type ConnectOptions, type KeyPair} from 'hyperdht';
import type {NoiseSecretStream} from 'hyperswarm';
import {LRUCache} from 'lru-cache';
import {wantsRelay, type RelayCandidate} from './relay-policy.js';

/** Connection attempts remembered for peers that are not connected, for `/api/peers`. */
const MAX_REMEMBERED_FAILURES = 256;

export interface ConnectionFailure {
    peerId: string,
    /** HyperDHT's error code, e.g. HOLEPUNCH_ABORTED; `UNKNOWN` when it gave none. */
    code: string,
    message: string,
    /** The relay the attempt went through (its node id), or null for a direct attempt. */
    relay: string | null,
    attempts: number,
    at: number
}


export interface SwarmDHTOptions {
    bootstrap?: {host: string, port: number}[],
    /** Set on a loopback testnet, where the DHT's NAT detection would wrongly find every node firewalled. */
    firewalled?: boolean,
    /** The relay for a connection to `target` (a node id), or null when none is known. */
    pickRelay: (target: string) => RelayCandidate | null,
    onConnectFailed?: (failure: ConnectionFailure) => void
}

/**
 * The remote host of a stream's UDX transport: for a relayed stream, the relay's. Hosts, not ports: a relay may
 * answer a pair from another of its sockets than the one its clients connected to.
 */
function hostOf(stream: NoiseSecretStream) {
    return stream.rawStream?.remoteHost ?? undefined;
}

/**
 * HyperDHT with eyes on every outgoing connection: why attempts fail (hyperswarm drops the reason), when one goes
 * through a relay, and which peer streams arrive relayed (docs/architecture.md, "Relays").
 */
export class SwarmDHT extends HyperDHT {
    /** By peer id, the last set the newest: `peek` only, so the peer whose attempt failed longest ago is forgotten first. */
    private readonly failures = new LRUCache<string, ConnectionFailure>({max: MAX_REMEMBERED_FAILURES});
    /** The host of each relay socket open → the relay's key, and how many sockets go there. */
    private readonly relayAddresses = new Map<string, {key: string, sockets: number}>();

    constructor(private readonly swarmOptions: SwarmDHTOptions) {
        const {bootstrap, firewalled} = swarmOptions;
        super({...(bootstrap && {bootstrap}), ...(firewalled !== undefined && {firewalled})});
    }

    override connect(publicKey: Buffer, options: ConnectOptions & {keyPair?: KeyPair} = {}): NoiseSecretStream {
        const key = publicKey.toString('hex');
        // Hyperswarm always connects with its key pair; hyperdht opens relay sockets without one, also to relays
        // this node has not heard of (the other side of a pair chose them).
        if (options.keyPair === undefined) {
            const socket = super.connect(publicKey, options);
            socket.once('open', () => {
                const address = hostOf(socket);
                if (address === undefined)
                    return;
                const entry = this.relayAddresses.get(address) ?? {key, sockets: 0};
                entry.sockets++;
                this.relayAddresses.set(address, entry);
                socket.once('close', () => {
                    if (--entry.sockets === 0)
                        this.relayAddresses.delete(address);
                });
            });
            return socket;
        }
        const previous = this.failures.peek(key);
        const relay = wantsRelay({forced: options.relayThrough != null, randomized: this.randomized, failedBefore: previous !== undefined})
            ? this.swarmOptions.pickRelay(key)
            : null;
        const socket = super.connect(publicKey, {...options, relayThrough: relay === null ? null : Buffer.from(relay.relayKey, 'hex')});
        let opened = false;
        socket.once('open', () => {
            opened = true;
            this.failures.delete(key);
        });
        socket.on('error', (error: Error & {code?: string}) => {
            if (opened)
                return;
            const failure = {peerId: key, code: error.code ?? 'UNKNOWN', message: error.message, relay: relay?.nodeId ?? null,
                attempts: (previous?.attempts ?? 0) + 1, at: Date.now()};
            this.failures.set(key, failure);
            this.swarmOptions.onConnectFailed?.(failure);
        });
        return socket;
    }

    /** The key of the relay a peer stream came through, or null if it is direct. */
    relayKeyOf(stream: NoiseSecretStream): string | null {
        const address = hostOf(stream);
        return address === undefined ? null : this.relayAddresses.get(address)?.key ?? null;
    }

    /** The last failed attempt to each peer whose last attempt failed, oldest first. */
    connectionFailures(): ConnectionFailure[] {
        return [...this.failures.rvalues()].filter((failure) => failure !== undefined);
    }
}
