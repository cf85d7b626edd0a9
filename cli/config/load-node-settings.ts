import type {NodeSettings} from '../../node/node-settings.js';
import {resolveDataDir} from '../data-dir.js';
import {readConfigFile} from './config-file.js';
import {resolveNodeSettings, type SettingFlags} from './node-config.js';

/** The node's settings as every command sees them: flags, then env, then `<data dir>/config.json`. */
export async function loadNodeSettings(flags: SettingFlags & {dataDir?: string | undefined}): Promise<NodeSettings> {
    const {dataDir: dataDirFlag, ...settingFlags} = flags;
    const dataDir = resolveDataDir(dataDirFlag);
    return resolveNodeSettings(dataDir, {flags: settingFlags, env: process.env, file: await readConfigFile(dataDir)});
}
