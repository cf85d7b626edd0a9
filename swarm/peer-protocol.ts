import type {PeerConnection} from './peer-connection.js';

/**
 * A protocol that runs beside the control channel on every peer connection, on its own protomux channel of the
 * connection's mux (docs/peer-protocol.md, "Adding a protocol"). The swarm knows nothing of what a protocol
 * carries: jobs, shard tunnels and log replication each attach themselves.
 */
export interface PeerProtocol {
    /**
     * Called once for every peer whose hello completed. Open channels on `peer.mux`; the connection's `closed`
     * event ends them. A peer that breaks the protocol is closed with `peer.close({kind: 'violation', …})`.
     */
    attach(peer: PeerConnection): void
}
