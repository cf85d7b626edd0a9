import {pickRandom} from '../../core/random-pick.js';
import {withDefaults} from '../../core/with-defaults.js';
import {BoundedChannel} from '../channel/bounded-channel.js';
import type {PeerConnection} from '../peer-connection.js';
import type {PeerProtocol} from '../peer-protocol.js';
import {MODEL_GOSSIP_CHANNEL, type GossipFrame} from './gossip-messages.js';
import {ModelGossip, type GossipModelView, type LocalModel, type ModelGossipOptions} from './model-gossip.js';

export interface ModelGossipProtocolOptions {
    /** This node's id (hex public key). */
    selfId: string,
    /** The models this node serves, hashed (`localModelsFromOffers`): read before each round; defaults to none. */
    localModels: () => readonly LocalModel[],
    /** A round's length: one frame to `fanout` peers; defaults to 5 s. */
    intervalMs: number,
    /** Each round is this share longer or shorter at random, so nodes do not push in step; defaults to 0.2. */
    jitter: number,
    /** Peers a round's frame goes to, at random among the connected; defaults to 2. */
    fanout: number,
    /** The table's bounds and TTL; each defaults to `modelGossipDefaults`. */
    gossip: Partial<Omit<ModelGossipOptions, 'selfId'>>
}

export const modelGossipProtocolDefaults = {
    localModels: (): readonly LocalModel[] => [],
    intervalMs: 5_000,
    jitter: 0.2,
    fanout: 2,
    gossip: {}
};

/** Frames and bytes of gossip, each way, since the protocol started. */
export interface ModelGossipStats {
    framesSent: number,
    bytesSent: number,
    framesReceived: number,
    bytesReceived: number
}

type GossipChannel = BoundedChannel<typeof MODEL_GOSSIP_CHANNEL>;

/**
 * The network model table's gossip on every peer connection (docs/peer-protocol.md, "Model gossip channel"): each
 * round this node pushes one frame of its `ModelGossip` table to a few random peers, and one to each peer as its
 * channel opens; what peers push is merged. A frame the channel's schema refuses, or a flood, closes the connection
 * as a violation before anything is merged.
 */
export class ModelGossipProtocol implements PeerProtocol {
    readonly gossip: ModelGossip;
    private readonly options: ModelGossipProtocolOptions;
    /** Channels open on both sides, by peer id. */
    private readonly open = new Map<string, GossipChannel>();
    private readonly counters: ModelGossipStats = {framesSent: 0, bytesSent: 0, framesReceived: 0, bytesReceived: 0};
    private timer: NodeJS.Timeout | undefined;
    private disposed = false;

    constructor(options: Partial<ModelGossipProtocolOptions> & {selfId: string}) {
        this.options = withDefaults(modelGossipProtocolDefaults, options);
        const {intervalMs, jitter, fanout, selfId} = this.options;
        if (!(jitter >= 0 && jitter < 1) || !(fanout >= 1))
            throw new Error('ModelGossipProtocol: jitter in [0, 1) and a fan-out of at least 1');
        // A peer with no more neighbours than the fan-out gets every round's frame: the shortest round must stay
        // within the rate every receiver holds the channel to, or honest nodes would ban each other.
        const shortestRoundMs = intervalMs * (1 - jitter);
        if (!(shortestRoundMs >= 1_000 / MODEL_GOSSIP_CHANNEL.rates.frames.perSecond))
            throw new Error(`ModelGossipProtocol: a round as short as ${shortestRoundMs} ms would flood peers (${MODEL_GOSSIP_CHANNEL.rates.frames.perSecond} frame/s)`);
        this.gossip = new ModelGossip({...this.options.gossip, selfId});
        this.refreshLocal();
        this.schedule();
    }

    attach(peer: PeerConnection) {
        if (this.disposed)
            return;
        const {peerId} = peer;
        const channel: GossipChannel = new BoundedChannel(peer, MODEL_GOSSIP_CHANNEL, {
            messages: {models: (frame, bytes) => this.receive(frame, bytes, peerId)},
            onclose: () => {
                if (this.open.get(peerId) === channel)
                    this.open.delete(peerId);
            }
        });
        void channel.opened.then((opened) => {
            if (!opened || channel.closed || this.disposed)
                return;
            this.open.set(peerId, channel);
            // a new neighbour hears the table at once rather than at some peer's next round
            this.refreshLocal();
            this.send([channel], this.gossip.frame());
        });
    }

    /** The table: this node's models and what peers told of theirs and others'. */
    entries(): GossipModelView[] {
        this.refreshLocal();
        return this.gossip.entries();
    }

    stats(): ModelGossipStats {
        return {...this.counters};
    }

    /** Stops the rounds; channels close with their connections. */
    dispose() {
        this.disposed = true;
        clearTimeout(this.timer);
        this.timer = undefined;
    }

    private receive(frame: GossipFrame, bytes: Uint8Array, peerId: string) {
        this.counters.framesReceived++;
        this.counters.bytesReceived += bytes.byteLength;
        // checked by the channel against gossipFrameSchema; peerId is the connection's proven key
        this.gossip.mergeChecked(frame, peerId);
    }

    private schedule() {
        if (this.disposed)
            return;
        const {intervalMs, jitter} = this.options;
        this.timer = setTimeout(() => {
            this.round();
            this.schedule();
        }, intervalMs * (1 - jitter + 2 * jitter * Math.random()));
        this.timer.unref();
    }

    private round() {
        const channels = [...this.open.values()].filter((channel) => !channel.closed);
        if (channels.length === 0)
            return;
        this.refreshLocal();
        this.send(pickRandom(channels, this.options.fanout), this.gossip.frame());
    }

    private send(channels: readonly GossipChannel[], frame: GossipFrame) {
        const bytes = Buffer.byteLength(JSON.stringify(frame));
        for (const channel of channels) {
            // false with the channel still open means buffered: it goes out
            if (!channel.send('models', frame) && channel.closed)
                continue;
            this.counters.framesSent++;
            this.counters.bytesSent += bytes;
        }
    }

    private refreshLocal() {
        this.gossip.setLocalModels(this.options.localModels());
    }
}
