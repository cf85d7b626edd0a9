import {once} from 'node:events';
import {createServer, type ServerResponse} from 'node:http';
import type {AddressInfo} from 'node:net';

/**
 * A loopback HTTP server for one file at path `/<name>`, with Range support like a CDN: what `models pull`
 * downloads from. `name` may hold slashes (`user/repo/resolve/main/file.gguf` stands in for Hugging Face).
 */
export async function serveFile(name: string, content: Buffer, extraHeaders: Record<string, string> = {}) {
    const requests: {method: string, range: string | undefined}[] = [];
    const stalled: ServerResponse[] = [];
    /** While set, no byte at or past this offset is sent: responses reaching it hang there, like a dead link. */
    let stallAtOffset: number | undefined;
    let bytesSent = 0;

    const server = createServer((req, res) => {
        requests.push({method: req.method ?? '', range: req.headers.range});
        if (new URL(req.url ?? '/', 'http://127.0.0.1').pathname !== `/${name}`) {
            res.writeHead(404).end();
            return;
        }
        const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
        const start = range ? Number(range[1]) : 0;
        const end = range?.[2] ? Math.min(Number(range[2]), content.length - 1) : content.length - 1;
        res.writeHead(range ? 206 : 200, {
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
        const body = content.subarray(start, end + 1);
        if (stallAtOffset !== undefined && end >= stallAtOffset) {
            const sendable = body.subarray(0, Math.max(0, stallAtOffset - start));
            res.write(sendable, () => bytesSent += sendable.length);
            stalled.push(res);
            return;
        }
        res.end(body, () => bytesSent += body.length);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const {port} = server.address() as AddressInfo;
    return {
        origin: `http://127.0.0.1:${port}`,
        url: `http://127.0.0.1:${port}/${name}`,
        requests,
        bytesSent: () => bytesSent,
        stallAt(offset: number | undefined) {
            stallAtOffset = offset;
        },
        close() {
            for (const res of stalled)
                res.destroy();
            server.closeAllConnections();
            return new Promise<void>((resolve) => server.close(() => resolve()));
        }
    };
}
