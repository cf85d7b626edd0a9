import {once} from 'node:events';
import test from 'ava';
import c from 'compact-encoding';
import crypto from 'hypercore-crypto';
import type {Testnet} from 'hyperdht/testnet.js';
import type {ProtomuxMessage} from 'protomux';
import type {ModelOffer} from '../swarm/capabilities.js';
import {MODEL_GOSSIP_PROTOCOL, type GossipEntry} from '../swarm/gossip/gossip-messages.js';
import {localModelsFromOffers} from '../swarm/gossip/model-gossip.js';
import {ModelGossipProtocol} from '../swarm/gossip/model-gossip-protocol.js';
import {buildNetworkModelTable} from '../swarm/network-models.js';
import type {PeerConnection} from '../swarm/peer-connection.js';
import type {PeerProtocol} from '../swarm/peer-protocol.js';
import type {SwarmNode} from '../swarm/swarm-node.js';
import {capabilitiesFixture} from '../harness/capabilities-fixture.js';
import {waitFor} from '../harness/cli-process.js';
import {nodeIdentity, startTestnet, testSwarmNode} from '../harness/swarm-fixture.js';

/**
 * The model table's gossip between real swarm nodes on a loopback HyperDHT testnet (docs/peer-protocol.md, "Model
 * gossip channel"): a model reaches nodes its provider is not connected to, leaves every table once the provider is
 * gone, and a peer that gossips nonsense is cut off with nothing merged.
 */

let testnet: Testnet;
const nodes: SwarmNode[] = [];
const protocols: ModelGossipProtocol[] = [];

/** Rounds as short as the channel's rate allows with room (1.2–1.8 s), and a TTL of a few rounds. */
const FAST = {intervalMs: 1_500, gossip: {ttlMs: 8_000}};

const OFFER: ModelOffer = {id: 'gossiped', sha256: 'ab'.repeat(32), sizeBytes: 123_456, quantization: 'Q8_0', layers: 4, layerBytes: [1, 2, 3, 4], loaded: true};

test.before(async () => {
    ({testnet} = await startTestnet());
});

test.after.always(async () => {
    for (const protocol of protocols)
        protocol.dispose();
    await Promise.all(nodes.map((node) => node.stop()));
    await testnet?.destroy();
});

/** A node of `network` offering `offers`, gossiping them as a node does (node/strongdoge-node.ts), or speaking `raw`. */
function gossipNode(network: string, offers: ModelOffer[] = [], raw?: PeerProtocol) {
    const id = nodeIdentity();
    const capabilities = () => capabilitiesFixture({models: offers});
    const node = testSwarmNode(testnet.bootstrap, network, {identity: id, capabilities});
    const gossip = new ModelGossipProtocol({...FAST, selfId: id.id, localModels: () => localModelsFromOffers(capabilities().models)});
    protocols.push(gossip);
    node.use(raw ?? gossip);
    nodes.push(node);
    return {node, gossip};
}

/** The table `/api/network/models` serves at `node`. */
function networkTable({node, gossip}: ReturnType<typeof gossipNode>, offers: ModelOffer[] = []) {
    return buildNetworkModelTable([
        {id: node.id, self: true, capabilities: capabilitiesFixture({models: offers})},
        ...node.peers().map((peer) => ({id: peer.id, self: false, capabilities: peer.capabilities}))
    ], gossip.entries());
}

const peerIds = (node: SwarmNode) => node.peers().map((peer) => peer.id).sort();

