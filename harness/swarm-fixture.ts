import crypto from 'hypercore-crypto';
import createTestnet, {type Testnet} from 'hyperdht/testnet.js';
import {shortNodeId} from '../swarm/node-identity.js';
import {SwarmNode, type SwarmNodeOptions} from '../swarm/swarm-node.js';
import type {PeerStatus} from '../node/node-status.js';
import {capabilitiesFixture} from './capabilities-fixture.js';
import {startDaemon, waitFor, type DaemonHandle} from './cli-process.js';
import {fetchStatus} from './node-status.js';

/** A loopback HyperDHT testnet: bootstrap nodes inside the test process, nothing leaves 127.0.0.1. */
export async function startTestnet(): Promise<{testnet: Testnet, bootstrap: string}> {
    const testnet = await createTestnet(3, {host: '127.0.0.1'});
    return {testnet, bootstrap: testnet.bootstrap.map(({host, port}) => `${host}:${port}`).join(',')};
}

export function peersOf(daemon: DaemonHandle) {
    return fetchStatus(daemon, '/api/peers');
}

export async function nodeIdOf(daemon: DaemonHandle) {
    return (await fetchStatus(daemon, '/api/node')).id;
}

export function startSwarmDaemon(bootstrap: string, dataDir: string, extra: string[] = [], options: Parameters<typeof startDaemon>[1] = {}) {
    return startDaemon(['--bootstrap', bootstrap, '--data-dir', dataDir, '--threads', '1', ...extra], options);
}

/** Waits until `daemon` lists exactly the peers in `expectedIds` (and satisfies `also`, if given). */
export async function waitForPeers(daemon: DaemonHandle, expectedIds: string[], timeoutMs = 30_000, also?: (peers: PeerStatus[]) => boolean) {
    const expected = [...expectedIds].sort().join(',');
    await waitFor(async () => {
        const {peers} = await peersOf(daemon);
        return peers.map((peer) => peer.id).sort().join(',') === expected && (also?.(peers) ?? true);
    }, timeoutMs, 200);
}

/** A node identity, as `SwarmNode` takes it: the key pair (a fresh one unless given) with its id and short id. */
export function nodeIdentity(keyPair: {publicKey: Buffer, secretKey: Buffer} = crypto.keyPair()) {
    return {publicKey: keyPair.publicKey, secretKey: keyPair.secretKey, id: keyPair.publicKey.toString('hex'), shortId: shortNodeId(keyPair.publicKey)};
}

/**
 * An in-process node of `network` on a testnet, announcing `capabilitiesFixture()` unless `extra` says otherwise;
 * not started.
 */
export function testSwarmNode(bootstrap: {host: string, port: number}[], network: string, extra: Partial<SwarmNodeOptions> = {}) {
    return new SwarmNode({identity: nodeIdentity(), network: {name: network}, software: '0.1.0', bootstrap, capabilities: () => capabilitiesFixture(), ...extra});
}
