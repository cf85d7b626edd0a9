import {readFile} from 'node:fs/promises';
import {join} from 'node:path';
import {ConfigError} from './config-error.js';

export const CONFIG_FILE_NAME = 'config.json';

export function configFilePath(dataDir: string) {
    return join(dataDir, CONFIG_FILE_NAME);
}

/** Reads `config.json` from the data dir; absent is fine, unreadable or not a JSON object is a ConfigError. */
export async function readConfigFile(dataDir: string): Promise<{path: string, values: Record<string, unknown>} | undefined> {
    const path = configFilePath(dataDir);
    let text: string;
    try {
        text = await readFile(path, 'utf8');
    } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT')
            return undefined;
        throw new ConfigError(`${path}: cannot read: ${(error as Error).message}`);
    }
    let values: unknown;
    try {
        values = JSON.parse(text);
    } catch (error) {
        throw new ConfigError(`${path}: not valid JSON: ${(error as Error).message}`);
    }
    if (values === null || typeof values !== 'object' || Array.isArray(values))
        throw new ConfigError(`${path}: must hold a JSON object of settings, e.g. {"port": 9337}`);
    return {path, values: values as Record<string, unknown>};
}
