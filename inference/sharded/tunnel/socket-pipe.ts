import {EventEmitter} from 'node:events';
import {connect, type Socket} from 'node:net';
import type {TunnelStream} from './shard-protocol.js';

/**
 * Looks at the bytes crossing a tunnel and may change them (the RPC-aware codec): returns what to forward, or
 * throws to end the stream (a protocol violation).
 */
export interface StreamFilter {
    /** Bytes read from the local socket, on their way into the tunnel. */
    fromSocket(chunk: Uint8Array): Uint8Array[],
    /** Bytes from the tunnel, on their way to the local socket. */
    fromTunnel(chunk: Uint8Array): Uint8Array[],
    /** The pipe closed, both ways. */
    close?(): void
}

/**
 * Joins a local TCP socket to a tunnel stream, both ways, with backpressure from the peer connection (the socket
 * pauses while the tunnel is congested). Either side closing, or the filter refusing bytes, closes both;
 * `onClose` is told why once, with the filter's error when it refused bytes.
 */
export function pipeSocket(socket: Socket, stream: TunnelStream, filter: StreamFilter, onClose: (reason: string, refused?: Error) => void) {
    let closed = false;
    const close = (reason: string, refused?: Error) => {
        if (closed)
            return;
        closed = true;
        socket.destroy();
        stream.close(reason);
        filter.close?.();
        onClose(reason, refused);
    };
    const forward = (chunks: () => Uint8Array[], write: (chunk: Uint8Array) => boolean) => {
        try {
            let drained = true;
            for (const chunk of chunks())
                drained = write(chunk) && drained;
            return drained;
        } catch (error) {
            close((error as Error).message, error as Error);
            return true;
        }
    };
    socket.setNoDelay(true);
    socket.on('data', (chunk) => {
        // One tunnel message per read, not one per frame part the codec returns: each message is a Noise frame and
        // a packet, and per token the RPC client writes a few small frames at once.
        if (!forward(() => joined(filter.fromSocket(chunk)), (bytes) => stream.write(bytes)))
            socket.pause();
    });
    stream.on('drain', () => socket.resume());
    stream.on('data', (chunk) => forward(() => filter.fromTunnel(chunk), (bytes) => socket.write(bytes)));
    socket.on('error', (error) => close(`socket error: ${error.message}`));
    socket.on('close', () => close('the socket closed'));
    stream.on('close', (reason) => {
        if (!closed) {
            closed = true;
            socket.destroy();
            filter.close?.();
            onClose(reason);
        }
    });
}

function joined(chunks: Uint8Array[]) {
    return chunks.length <= 1 ? chunks : [Buffer.concat(chunks)];
}

/** A TCP connection as a tunnel stream: a stage without a tunnel (the coordinator's own, and the benchmarks' direct anchor). */
export class SocketStream extends EventEmitter implements TunnelStream {
    closed = false;
    private readonly socket: Socket;

    constructor(port: number, host = '127.0.0.1') {
        super();
        this.socket = connect({host, port, noDelay: true});
        this.socket.on('data', (bytes) => this.emit('data', bytes));
        this.socket.on('drain', () => this.emit('drain'));
        this.socket.on('error', (error) => this.close(`socket error: ${error.message}`));
        this.socket.on('close', () => this.close('the server closed the connection'));
    }

    write(bytes: Uint8Array) {
        return !this.closed && this.socket.write(bytes);
    }

    close(reason: string) {
        if (this.closed)
            return;
        this.closed = true;
        this.socket.destroy();
        this.emit('close', reason);
    }
}