test.serial('a model reaches a node its provider is not connected to through a middle node, and leaves every table within the TTL once the provider is gone', async (t) => {
    const a = gossipNode('gossip-line', [OFFER]);
    const b = gossipNode('gossip-line');
    const c = gossipNode('gossip-line');
    // A line, A – B – C: A and C refuse each other as banned peers are refused (Hyperswarm's firewall)
    a.node.bans.ban(c.node.id, 'kept apart by the test');
    c.node.bans.ban(a.node.id, 'kept apart by the test');
    const metAcrossTheLine: string[] = [];
    for (const [node, other] of [[a.node, c.node], [c.node, a.node]] as const)
        node.on('peerJoined', (peer) => {
            if (peer.id === other.id)
                metAcrossTheLine.push(peer.id);
        });
    await Promise.all([a, b, c].map(({node}) => node.start()));
    await waitFor(() => peerIds(b.node).join() === [a.node.id, c.node.id].sort().join(), 20_000, 50);

    await waitFor(() => c.gossip.gossip.has(OFFER.sha256!), 20_000, 50);
    const atC = c.gossip.entries().find((model) => model.sha256 === OFFER.sha256)!;
    t.like(atC, {name: OFFER.id, sizeBytes: OFFER.sizeBytes, layers: OFFER.layers, quantization: OFFER.quantization, local: false, providerCount: 1});
    t.like(atC.providers[0], {id: a.node.id, self: false, direct: false}, 'A is heard of second-hand, through B');
    t.deepEqual(metAcrossTheLine, [], 'A and C never connected');

    // C's network table: the model with no holder among its peers, and A as its provider by gossip
    const tableAtC = networkTable(c).find((model) => model.sha256 === OFFER.sha256)!;
    t.like(tableAtC, {id: OFFER.id, sizeBytes: OFFER.sizeBytes, layers: OFFER.layers, holders: [], resources: {wholeModelBytes: OFFER.sizeBytes, perLayerBytes: []}});
    t.like(tableAtC.gossip, {providerCount: 1, providerCountCapped: false});
    t.like(tableAtC.gossip!.providers[0], {nodeId: a.node.id, self: false, direct: false});
    // B's: A holds it as a connected peer, and told B so itself
    await waitFor(() => b.gossip.gossip.has(OFFER.sha256!), 10_000, 50);
    const tableAtB = networkTable(b).find((model) => model.sha256 === OFFER.sha256)!;
    t.deepEqual(tableAtB.holders.map((holder) => holder.nodeId), [a.node.id]);
    t.like(tableAtB.gossip!.providers[0], {nodeId: a.node.id, direct: true});
    // A's own: itself, first
    t.like(networkTable(a, [OFFER]).find((model) => model.sha256 === OFFER.sha256)!.gossip!.providers[0], {nodeId: a.node.id, self: true, ageMs: 0});

    const stopped = once(b.node, 'peerLeft');
    await a.node.stop();
    a.gossip.dispose();
    await stopped;
    // nothing but the TTL removes it: gone from both tables within it (8 s) and a round or two
    await waitFor(() => !b.gossip.gossip.has(OFFER.sha256!) && !c.gossip.gossip.has(OFFER.sha256!), 20_000, 100);
    t.is(networkTable(c).find((model) => model.sha256 === OFFER.sha256), undefined);
    t.is(networkTable(b).find((model) => model.sha256 === OFFER.sha256), undefined);
});

/** A peer that speaks the gossip channel by hand: it can send any frame, which an honest node never would. */
class RawGossipPeer implements PeerProtocol {
    /** Each peer's open channel: Hyperswarm may replace a connection just made. */
    private readonly models = new Map<string, ProtomuxMessage<Uint8Array>>();

    attach(peer: PeerConnection) {
        const {peerId} = peer;
        const channel = peer.mux.createChannel({protocol: MODEL_GOSSIP_PROTOCOL,
            onopen: () => {
                this.models.set(peerId, message);
            },
            onclose: () => {
                if (this.models.get(peerId) === message)
                    this.models.delete(peerId);
            }})!;
        const message: ProtomuxMessage<Uint8Array> = channel.addMessage({encoding: c.raw, onmessage: () => undefined});
        channel.open();
    }

    /** Sends to `peerId` if its channel is open. */
    send(peerId: string, frame: unknown) {
        this.models.get(peerId)?.send(Buffer.from(JSON.stringify(frame)));
    }
}

function entry(sha256: string, providers: {id: string, ageMs: number}[]): GossipEntry {
    return {sha256, name: 'lie', sizeBytes: 1, layers: 1, quantization: 'F16', providers};
}

test.serial('a peer that gossips a malformed frame is cut off and banned, and nothing of its frame is merged', async (t) => {
    const honest = gossipNode('gossip-hostile');
    const liar = new RawGossipPeer();
    const overfull = new RawGossipPeer();
    const liarNode = gossipNode('gossip-hostile', [], liar).node;
    const overfullNode = gossipNode('gossip-hostile', [], overfull).node;
    const banned = new Map<string, string>();
    honest.node.on('peerBanned', (peerId, reason) => banned.set(peerId, reason));
    await Promise.all([honest.node, liarNode, overfullNode].map((node) => node.start()));
    await waitFor(() => honest.node.peers().length === 2, 20_000, 50);

    const provider = crypto.randomBytes(32).toString('hex');
    const frames = [
        // a well-formed model beside one whose provider is named twice (it would count twice): the whole frame goes
        [liar, liarNode, {entries: [entry('cd'.repeat(32), [{id: provider, ageMs: 0}]), entry('ef'.repeat(32), [{id: provider, ageMs: 0}, {id: provider, ageMs: 5}])]}],
        // more models than a frame holds
        [overfull, overfullNode, {entries: Array.from({length: 33}, (_, index) => entry(index.toString(16).padStart(64, '0'), [{id: provider, ageMs: 0}]))}]
    ] as const;
    for (const [peer, node, frame] of frames)
        // sent again while no ban came: a connection Hyperswarm replaced as it was used takes the frame with it
        await waitFor(() => {
            if (!banned.has(node.id))
                peer.send(honest.node.id, frame);
            return banned.has(node.id);
        }, 10_000, 500);
    t.regex(banned.get(liarNode.id)!, /model gossip frame is malformed at entries\.1\.providers\.1\.id: provider .* listed twice/);
    t.regex(banned.get(overfullNode.id)!, /model gossip frame is malformed at entries/);
    t.deepEqual(honest.node.peers(), []);
    t.deepEqual(honest.gossip.entries(), [], 'nothing merged');
    t.deepEqual(networkTable(honest), []);
});
