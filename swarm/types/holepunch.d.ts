/** Holepunch modules ship no TypeScript types: the parts strongdoge uses. */

declare module 'hypercore-crypto' {
    export function keyPair(seed?: Buffer): {publicKey: Buffer, secretKey: Buffer};
    export function randomBytes(size: number): Buffer;
    export function sign(message: Buffer, secretKey: Buffer): Buffer;
    export function verify(message: Buffer, signature: Buffer, publicKey: Buffer): boolean;
    const crypto: {keyPair: typeof keyPair, randomBytes: typeof randomBytes, sign: typeof sign, verify: typeof verify};
    export default crypto;
}

declare module 'z32' {
    export function encode(buffer: Uint8Array): string;
    export function decode(text: string): Buffer;
    const z32: {encode: typeof encode, decode: typeof decode};
    export default z32;
}

declare module 'protomux' {
    import type {Duplex} from 'node:stream';
    import type {Encoder} from 'compact-encoding';

    export interface ProtomuxMessage<T> {
        send(value: T): boolean
    }

    export interface ProtomuxChannel {
        readonly opened: boolean,
        readonly closed: boolean,
        open(handshake?: unknown): void,
        close(): void,
        addMessage<T>(options: {encoding: Encoder<T>, onmessage?: (message: T) => void | Promise<void>}): ProtomuxMessage<T>
    }

    export default class Protomux {
        static from(stream: Duplex): Protomux;
        createChannel(options: {
            protocol: string,
            id?: Buffer | null,
            handshake?: Encoder<unknown>,
            unique?: boolean,
            onopen?: (handshake: unknown) => void | Promise<void>,
            onclose?: () => void | Promise<void>,
            /** The connection's write buffer emptied after a send returned false. */
            ondrain?: () => void
        }): ProtomuxChannel | null;
        pair(options: {protocol: string, id?: Buffer | null}, callback: (id: Buffer | null) => void): void;
        unpair(options: {protocol: string, id?: Buffer | null}): void;
    }
}

declare module 'hyperswarm' {
    import {EventEmitter} from 'node:events';
    import type {Duplex} from 'node:stream';

    export interface NoiseSecretStream extends Duplex {
        remotePublicKey: Buffer,
        publicKey: Buffer,
        handshakeHash: Buffer,
        isInitiator: boolean,
        rawStream?: {remoteHost?: string, remotePort?: number} | null,
        /** streamx's write state: bytes written but not yet passed on to the network. */
        readonly _writableState: {buffered: number}
    }

    export interface PeerInfo {
        publicKey: Buffer,
        topics: Buffer[],
        ban(banStatus?: boolean): void
    }

    export interface PeerDiscovery {
        flushed(): Promise<void>,
        refresh(options?: {client?: boolean, server?: boolean}): Promise<void>,
        destroy(): Promise<void>
    }

    export default class Hyperswarm extends EventEmitter {
        constructor(options?: {
            keyPair?: {publicKey: Buffer, secretKey: Buffer},
            bootstrap?: {host: string, port: number}[] | string[],
            maxPeers?: number,
            firewall?: (remotePublicKey: Buffer) => boolean,
            dht?: import('hyperdht').default,
            /** Called with `force` after a punch failure hyperswarm knows, and without for incoming connections. */
            relayThrough?: (force?: boolean) => Buffer | null
        });
        readonly keyPair: {publicKey: Buffer, secretKey: Buffer};
        readonly connections: Set<NoiseSecretStream>;
        readonly connecting: number;
        readonly dht: {destroyed: boolean};
        join(topic: Buffer, options?: {server?: boolean, client?: boolean}): PeerDiscovery;
        leave(topic: Buffer): Promise<void>;
        joinPeer(publicKey: Buffer): void;
        leavePeer(publicKey: Buffer): void;
        flush(): Promise<void>;
        listen(): Promise<void>;
        destroy(): Promise<void>;
        on(event: 'connection', listener: (connection: NoiseSecretStream, peerInfo: PeerInfo) => void): this;
        on(event: string, listener: (...args: unknown[]) => void): this;
    }
}

declare module 'hyperdht/testnet.js' {
    export interface Testnet {
        bootstrap: {host: string, port: number}[],
        nodes: unknown[],
        destroy(): Promise<void>
    }
    export default function createTestnet(size?: number, options?: {host?: string, port?: number, teardown?: unknown}): Promise<Testnet>;
}

declare module 'hyperdht' {
    import {EventEmitter} from 'node:events';
    import type {NoiseSecretStream} from 'hyperswarm';

    export interface KeyPair {publicKey: Buffer, secretKey: Buffer}

    export interface ConnectOptions {
        keyPair?: KeyPair,
        relayAddresses?: unknown,
        /** A blind relay's public key: the connection goes through it. */
        relayThrough?: Buffer | null
    }

    export interface HyperDHTServer extends EventEmitter {
        listen(keyPair: KeyPair): Promise<void>;
        close(): Promise<void>;
    }

    /** A UDX stream (udx-native), as blind-relay creates them. */
    export interface RawStream extends EventEmitter {
        readonly bytesReceived: number,
        readonly bytesTransmitted: number
    }

    /** A dht-rpc query: a readable stream of the answers, one per DHT node asked. */
    export interface LookupQuery extends AsyncIterable<{peers: {publicKey: Buffer}[]}> {
        destroy(error?: Error): void
    }

    export default class HyperDHT extends EventEmitter {
        constructor(options?: {bootstrap?: {host: string, port: number}[], firewalled?: boolean, port?: number, host?: string, keyPair?: KeyPair});
        static keyPair(seed?: Buffer): KeyPair;
        /** Whether the DHT found this node unreachable from outside (a NAT or firewall in the way). */
        readonly firewalled: boolean;
        /** Whether this node's NAT maps each destination to a different port (a "symmetric" NAT). */
        readonly randomized: boolean;
        /** This node's address as the DHT sees it; null / 0 until sampled. */
        readonly host: string | null;
        readonly port: number;
        readonly destroyed: boolean;
        fullyBootstrapped(): Promise<void>;
        connect(publicKey: Buffer, options?: ConnectOptions): NoiseSecretStream;
        /** The peers announced on a topic, as the DHT nodes closest to it answer (each up to 20 of them). */
        lookup(topic: Buffer): LookupQuery;
        createServer(options: {firewall?: (remotePublicKey: Buffer) => boolean, shareLocalAddress?: boolean}, onconnection: (socket: NoiseSecretStream) => void): HyperDHTServer;
        createRawStream(options?: object): RawStream;
        destroy(): Promise<void>;
    }
}

declare module 'blind-relay' {
    import {EventEmitter} from 'node:events';
    import type {Duplex} from 'node:stream';
    import type {RawStream} from 'hyperdht';

    export class Server extends EventEmitter {
        constructor(options: {createStream: (options: object) => RawStream});
        readonly stats: {sessions: {accepted: number, opened: number, closed: number}, pairings: {active: number, matched: number}};
        accept(stream: Duplex, options: {id: Buffer}): EventEmitter;
        close(): Promise<void>;
    }
}
