import {createHash} from 'node:crypto';
import {readdir, readFile} from 'node:fs/promises';
import {extname, join} from 'node:path';
import {fileURLToPath} from 'node:url';
import express, {type Request, type Response} from 'express';
import {ApiError} from './api-error.js';

/**
 * `GET /` serves the web page that `npm run build` writes to dist/web/ (docs/architecture.md, "Web page"): files
 * read once into memory, sent precompressed as the client accepts, open without the API key (the page asks for it
 * before it calls the API).
 */

/**
 * Only this origin's files; no inline script or style, no plugins, no framing; Trusted Types in Chromium make any
 * assignment of a string to innerHTML throw, so model output cannot become markup even by mistake.
 */
export const WEB_PAGE_CSP = [
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self'", "connect-src 'self'",
    "object-src 'none'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
    "require-trusted-types-for 'script'", "trusted-types 'none'"
].join('; ');

export interface WebPageOptions {
    /** The built page; defaults to dist/web beside the built proxy (`npm run build`). */
    dir?: string
}

export const webPageDefaults = {
    dir: fileURLToPath(new URL('../web/', import.meta.url))
};

const CONTENT_TYPES: Record<string, string> = {
    '.html': 'text/html; charset=utf-8',
    '.js': 'text/javascript; charset=utf-8',
    '.css': 'text/css; charset=utf-8',
    '.svg': 'image/svg+xml'
};

/** Named by their content hash: they never change, a new build has new names. index.html is asked for each time. */
const IMMUTABLE = 'public, max-age=31536000, immutable';

interface WebFile {
    type: string,
    cacheControl: string,
    etag: string,
    bodies: {identity: Buffer, br?: Buffer, gzip?: Buffer}
}

async function readOptional(path: string) {
    return readFile(path).catch(() => undefined);
}

async function loadFiles(dir: string) {
    const files = new Map<string, WebFile>();
    const names = [...await readdir(dir).catch(() => []), ...(await readdir(join(dir, 'assets')).catch(() => [])).map((name) => `assets/${name}`)];
    for (const name of names) {
        const type = CONTENT_TYPES[extname(name)];
        if (type === undefined)
            continue;
        const identity = await readFile(join(dir, name));
        const [br, gzip] = await Promise.all([readOptional(join(dir, `${name}.br`)), readOptional(join(dir, `${name}.gz`))]);
        files.set(`/${name}`, {
            type,
            cacheControl: name.startsWith('assets/') ? IMMUTABLE : 'no-cache',
            etag: `"${createHash('sha256').update(identity).digest('base64url').slice(0, 22)}"`,
            bodies: {identity, ...(br && {br}), ...(gzip && {gzip})}
        });
    }
    return files;
}

/** The codings the client accepts with a weight above zero (RFC 9110, 12.5.3). */
function acceptedEncodings(header: string | undefined) {
    const accepted = new Set<string>();
    for (const part of (header ?? '').split(',')) {
        const [coding, ...parameters] = part.trim().toLowerCase().split(';');
        const weight = parameters.map((parameter) => /^\s*q=([\d.]+)\s*$/.exec(parameter)?.[1]).find((value) => value !== undefined);
        if (coding && (weight === undefined || Number(weight) > 0))
            accepted.add(coding);
    }
    return accepted;
}

function send(req: Request, res: Response, file: WebFile) {
    const accepted = acceptedEncodings(req.get('accept-encoding'));
    const encoding = file.bodies.br && accepted.has('br') ? 'br' : file.bodies.gzip && accepted.has('gzip') ? 'gzip' : 'identity';
    res.set({
        'Content-Type': file.type,
        'Cache-Control': file.cacheControl,
        'Content-Security-Policy': WEB_PAGE_CSP,
        'X-Content-Type-Options': 'nosniff',
        'Referrer-Policy': 'no-referrer',
        'Cross-Origin-Opener-Policy': 'same-origin',
        Vary: 'Accept-Encoding',
        ETag: file.etag
    });
    if (req.get('if-none-match') === file.etag) {
        res.status(304).end();
        return;
    }
    const body = file.bodies[encoding]!;
    if (encoding !== 'identity')
        res.set('Content-Encoding', encoding);
    res.set('Content-Length', String(body.length)).end(body);
}

export function webPageRouter(options: WebPageOptions = {}) {
    const {dir} = {...webPageDefaults, ...options};
    let files: Promise<Map<string, WebFile>> | undefined;
    const router = express.Router();
    router.get(['/', '/index.html', '/assets/:name'], async (req, res, next) => {
        files ??= loadFiles(dir);
        const file = (await files).get(req.path === '/' ? '/index.html' : req.path);
        if (file !== undefined)
            send(req, res, file);
        else if (req.path === '/')
            throw new ApiError(404, 'The web page is not built: run `npm run build`.', 'invalid_request_error', null, 'web_page_missing');
        else
            next();
    });
    return router;
}
