import {Command} from 'commander';
import type {SettingFlags} from '../config/node-config.js';
import {addDataDirOption, addSettingOptions} from './shared-options.js';

export function startCommand() {
    const command = new Command('start')
        .description('run a node: load models and serve the OpenAI-compatible API (the default command)');
    addSettingOptions(command, 'node');
    addSettingOptions(command, 'ledger');
    addDataDirOption(command);
    return command.action(async (flags: SettingFlags & {dataDir?: string}) => {
        const {runStart} = await import('./start-action.js');
        await runStart(flags);
    });
}
