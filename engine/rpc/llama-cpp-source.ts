/** The llama.cpp that node-llama-cpp ships: its package directory, release tag and source bundle (docs/architecture.md, "Sharding"). */
import {readFile} from 'node:fs/promises';
import {dirname, join} from 'node:path';
import {fileURLToPath} from 'node:url';

/** node-llama-cpp's package directory. */
export function nodeLlamaCppDir() {
    return dirname(dirname(fileURLToPath(import.meta.resolve('node-llama-cpp'))));
}

/** The llama.cpp release node-llama-cpp ships, and its source bundle. */
export async function llamaCppSource() {
    const llamaDir = join(nodeLlamaCppDir(), 'llama');
    const info = JSON.parse(await readFile(join(llamaDir, 'llama.cpp.info.json'), 'utf8')) as {tag: string};
    return {release: info.tag, bundlePath: join(llamaDir, 'gitRelease.bundle')};
}
