import {setTimeout as sleep} from 'node:timers/promises';
import HyperDHT from 'hyperdht';
import {loopbackTestnetOptions} from './loopback.js';
import {natStatus, type NatStatus} from './relay-policy.js';

export interface NatProbeOptions {
    /** DHT bootstrap nodes; defaults to Hyperswarm's public bootstrap. */
    bootstrap?: {host: string, port: number}[],
    /** Longest wait for the DHT; defaults to 15 s. */
    timeoutMs?: number
}

export const natProbeDefaults = {timeoutMs: 15_000};

/**
 * Joins the DHT briefly to see this machine's NAT as peers will (`strongdoge doctor`): bootstrapping samples this
 * node's address from several DHT nodes and asks them to ping it back, which tells reachable from firewalled.
 */
export async function probeNat(options: NatProbeOptions = {}): Promise<{bootstrapped: boolean, nat: NatStatus}> {
    const {bootstrap, timeoutMs} = {...natProbeDefaults, ...options};
    const dht = new HyperDHT({...(bootstrap && {bootstrap}), ...loopbackTestnetOptions(bootstrap)});
    const waited = new AbortController();
    try {
        const bootstrapped = await Promise.race([
            dht.fullyBootstrapped().then(() => true),
            sleep(timeoutMs, false, {signal: waited.signal})
        ]);
        return {bootstrapped, nat: natStatus(dht)};
    } finally {
        waited.abort();
        await dht.destroy().catch(() => undefined);
    }
}
