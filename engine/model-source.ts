/**
 * Where a model file came from, kept beside it in `<file>.source.json` so that the coordinator can announce it and
 * hosts can fetch their own layers from it (docs/architecture.md, "Hosts that fetch their layers"). The sidecar does
 * not end in `.gguf`, so nothing that lists models sees it.
 */
import {randomBytes} from 'node:crypto';
import {readFile, rename, unlink, writeFile} from 'node:fs/promises';
import type {ModelSourceRef} from '../core/tensor-digest.js';
import {downloadUrlOf} from './model-download.js';

/** The longest source kept or announced (`modelOfferSchema`'s `source`). */
export const MAX_SOURCE_LENGTH = 1024;
const SIDECAR_SUFFIX = '.source.json';

export function modelSourcePath(modelPath: string) {
    return modelPath + SIDECAR_SUFFIX;
}

/**
 * Whether `ref` can be kept as a model's source: a reference whose URL is known up front (`downloadUrlOf`: http(s)
 * URLs and `hf:user/repo/path.gguf[#branch]`). Tag forms (`hf:user/repo:Q4_K_M`) are not: node-llama-cpp picks their
 * file through Hugging Face's manifest while downloading and does not say which. The source is announced to every
 * peer, so URLs with credentials, a query or a fragment (where signed URLs carry their secrets) are not kept either.
 */
export function isModelSource(ref: string): ref is ModelSourceRef {
    if (ref.length === 0 || ref.length > MAX_SOURCE_LENGTH || downloadUrlOf(ref) === undefined)
        return false;
    if (!/^https?:\/\//i.test(ref))
        return true;
    try {
        const url = new URL(ref);
        return url.username === '' && url.password === '' && !ref.includes('?') && !ref.includes('#');
    } catch {
        return false;
    }
}

/**
 * Records that the file at `modelPath` was downloaded from `ref`, replacing any earlier record. A `ref` that cannot
 * be a source (see `isModelSource`) records nothing and leaves an earlier record as it is: such a file's tensors are
 * still checked by their SHA-256 wherever they are fetched. Returns whether one was written. The file appears by a
 * rename, so a reader never sees half of one.
 */
export async function recordModelSource(modelPath: string, ref: string): Promise<boolean> {
    if (!isModelSource(ref))
        return false;
    const sidecar = modelSourcePath(modelPath);
    const temporary = `${sidecar}.${process.pid}-${randomBytes(6).toString('hex')}`;
    try {
        await writeFile(temporary, JSON.stringify({source: ref}) + '\n');
        await rename(temporary, sidecar);
    } catch (error) {
        await unlink(temporary).catch(() => undefined);
        throw error;
    }
    return true;
}

/** The source recorded beside `modelPath`; undefined when there is none or it is not one (damaged, edited, too long). */
export async function modelSourceOf(modelPath: string): Promise<ModelSourceRef | undefined> {
    let text: string;
    try {
        text = await readFile(modelSourcePath(modelPath), 'utf8');
    } catch {
        return undefined;
    }
    if (text.length > MAX_SOURCE_LENGTH + 64)
        return undefined;
    try {
        const source = (JSON.parse(text) as {source?: unknown} | null)?.source;
        return typeof source === 'string' && isModelSource(source) ? source : undefined;
    } catch {
        return undefined;
    }
}
