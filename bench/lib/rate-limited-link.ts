/**
 * Links of a fixed rate in user space (this machine's kernel has no netem; docs/architecture.md, "Benchmarks"): one
 * link shared by every stream that sends over it, as a node's uplink is shared by its stages, a tunnel stream whose
 * bytes cross one, and a TCP proxy whose answers cross one (a host's link to a model's source).
 */
import {EventEmitter} from 'node:events';
import {connect, createServer, type Socket} from 'node:net';
import type {TunnelStream} from '../../inference/sharded/tunnel/shard-protocol.js';

/** How finely the streams sharing a link interleave: 64 KiB is 26 ms at 20 Mbit/s. */
const PIECE_BYTES = 64 * 1024;
/** Bytes a sender may have waiting for the link before it says it is congested. */
const HIGH_WATER_BYTES = 256 * 1024;
/** Timers may fire a fraction of a millisecond before `performance.now()` reaches their deadline. */
const TIMER_SLACK_MS = 1;

/**
 * A link carrying `bytesPerSecond`, first come first served: each piece leaves once the link has carried every piece
 * given to it before (store and forward). Deadlines are reserved when bytes are given, so timers that fire late do
 * not lower the rate over time.
 */
export class RateLimitedLink {
    /** Bytes handed on so far (those dropped with a closed stream not counted). */
    carriedBytes = 0;
    /** When the link has carried everything given to it, in `performance.now()` time. */
    private clock = 0;

    constructor(readonly bytesPerSecond: number) {}

    /** The time `bytes` more will have crossed the link. */
    reserve(bytes: number) {
        this.clock = Math.max(this.clock, performance.now()) + bytes * 1000 / this.bytesPerSecond;
        return this.clock;
    }
}

/** One sender's bytes over a link, in order: each piece is handed to `deliver` once the link has carried it. */
export class LinkSender {
    pendingBytes = 0;
    private readonly queue: {at: number, piece: Uint8Array}[] = [];
    private timer: NodeJS.Timeout | undefined;
    private stopped = false;

    constructor(private readonly link: RateLimitedLink, private readonly deliver: (piece: Uint8Array) => void) {}

    send(bytes: Uint8Array) {
        if (this.stopped)
            return;
        for (let offset = 0; offset < bytes.byteLength; offset += PIECE_BYTES) {
            const piece = bytes.subarray(offset, Math.min(bytes.byteLength, offset + PIECE_BYTES));
            this.queue.push({at: this.link.reserve(piece.byteLength), piece});
            this.pendingBytes += piece.byteLength;
        }
        this.schedule();
    }

    /** Drops what waits: the stream closed. */
    stop() {
        this.stopped = true;
        clearTimeout(this.timer);
        this.queue.length = 0;
        this.pendingBytes = 0;
    }

    private schedule() {
        if (this.timer !== undefined || this.queue.length === 0)
            return;
        this.timer = setTimeout(() => this.flush(), Math.max(0, this.queue[0]!.at - performance.now()));
    }

    private flush() {
        this.timer = undefined;
        const now = performance.now() + TIMER_SLACK_MS;
        while (!this.stopped && this.queue.length > 0 && this.queue[0]!.at <= now) {
            const {piece} = this.queue.shift()!;
            this.pendingBytes -= piece.byteLength;
            this.link.carriedBytes += piece.byteLength;
            this.deliver(piece);
        }
        this.schedule();
    }
}

/**
 * A tunnel stream whose outgoing bytes cross `link` (shared with other streams); incoming bytes pass at once. Says it
 * is congested past `HIGH_WATER_BYTES` waiting, and drains at half that, so the sender's socket pauses as over a
 * real uplink.
 */
export class ThrottledStream extends EventEmitter implements TunnelStream {
    private readonly sender: LinkSender;
    private congested = false;

    constructor(private readonly inner: TunnelStream, link: RateLimitedLink) {
        super();
        this.sender = new LinkSender(link, (piece) => {
            if (!inner.closed)
                inner.write(piece);
            if (this.congested && this.sender.pendingBytes <= HIGH_WATER_BYTES / 2) {
                this.congested = false;
                this.emit('drain');
            }
        });
        inner.on('data', (bytes) => this.emit('data', bytes));
        inner.on('close', (reason) => {
            this.sender.stop();
            this.emit('close', reason);
        });
    }

    get closed() {
        return this.inner.closed;
    }

    write(bytes: Uint8Array) {
        this.sender.send(bytes);
        if (this.sender.pendingBytes >= HIGH_WATER_BYTES)
            this.congested = true;
        return !this.congested && !this.inner.closed;
    }

    close(reason: string) {
        this.sender.stop();
        this.inner.close(reason);
    }
}

/**
 * A TCP proxy on loopback to `target` whose answers cross `link` (every connection through it shares the link);
 * requests pass at once. Stands in for a host's link to a model's public source.
 */
export async function startThrottledProxy(target: {host: string, port: number}, link: RateLimitedLink) {
    const sockets = new Set<Socket>();
    const server = createServer({noDelay: true}, (client) => {
        const upstream = connect({...target, noDelay: true});
        sockets.add(client).add(upstream);
        let upstreamDone = false;
        const close = () => {
            sender.stop();
            client.destroy();
            upstream.destroy();
            sockets.delete(client);
            sockets.delete(upstream);
        };
        // The source closed its side: the client gets what is still on the link first.
        const endWhenSent = () => {
            if (upstreamDone && sender.pendingBytes === 0)
                client.end();
        };
        const sender = new LinkSender(link, (piece) => {
            client.write(piece);
            if (upstream.isPaused() && sender.pendingBytes <= HIGH_WATER_BYTES / 2)
                upstream.resume();
            endWhenSent();
        });
        client.on('data', (bytes) => upstream.write(bytes));
        upstream.on('data', (bytes) => {
            sender.send(bytes);
            if (sender.pendingBytes >= HIGH_WATER_BYTES)
                upstream.pause();
        });
        upstream.on('close', () => {
            upstreamDone = true;
            endWhenSent();
        });
        client.on('end', () => upstream.end());
        client.on('close', close);
        client.on('error', close);
        upstream.on('error', close);
    });
    await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({host: '127.0.0.1', port: 0}, resolve);
    });
    const {port} = server.address() as {port: number};
    return {
        port,
        close() {
            for (const socket of sockets)
                socket.destroy();
            return new Promise<void>((resolve) => server.close(() => resolve()));
        }
    };
}
