import c from 'compact-encoding';
import crypto from 'hypercore-crypto';
import type {ProtomuxMessage} from 'protomux';
import type {SigningDomain} from '../ledger/signing-domain.js';
import type {LayerFetch} from '../inference/sharded/tunnel/layer-fetch-messages.js';
import {SHARD_PROTOCOL, shardControlSchema, type ShardControl} from '../inference/sharded/tunnel/shard-messages.js';
import type {SessionRequest} from '../inference/sharded/tunnel/shard-protocol.js';
import {signSessionRequest} from '../inference/sharded/tunnel/session-request.js';
import type {PeerConnection} from '../swarm/peer-connection.js';
import type {PeerProtocol} from '../swarm/peer-protocol.js';
import {waitFor} from './cli-process.js';

/**
 * A peer that speaks the shard channel (docs/peer-protocol.md, "Shard channel") by hand, all four of its messages in
 * wire order: it can send any frame, well-formed or not, that an honest `ShardProtocol` never would. Its node must
 * use `keyPair`: the session requests it signs name it as the coordinator.
 */
export class RawShardPeer implements PeerProtocol {
    readonly received: ShardControl[] = [];
    readonly data: Buffer[] = [];
    readonly keyPair = crypto.keyPair();
    private control: ProtomuxMessage<Uint8Array> | undefined;
    private toHost: ProtomuxMessage<Uint8Array> | undefined;
    private fetchMessage: ProtomuxMessage<Uint8Array> | undefined;

    constructor(private readonly domain: SigningDomain) {}

    get id() {
        return this.keyPair.publicKey.toString('hex');
    }

    attach(peer: PeerConnection) {
        const channel = peer.mux.createChannel({protocol: SHARD_PROTOCOL})!;
        this.control = channel.addMessage({encoding: c.raw, onmessage: (frame) => {
            this.received.push(shardControlSchema.parse(JSON.parse(Buffer.from(frame).toString())));
        }});
        this.toHost = channel.addMessage({encoding: c.raw});
        channel.addMessage({encoding: c.raw, onmessage: (frame) => {
            this.data.push(Buffer.from(frame));
        }});
        this.fetchMessage = channel.addMessage({encoding: c.raw});
        channel.open();
    }

    /** Resolves once the channel is attached (the peer's hello passed). */
    attached() {
        return waitFor(() => this.control !== undefined, 10_000, 20);
    }

    send(message: ShardControl) {
        this.control!.send(Buffer.from(JSON.stringify(message)));
    }

    sendData(frame: Uint8Array) {
        this.toHost!.send(frame);
    }

    /** A `fetch` frame as given: its ids are whatever the caller chose. */
    sendFetch(message: LayerFetch) {
        this.fetchMessage!.send(Buffer.from(JSON.stringify(message)));
    }

    /** Opens session `session` on `host` with a request signed as an honest coordinator signs it. */
    open(session: number, host: string, {model, layers, layerCount, sequences, bytes}: SessionRequest) {
        const body = {version: 1 as const, ...this.domain, session: crypto.randomBytes(32).toString('hex'), coordinator: this.id,
            host, model, layers, layerCount, sequences, bytes, openedAt: new Date().toISOString()};
        this.send({type: 'open', session, request: signSessionRequest(body, this.keyPair.secretKey)});
    }

    /** The first frame received that `match` accepts, waiting for it up to `timeoutMs`. */
    async next<T extends ShardControl>(match: (message: ShardControl) => message is T, timeoutMs = 10_000): Promise<T> {
        await waitFor(() => this.received.some(match), timeoutMs, 20);
        return this.received.find(match)!;
    }

    /** The `fetched` frame answering fetch `id`. */
    fetched(id: number, timeoutMs?: number) {
        return this.next((message): message is Extract<ShardControl, {type: 'fetched'}> => message.type === 'fetched' && message.fetch === id, timeoutMs);
    }
}
