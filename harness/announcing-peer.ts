import c from 'compact-encoding';
import HyperDHT from 'hyperdht';
import Hyperswarm from 'hyperswarm';
import Protomux from 'protomux';
import {encodeFrame} from '../swarm/channel/frame-codec.js';
import {networkTopic} from '../swarm/network-topic.js';
import {CONTROL_PROTOCOL, PROTOCOL_VERSION, type ControlMessage} from '../swarm/protocol/control-messages.js';
import type {Capabilities} from '../swarm/capabilities.js';

/**
 * A raw Hyperswarm peer in the test process that says hello with `capabilities` (whatever they hold, within the
 * schema: a hostile model name, say) on `network` of a loopback testnet, answers pings, and does nothing else.
 */
export async function startAnnouncingPeer(bootstrap: {host: string, port: number}[], network: string, capabilities: Capabilities) {
    const swarm = new Hyperswarm({dht: new HyperDHT({bootstrap, firewalled: false})});
    swarm.on('connection', (stream) => {
        stream.on('error', () => undefined);
        const channel = Protomux.from(stream).createChannel({protocol: CONTROL_PROTOCOL, handshake: c.raw})!;
        const message = channel.addMessage({encoding: c.raw, onmessage: (frame: Uint8Array) => {
            const received = JSON.parse(Buffer.from(frame).toString('utf8')) as ControlMessage;
            if (received.type === 'ping')
                message.send(encodeFrame({type: 'pong', nonce: received.nonce}));
        }});
        channel.open(encodeFrame({protocol: PROTOCOL_VERSION, software: capabilities.software, network, proof: null, capabilities}));
    });
    await swarm.join(networkTopic({name: network}), {server: true, client: true}).flushed();
    return {id: swarm.keyPair.publicKey.toString('hex'), stop: () => swarm.destroy()};
}
