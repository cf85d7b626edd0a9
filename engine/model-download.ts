import {unlink} from 'node:fs/promises';
import {resolveModelFile} from 'node-llama-cpp';
import {sha256OfFile} from './model-files.js';

export interface DownloadModelOptions {
    directory: string,
    /** node-llama-cpp's progress bar on the terminal. */
    showProgressBar: boolean,
    /** Called with the fraction downloaded, for logs and dashboards. */
    onProgress?: (fraction: number, downloadedBytes: number, totalBytes: number) => void,
    /** Expected SHA-256 (hex) of the file; a mismatch deletes the file and fails. */
    sha256?: string,
    signal?: AbortSignal
}

export class ChecksumMismatchError extends Error {
    constructor(readonly path: string, readonly expected: string, readonly actual: string) {
        super(`checksum mismatch for ${path}: expected sha256 ${expected}, got ${actual}; the file was deleted`);
        this.name = 'ChecksumMismatchError';
    }
}

/**
 * Downloads `hf:` references and URLs into `directory` (reusing a complete file, resuming a partial one)
 * and verifies the file's size against the server and, when known, its SHA-256.
 */
export async function downloadModel(ref: string, options: DownloadModelOptions): Promise<string> {
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
    if (options.sha256 !== undefined) {
        const expected = options.sha256.toLowerCase();
        const actual = await sha256OfFile(path);
        if (actual !== expected) {
            await unlink(path);
            throw new ChecksumMismatchError(path, expected, actual);
        }
    }
    return path;
}
