import {unlink} from 'node:fs/promises';
import {resolveModelFile} from 'node-llama-cpp';
import {sha256OfFile} from './model-files.js';

export interface DownloadModelOptions {
    directory: string,
    /** node-llama-cpp's progress bar on the terminal. */
    showProgressBar: boolean,
    /** Called with the fraction downloaded, for logs and dashboards. */
    onProgress?: (fraction: number, downloadedBytes: number, totalBytes: number) => void,
    /** Expected SHA-256 (hex) of the file, else the one the server publishes; a mismatch deletes the file and fails. */
    sha256?: string,
    signal?: AbortSignal
}

export class ChecksumMismatchError extends Error {
    constructor(readonly path: string, readonly expected: string, readonly actual: string) {
        super(`checksum mismatch for ${path}: expected sha256 ${expected}, got ${actual}; the file was deleted`);
        this.name = 'ChecksumMismatchError';
    }
}

/** How long the server may take to answer the first request. */
const PREFLIGHT_TIMEOUT_MS = 15_000;

export class DownloadError extends Error {
    constructor(message: string) {
        super(message);
        this.name = 'DownloadError';
    }
}

/**
 * Asks a URL's server for the file before downloading: an unreachable server or a missing file fails at once
 * (the downloader itself retries for minutes), and Hugging Face's `x-linked-etag` gives the file's SHA-256.
 */
async function preflight(url: string, signal?: AbortSignal): Promise<{sha256?: string}> {
    let response: Response;
    try {
        const timeout = AbortSignal.timeout(PREFLIGHT_TIMEOUT_MS);
        response = await fetch(url, {method: 'HEAD', redirect: 'follow', signal: signal ? AbortSignal.any([signal, timeout]) : timeout});
    } catch (error) {
        const cause = (error as {cause?: {code?: string, message?: string}}).cause;
        throw new DownloadError(`cannot reach ${new URL(url).host}: ${cause?.code ?? cause?.message ?? (error as Error).message}`);
    }
    if (!response.ok)
        throw new DownloadError(`${url}: the server answered ${response.status} ${response.statusText}`);
    const etag = response.headers.get('x-linked-etag')?.replace(/"/g, '');
    return etag !== undefined && /^[0-9a-f]{64}$/i.test(etag) ? {sha256: etag} : {};
}

/** Hugging Face's endpoint: `HF_ENDPOINT` (or `MODEL_ENDPOINT`) when set, as node-llama-cpp and llama.cpp honour it. */
function huggingFaceEndpoint() {
    const endpoint = process.env.MODEL_ENDPOINT || process.env.HF_ENDPOINT || 'https://huggingface.co/';
    return endpoint.endsWith('/') ? endpoint : `${endpoint}/`;
}

/**
 * The URL a reference downloads from, when it can be known up front: URLs, and `hf:user/repo/path/file.gguf[#branch]`.
 * Tag forms (`hf:user/repo:Q4_K_M`) resolve through Hugging Face's manifest inside node-llama-cpp.
 */
export function downloadUrlOf(ref: string): string | undefined {
    if (/^https?:\/\//i.test(ref))
        return ref;
    const file = /^hf:(?:\/\/)?([^/:#\s]+)\/([^/:#\s]+)\/([^:#\s]+\.gguf)(?:#([^\s]+))?$/i.exec(ref);
    if (file === null)
        return undefined;
    const [, user, repo, path, branch = 'main'] = file;
    // A dot segment would climb out of the repository once the URL is resolved (a peer may send such a reference);
    // the branch is one segment (`refs/pr/1` is sent as refs%2Fpr%2F1), checked as if a server decoded its slashes.
    if ([user!, repo!, ...path!.split('/'), ...branch.split('/')].some((segment) => segment === '.' || segment === '..' || segment === ''))
        return undefined;
    return `${huggingFaceEndpoint()}${encodeURIComponent(user!)}/${encodeURIComponent(repo!)}/resolve/${encodeURIComponent(branch)}/${path!.split('/').map(encodeURIComponent).join('/')}`;
}

/**
 * Downloads `hf:` references and URLs into `directory` (reusing a complete file, resuming a partial one)
 * and verifies the file's size against the server and, when known, its SHA-256.
 */
export async function downloadModel(ref: string, options: DownloadModelOptions): Promise<{path: string, verifiedSha256?: string}> {
    const url = downloadUrlOf(ref);
    const published = url === undefined ? {} : await preflight(url, options.signal);
    const expectedSha256 = options.sha256 ?? published.sha256;
    const path = await resolveModelFile(ref, {
        directory: options.directory,
        download: 'auto',
        verify: true,
        cli: options.showProgressBar,
        deleteTempFileOnCancel: false, // keep partial downloads so the next pull resumes them
        ...(options.signal && {signal: options.signal}),
        ...(options.onProgress && {
            onProgress: ({totalSize, downloadedSize}: {totalSize: number, downloadedSize: number}) =>
                options.onProgress!(totalSize > 0 ? downloadedSize / totalSize : 0, downloadedSize, totalSize)
        })
    });
    if (expectedSha256 !== undefined) {
        const expected = expectedSha256.toLowerCase();
        const actual = await sha256OfFile(path);
        if (actual !== expected) {
            await unlink(path);
            throw new ChecksumMismatchError(path, expected, actual);
        }
        return {path, verifiedSha256: actual};
    }
    return {path};
}
