import {once} from 'node:events';
import type {Server} from 'node:http';
import type {AddressInfo} from 'node:net';
import type {Express} from 'express';

export interface ListeningProxy {
    server: Server,
    /** Base URL for OpenAI clients, ending in /v1. */
    baseUrl: string,
    port: number,
    /** Stops accepting, lets in-flight requests finish for up to `graceMs`, then cuts what is left. */
    close(graceMs?: number): Promise<void>
}

export async function listenProxy(app: Express, host: string, port: number): Promise<ListeningProxy> {
    const server = app.listen(port, host);
    await Promise.race([
        once(server, 'listening'),
        once(server, 'error').then(([error]) => {
            throw error;
        })
    ]);
    server.keepAliveTimeout = 65_000; // above common client and reverse-proxy idle timeouts
    const address = server.address() as AddressInfo;
    const urlHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    return {
        server,
        port: address.port,
        baseUrl: `http://${urlHost}:${address.port}/v1`,
        async close(graceMs = 5_000) {
            const closed = new Promise<void>((resolve) => server.close(() => resolve()));
            server.closeIdleConnections();
            const timer = setTimeout(() => server.closeAllConnections(), graceMs);
            await closed;
            clearTimeout(timer);
        }
    };
}
