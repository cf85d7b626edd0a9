import {mkdir, readFile, stat} from 'node:fs/promises';
import {homedir} from 'node:os';
import {join, resolve} from 'node:path';
import {configFilePath} from './config/config-file.js';

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

/**
 * What is exposed to other users of this machine, as ssh warns about keys: a data dir others can enter, and a
 * config.json that holds a secret and that others can read. Warnings only: the node still starts.
 */
export async function dataDirPermissionWarnings(dataDir: string, secretKeys: ReadonlySet<string>): Promise<string[]> {
    const warnings: string[] = [];
    const modeOf = async (path: string) => (await stat(path).catch(() => undefined))?.mode;
    const dirMode = await modeOf(dataDir);
    if (dirMode !== undefined && (dirMode & 0o077) !== 0)
        warnings.push(`the data dir ${dataDir} is open to other users (mode ${(dirMode & 0o777).toString(8)}): run chmod 700 ${dataDir}`);
    const configPath = configFilePath(dataDir);
    const configMode = await modeOf(configPath);
    if (configMode !== undefined && (configMode & 0o044) !== 0) {
        const values = await readFile(configPath, 'utf8').then((text) => JSON.parse(text) as unknown, () => undefined);
        const secrets = values !== null && typeof values === 'object' ? Object.keys(values).filter((key) => secretKeys.has(key)) : [];
        if (secrets.length > 0)
            warnings.push(`${configPath} holds ${secrets.join(' and ')} and other users can read it (mode ${(configMode & 0o777).toString(8)}): run chmod 600 ${configPath}`);
    }
    return warnings;
}
