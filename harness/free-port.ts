import {once} from 'node:events';
import {createServer} from 'node:net';

/** A loopback port free right now (a server started soon after will most likely get it). */
export async function freePort() {
    const server = createServer().listen(0, '127.0.0.1');
    await once(server, 'listening');
    const {port} = server.address() as {port: number};
    await new Promise((resolve) => server.close(resolve));
    return port;
}
