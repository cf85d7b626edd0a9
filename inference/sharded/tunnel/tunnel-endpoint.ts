import {createServer, type Server, type Socket} from 'node:net';
import {StallDetector, type StallDetectorOptions} from '../../stall-detector.js';
import type {RpcConnectionFilter} from './rpc-filters.js';
import type {TunnelStream} from './shard-protocol.js';
import {pipeSocket, type StreamFilter} from './socket-pipe.js';

export interface TunnelEndpointOptions {
    /** Opens the stage's side of a new connection: a stream of its shard session, or a socket to a local server. */
    connect: () => TunnelStream,
    /** The RPC-aware codec for each connection llama.cpp opens (it reports this stage's planned memory). */
    createFilter: () => RpcConnectionFilter,
    stall?: StallDetectorOptions
}

/**
 * The coordinator's end of one stage's tunnel: a TCP port on 127.0.0.1 that llama.cpp's RPC client connects to as
 * if it were the rpc server, each connection a stream of the stage's shard session; never in the engine child
 * (docs/architecture.md, "Sharding", "The tunnel"). Its byte counts and reply times tell a dead stage from a slow one.
 */
export class TunnelEndpoint {
    bytesToStage = 0;
    bytesFromStage = 0;
    readonly stall: StallDetector;
    /** Time spent waiting for the stage's replies since `takeBusyMs` last asked: its share of the work, roughly. */
    private busyMs = 0;
    /** When the oldest unanswered request of any connection was sent; undefined when nothing is awaited. */
    private awaitingSince: number | undefined;
    private readonly sockets = new Set<Socket>();
    private closedReason: string | undefined;

    private constructor(private readonly server: Server, readonly port: number, private readonly options: TunnelEndpointOptions,
        private readonly onStreamClosed: (reason: string) => void) {
        this.stall = new StallDetector(options.stall);
        server.on('connection', (socket) => this.accept(socket));
    }

    /** Listens on an ephemeral loopback port; `onStreamClosed` hears of each stream the stage's side ended. */
    static async listen(options: TunnelEndpointOptions, onStreamClosed: (reason: string) => void) {
        const server = createServer({noDelay: true});
        await new Promise<void>((resolve, reject) => {
            server.once('error', reject);
            server.listen({host: '127.0.0.1', port: 0}, resolve);
        });
        const address = server.address();
        if (address === null || typeof address === 'string')
            throw new Error('the tunnel endpoint has no TCP address');
        return new TunnelEndpoint(server, address.port, options, onStreamClosed);
    }

    /** `host:port`, as llama.cpp names an RPC server. */
    get address() {
        return `127.0.0.1:${this.port}`;
    }

    /** How long the stage has kept the coordinator waiting for an answer, 0 when nothing is awaited. */
    waitingMs(now = performance.now()) {
        return this.awaitingSince === undefined ? 0 : now - this.awaitingSince;
    }

    takeBusyMs() {
        const busy = this.busyMs;
        this.busyMs = 0;
        return busy;
    }

    async close(reason: string) {
        this.closedReason ??= reason;
        for (const socket of this.sockets)
            socket.destroy();
        await new Promise((resolve) => this.server.close(resolve));
    }

    private accept(socket: Socket) {
        if (this.closedReason !== undefined) {
            socket.destroy();
            return;
        }
        this.sockets.add(socket);
        const filter = this.options.createFilter();
        const timed: StreamFilter = {
            fromSocket: (chunk) => {
                const forward = filter.fromSocket(chunk);
                this.bytesToStage += chunk.byteLength;
                if (filter.awaitingReplies > 0)
                    this.awaitingSince ??= performance.now();
                return forward;
            },
            fromTunnel: (chunk) => {
                const before = filter.awaitingReplies;
                const forward = filter.fromTunnel(chunk);
                this.bytesFromStage += chunk.byteLength;
                if (filter.awaitingReplies < before && this.awaitingSince !== undefined) {
                    const now = performance.now();
                    this.stall.record(now - this.awaitingSince);
                    this.busyMs += now - this.awaitingSince;
                    this.awaitingSince = filter.awaitingReplies > 0 ? now : undefined;
                }
                return forward;
            }
        };
        let stream: TunnelStream;
        try {
            stream = this.options.connect();
        } catch (error) {
            socket.destroy();
            this.sockets.delete(socket);
            this.onStreamClosed((error as Error).message);
            return;
        }
        pipeSocket(socket, stream, timed, (reason) => {
            this.sockets.delete(socket);
            if (filter.awaitingReplies === 0 || this.sockets.size === 0)
                this.awaitingSince = undefined;
            // llama.cpp closing its own connection is routine; the stage's side closing it is a failure.
            if (this.closedReason === undefined && reason !== 'the socket closed')
                this.onStreamClosed(reason);
        });
    }
}
