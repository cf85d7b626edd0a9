/** Whether a host name or address stays on this machine (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string) {
    return host === 'localhost' || host === '::1' || /^127\./.test(host);
}
