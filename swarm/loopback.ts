/** Whether a host name or address stays on this machine (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string) {
    return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/**
 * On a loopback testnet (every bootstrap host is loopback) HyperDHT's NAT detection leaves every node "firewalled"
 * and incoming connections never reach the server side: DHTs there are created with `firewalled: false`
 * (docs/architecture.md, "Swarm").
 */
export function loopbackTestnetOptions(bootstrap: {host: string}[] | undefined) {
    return bootstrap?.every(({host}) => isLoopbackHost(host)) ? {firewalled: false} : {};
}
