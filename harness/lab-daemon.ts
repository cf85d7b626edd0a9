import {once} from 'node:events';
import {createConnection, createServer, type Server, type Socket} from 'node:net';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {startDaemon, type DaemonHandle, type StartDaemonOptions} from './cli-process.js';
import type {Lab, LabHost} from './netns-lab.js';

let bridgeCounter = 0;

function splice(a: Socket, b: Socket) {
    a.on('error', () => b.destroy());
    b.on('error', () => a.destroy());
    a.pipe(b).pipe(a);
}

/** Node code run inside a namespace: a Unix socket (argv[1]) in front of 127.0.0.1:port (argv[2]) there. */
const FORWARDER = `const net = require('node:net');
net.createServer((client) => {
    const api = net.connect(Number(process.argv[2]), '127.0.0.1');
    client.on('error', () => api.destroy());
    api.on('error', () => client.destroy());
    client.pipe(api).pipe(client);
}).listen(process.argv[1], () => console.log('ready'));`;

/**
 * A daemon's API inside a lab namespace, reachable from the test process: Unix sockets are shared across network
 * namespaces, so a forwarder inside the namespace listens on one and this process listens on loopback in front
 * of it. The lab itself is left as it is (no extra interface or route that could carry peer traffic).
 */
async function bridge(host: LabHost, origin: string): Promise<{origin: string, server: Server}> {
    const port = new URL(origin).port;
    const path = join(tmpdir(), `sdlab-${process.pid}-${++bridgeCounter}.sock`);
    const forwarder = host.spawn(process.execPath, ['-e', FORWARDER, path, port], {stdio: ['ignore', 'pipe', 'inherit']});
    await new Promise<void>((resolve, reject) => {
        forwarder.stdout!.once('data', () => resolve());
        forwarder.once('exit', (code) => reject(new Error(`the API forwarder in ${host.namespace} exited with ${code}`)));
    });
    const server = createServer((client) => splice(client, createConnection(path))).listen(0, '127.0.0.1');
    await once(server, 'listening');
    return {origin: `http://127.0.0.1:${(server.address() as {port: number}).port}`, server};
}

/** `strongdoge start --daemon` on a lab host, joined to the lab's DHT; its API is reached through `bridge`. */
export async function startLabDaemon(lab: Lab, host: LabHost, args: string[], options: StartDaemonOptions = {}): Promise<DaemonHandle> {
    let server: Server | undefined;
    const daemon = await startDaemon(['--bootstrap', lab.bootstrap, '--threads', '1', ...args], {
        readyTimeoutMs: 120_000,
        ...options,
        launch: (command, commandArgs, spawnOptions) => host.spawn(command, commandArgs, spawnOptions),
        reach: async (origin) => {
            const bridged = await bridge(host, origin);
            server = bridged.server;
            return bridged.origin;
        }
    });
    const stop = daemon.stop.bind(daemon);
    return {
        ...daemon,
        async stop(signal) {
            server?.close();
            return stop(signal);
        }
    };
}

