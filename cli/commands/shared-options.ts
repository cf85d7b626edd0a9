import type {Command} from 'commander';

export function addDataDirOption(command: Command) {
    return command.option('--data-dir <dir>', 'where models, keys and config live (default: ~/.strongdoge) [env STRONGDOGE_HOME]');
}
