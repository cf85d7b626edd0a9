import {once} from 'node:events';
import {STATUS_CODES, type Server} from 'node:http';
import type {Duplex} from 'node:stream';
import type {AddressInfo} from 'node:net';
import type {Express} from 'express';
import {ApiError} from './api-error.js';

export interface ListeningProxy {
    server: Server,
    /** Base URL for OpenAI clients, ending in /v1. */
    baseUrl: string,
    port: number,
    /** Stops accepting, lets in-flight requests finish for up to `graceMs`, then cuts what is left. */
    close(graceMs?: number): Promise<void>
}

/** Node's HTTP parser errors, by code, as the status and words a client gets. */
const PARSER_ERRORS: Record<string, [status: number, message: string]> = {
    HPE_HEADER_OVERFLOW: [431, 'The request headers are too large.'],
    ERR_HTTP_REQUEST_TIMEOUT: [408, 'The request was not received in time.']
};

/**
 * A request Node's HTTP parser rejects (broken chunked encoding, a malformed header) never reaches the app: answer
 * it with an OpenAI error object too, rather than Node's empty 400, where the connection can still carry one.
 */
function answerClientError(error: Error & {code?: string}, socket: Duplex) {
    if (!socket.writable || error.code === 'ECONNRESET') {
        socket.destroy();
        return;
    }
    const [status, message] = PARSER_ERRORS[error.code ?? ''] ?? [400, 'The request is not valid HTTP/1.1.'];
    const body = JSON.stringify(new ApiError(status, message, 'invalid_request_error', null, 'malformed_request').toBody());
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
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
    server.on('clientError', answerClientError);
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
