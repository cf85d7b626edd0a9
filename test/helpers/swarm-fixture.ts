import createTestnet, {type Testnet} from 'hyperdht/testnet.js';
import {startDaemon, waitFor, type DaemonHandle} from './cli-process.js';

/** A loopback HyperDHT testnet: bootstrap nodes inside the test process, nothing leaves 127.0.0.1. */
export async function startTestnet(): Promise<{testnet: Testnet, bootstrap: string}> {
    const testnet = await createTestnet(3, {host: '127.0.0.1'});
    return {testnet, bootstrap: testnet.bootstrap.map(({host, port}) => `${host}:${port}`).join(',')};
}

export interface PeerView {
    id: string,
    rttMs: number | null,
    capabilities: {software: string, models: {id: string, loaded: boolean, sha256: string | null}[], device: {cpuThreads: number}}
}

export async function peersOf(daemon: DaemonHandle) {
    return await (await fetch(`${daemon.origin}/api/peers`)).json() as {peers: PeerView[], banned: {peerId: string, reason: string}[]};
}

export async function nodeIdOf(daemon: DaemonHandle) {
    return (await (await fetch(`${daemon.origin}/api/node`)).json() as {id: string}).id;
}

export function startSwarmDaemon(bootstrap: string, dataDir: string, extra: string[] = []) {
    return startDaemon(['--bootstrap', bootstrap, '--data-dir', dataDir, '--threads', '1', ...extra]);
}

/** Waits until `daemon` lists exactly the peers in `expectedIds` (and satisfies `also`, if given). */
export async function waitForPeers(daemon: DaemonHandle, expectedIds: string[], timeoutMs = 30_000, also?: (peers: PeerView[]) => boolean) {
    const expected = [...expectedIds].sort().join(',');
    await waitFor(async () => {
        const {peers} = await peersOf(daemon);
        return peers.map((peer) => peer.id).sort().join(',') === expected && (also?.(peers) ?? true);
    }, timeoutMs, 200);
}
