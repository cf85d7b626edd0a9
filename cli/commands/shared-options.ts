import {type Command, Option} from 'commander';
import {withDefaults} from '../../core/with-defaults.js';
import {dataDirSetting, envNameFor, flagsFor, nodeSettingDefaults, nodeSettingKeys, settingDeclaration, type NodeSettingKey} from '../../node/node-settings.js';

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** What `--help` shows as a setting's default: its value (switches and lists only when set), else its words. */
function shownDefault(key: NodeSettingKey) {
    const value = nodeSettingDefaults()[key];
    if (value === true)
        return 'on';
    if (value !== undefined && value !== false && !(Array.isArray(value) && value.length === 0))
        return String(value);
    return settingDeclaration(key).defaultText;
}

export interface SettingOptionOptions {
    /** Defaults to the setting's own description; a command may say what the setting means to it. */
    description?: string | undefined,
    /** Defaults to true; false where the command gives its own description. */
    showDefault?: boolean | undefined
}

/** The commander option of a setting declared in node/node-settings.ts: its flag, default and env variable in the help. */
export function settingOption(key: NodeSettingKey, options?: SettingOptionOptions) {
    const declaration = settingDeclaration(key);
    const {description, showDefault} = withDefaults({description: declaration.description, showDefault: true}, options);
    const fallback = showDefault ? shownDefault(key) : undefined;
    const option = new Option(flagsFor(key), `${description}${fallback === undefined ? '' : ` (default: ${fallback})`} [env ${envNameFor(key)}]`);
    return declaration.repeatable ? option.argParser(collect) : option;
}

/** The options of every setting in `group`, in their declared order: `start` takes both groups, `ledger …` the ledger's. */
export function addSettingOptions(command: Command, group: 'node' | 'ledger') {
    for (const key of nodeSettingKeys.filter((each) => (settingDeclaration(each).group ?? 'node') === group))
        command.addOption(settingOption(key));
    return command;
}

export function addDataDirOption(command: Command) {
    return command.option(dataDirSetting.flags, `${dataDirSetting.description} (default: ${dataDirSetting.default}) [env ${dataDirSetting.env}]`);
}

/** Where the running node's API is (port, address, key), `--json` and the data dir: what a command that asks the node takes. */
export function addNodeAddressOptions(command: Command) {
    command
        .addOption(settingOption('port', {description: 'the running node\'s API port', showDefault: false}))
        .addOption(settingOption('host', {description: 'the running node\'s API address', showDefault: false}))
        .addOption(settingOption('apiKey', {description: 'the running node\'s API key, if it has one', showDefault: false}))
        .option('--json', 'print JSON');
    return addDataDirOption(command);
}
