import {once} from 'node:events';
import {createServer, type ServerResponse} from 'node:http';
import type {AddressInfo} from 'node:net';

/** One request the server saw, in arrival order. */
export interface FileServerRequest {
    method: string,
    range: string | undefined,
    /** The path asked for, without the query. */
    path: string,
    /** The status it was answered with (set once the headers went out). */
    status?: number,
    /** Body bytes sent in answer (handed to the socket). */
    bytes: number
}

/**
 * A loopback HTTP server for one file at path `/<name>`, with Range support like a CDN: what `models pull`
 * downloads from, and the public source hosts fetch their layers from (docs/architecture.md, "Sharding"). `name`
 * may hold slashes (`user/repo/resolve/main/file.gguf` stands in for Hugging Face). Hooks make it misbehave as real
 * sources do: stall, corrupt a range, ignore ranges, fail, redirect.
 */
export async function serveFile(name: string, content: Buffer, extraHeaders: Record<string, string> = {}) {
    const requests: FileServerRequest[] = [];
    const stalled: ServerResponse[] = [];
    /** While set, no byte at or past this offset is sent: responses reaching it hang there, like a dead link. */
    let stallAtOffset: number | undefined;
    let bytesSent = 0;
    /** File ranges (inclusive) served with every byte inverted, as a bad mirror or a flipped bit would. */
    const corrupted: [number, number][] = [];
    let rangesIgnored = false;
    /** Requests answered with a status instead of the file, next first. */
    const failures: number[] = [];
    /** Paths answered with a redirect to the file. */
    const redirects = new Set<string>();
    /** While set, requests wait for `hold(false)` before their answer starts. */
    let held: {promise: Promise<void>, release: () => void} | undefined;
    let inFlight = 0;
    let maxInFlight = 0;

    const server = createServer(async (req, res) => {
        const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
        const record: FileServerRequest = {method: req.method ?? '', range: req.headers.range, path, bytes: 0};
        requests.push(record);
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        res.on('close', () => inFlight--);
        const send = (chunk: Buffer, end: boolean) => {
            const done = () => {
                bytesSent += chunk.length;
                record.bytes += chunk.length;
            };
            if (end)
                res.end(chunk, done);
            else
                res.write(chunk, done);
        };
        if (held !== undefined)
            await held.promise;
        if (redirects.has(path)) {
            record.status = 302;
            res.writeHead(302, {location: `/${name}`}).end();
            return;
        }
        if (path !== `/${name}`) {
            record.status = 404;
            res.writeHead(404).end();
            return;
        }
        const failure = failures.shift();
        if (failure !== undefined) {
            record.status = failure;
            res.writeHead(failure).end();
            return;
        }
        const range = rangesIgnored ? null : /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
        const start = range ? Number(range[1]) : 0;
        const end = range?.[2] ? Math.min(Number(range[2]), content.length - 1) : content.length - 1;
        record.status = range ? 206 : 200;
        res.writeHead(record.status, {
            'content-type': 'application/octet-stream',
            'accept-ranges': 'bytes',
            'content-length': String(end - start + 1),
            ...extraHeaders,
            ...(range && {'content-range': `bytes ${start}-${end}/${content.length}`})
        });
        if (req.method === 'HEAD') {
            res.end();
            return;
        }
        const body = corruptedCopy(content, start, end, corrupted);
        if (stallAtOffset !== undefined && end >= stallAtOffset) {
            send(body.subarray(0, Math.max(0, stallAtOffset - start)), false);
            stalled.push(res);
            return;
        }
        send(body, true);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const {port} = server.address() as AddressInfo;
    return {
        origin: `http://127.0.0.1:${port}`,
        url: `http://127.0.0.1:${port}/${name}`,
        port,
        requests,
        bytesSent: () => bytesSent,
        /** The most requests that were being answered at one time. */
        maxInFlight: () => maxInFlight,
        stallAt(offset: number | undefined) {
            stallAtOffset = offset;
        },
        /** Cuts the connections of the responses hanging at the stall offset, as a reset link would. */
        dropStalled() {
            for (const res of stalled.splice(0))
                res.destroy();
        },
        /** Serves the file's bytes `start..end` (inclusive) inverted from now on. */
        corrupt(start: number, end: number) {
            corrupted.push([start, end]);
        },
        /** Answers every request with the whole file (200), as a server without Range support does. */
        ignoreRanges(ignore = true) {
            rangesIgnored = ignore;
        },
        /** Answers the next `count` requests for the file with `status` (defaults to 503). */
        failNext(count: number, status = 503) {
            failures.push(...Array<number>(count).fill(status));
        },
        /** Makes `/<path>` a redirect (302) to the file. */
        redirect(path: string) {
            redirects.add(`/${path}`);
        },
        /** While on, requests wait before their answer starts; `hold(false)` lets them all go on. */
        hold(on: boolean) {
            if (on && held === undefined) {
                let release!: () => void;
                const promise = new Promise<void>((resolve) => {
                    release = resolve;
                });
                held = {promise, release};
            } else if (!on && held !== undefined) {
                held.release();
                held = undefined;
            }
        },
        close() {
            held?.release();
            for (const res of stalled)
                res.destroy();
            server.closeAllConnections();
            return new Promise<void>((resolve) => server.close(() => resolve()));
        }
    };
}

/** `content[start..end]`, with the bytes of the corrupted ranges inverted (a copy only where one overlaps). */
function corruptedCopy(content: Buffer, start: number, end: number, corrupted: readonly [number, number][]) {
    const body = content.subarray(start, end + 1);
    const overlapping = corrupted.filter(([from, to]) => from <= end && to >= start);
    if (overlapping.length === 0)
        return body;
    const copy = Buffer.from(body);
    for (const [from, to] of overlapping)
        for (let offset = Math.max(from, start); offset <= Math.min(to, end); offset++)
            copy[offset - start] = copy[offset - start]! ^ 0xff;
    return copy;
}
