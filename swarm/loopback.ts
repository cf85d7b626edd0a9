/** Whether a host name or address stays on this machine (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string) {
    return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/**
 * DHT options for a loopback testnet, where NAT detection would leave every node "firewalled" and incoming
 * connections would never arrive (docs/architecture.md, "Swarm").
 */
export function loopbackTestnetOptions(bootstrap: {host: string}[] | undefined) {
    return bootstrap?.every(({host}) => isLoopbackHost(host)) ? {firewalled: false} : {};
}
