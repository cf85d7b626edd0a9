import {mkdir} from 'node:fs/promises';
import {homedir} from 'node:os';
import {join, resolve} from 'node:path';

/** `--data-dir`, else `STRONGDOGE_HOME`, else `~/.strongdoge`. */
export function resolveDataDir(flag: string | undefined, env: NodeJS.ProcessEnv = process.env) {
    return resolve(flag ?? (env.STRONGDOGE_HOME || join(homedir(), '.strongdoge')));
}

export function modelsDir(dataDir: string) {
    return join(dataDir, 'models');
}

/** The data dir holds keys later on: only its owner may read it. */
export async function ensureDataDir(dataDir: string) {
    await mkdir(modelsDir(dataDir), {recursive: true, mode: 0o700});
}
