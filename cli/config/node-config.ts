import {withDefaults} from '../../core/with-defaults.js';
import {
    envNameFor, flagNameFor, NO_DRAFT_MODEL, nodeSettingDeclarations, nodeSettingDefaults, nodeSettingKeys, SECRET_SETTINGS, settingDeclaration,
    type NodeSettingKey, type NodeSettings
} from '../../node/node-settings.js';
import {ConfigError} from './config-error.js';

/** Values by setting, as a source gives them: text from flags and env, JSON from `config.json`. */
export type SettingFlags = Partial<Record<NodeSettingKey, unknown>>;

export interface SettingSources {
    /** From command-line flags: only those the user gave. */
    flags: SettingFlags,
    env: NodeJS.ProcessEnv,
    /** Parsed `config.json`, and where it is (for messages). */
    file?: {path: string, values: Record<string, unknown>}
}

function describe(value: unknown) {
    const text = JSON.stringify(value);
    return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** The first source that gives `key`, and its name for messages; an empty environment variable gives nothing. */
function sourceOf(key: NodeSettingKey, {flags, env, file}: SettingSources): [unknown, string] | undefined {
    const envName = envNameFor(key);
    if (flags[key] !== undefined)
        return [flags[key], `option ${flagNameFor(key)}`];
    if (env[envName] !== undefined && env[envName] !== '')
        return [env[envName], `environment variable ${envName}`];
    if (file !== undefined && Object.hasOwn(file.values, key) && file.values[key] !== undefined)
        return [file.values[key], `${file.path} key "${key}"`];
    return undefined;
}

/** Flags win over env, env over the config file, the file over defaults (README, "Configuration"). */
export function resolveNodeSettings(dataDir: string, sources: SettingSources): NodeSettings {
    const {file} = sources;
    if (file !== undefined) {
        const unknown = Object.keys(file.values).filter((key) => !Object.hasOwn(nodeSettingDeclarations, key));
        if (unknown.length > 0)
            throw new ConfigError(`${file.path}: unknown key "${unknown[0]}" (known: ${nodeSettingKeys.join(', ')})`);
    }

    const given: SettingFlags = {};
    for (const key of nodeSettingKeys) {
        const [value, source] = sourceOf(key, sources) ?? [];
        if (source === undefined)
            continue;
        const parsed = settingDeclaration(key).schema.safeParse(value);
        if (!parsed.success)
            // A secret is never echoed, not even a wrong one: it may be a real secret given to the wrong setting.
            throw new ConfigError(`invalid ${source}: ${parsed.error.issues[0]!.message}${SECRET_SETTINGS.has(key) ? '' : ` (got ${describe(value)})`}`);
        given[key] = parsed.data;
    }
    const settings = {...withDefaults(nodeSettingDefaults(), given), dataDir} as NodeSettings;
    // docs/architecture.md, "Sharding": on the public network anyone may open a shard session.
    if (!settings.shardSandbox && settings.networkSecret === undefined)
        throw new ConfigError('--shard-sandbox off is only for a private network of peers you trust (--network-secret): on the public network, layers are hosted only in the sandbox');
    checkDraftModels(settings);
    checkDraftLengths(settings);
    return settings;
}

/**
 * Draft models pair with models by position, so there is one per model or none at all: with several models a lone
 * draft would serve whichever came first by accident (docs/architecture.md, "Speculative decoding").
 */
function checkDraftModels({model: models, draftModel: drafts, speculative}: Pick<NodeSettings, 'model' | 'draftModel' | 'speculative'>) {
    if (drafts.length > 0 && models.length === 0)
        throw new ConfigError('--draft-model drafts for a --model: give the model it drafts for');
    if (drafts.length > 0 && drafts.length !== models.length)
        throw new ConfigError(`--draft-model pairs with --model by position: give one per model, \`${NO_DRAFT_MODEL}\` for a model without one`
            + ` (got ${drafts.length} for ${models.length} models)`);
    if (speculative === 'draft' && drafts.every((draft) => draft === NO_DRAFT_MODEL))
        throw new ConfigError('--speculative draft needs a --draft-model; auto drafts with lookup where none is given');
}

function checkDraftLengths({draftMin, draftMax}: Pick<NodeSettings, 'draftMin' | 'draftMax'>) {
    if (draftMin > draftMax)
        throw new ConfigError(`--draft-min (${draftMin}) is more than --draft-max (${draftMax})`);
}
