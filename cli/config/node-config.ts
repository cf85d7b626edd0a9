import {availableParallelism} from 'node:os';
import {z} from 'zod';
import {PUBLIC_NETWORK} from '../../swarm/network-topic.js';
import {ConfigError} from './config-error.js';

/** The port strongdoge listens on; clear of Ollama (11434), LM Studio (1234), llama-server (8080) and exo (52415). */
export const DEFAULT_PORT = 9337;
export const ENV_PREFIX = 'STRONGDOGE_';
/** Dogechain mainnet, where contribution logs are anchored unless told otherwise. */
export const DOGECHAIN_RPC = 'https://rpc.dogechain.dog';
export const DOGECHAIN_CHAIN_ID = 2000;

/**
 * llama.cpp threads: all cores but one, which stays free for the proxy and the network.
 * Oversubscribing cores collapses llama.cpp's throughput (docs/architecture.md, "Engine").
 */
export function defaultThreads() {
    return Math.max(1, availableParallelism() - 1);
}

const booleanText = z.union([
    z.boolean(),
    z.enum(['true', '1', 'yes', 'on']).transform(() => true),
    z.enum(['false', '0', 'no', 'off']).transform(() => false)
]);

const integer = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

const hostPort = z.string().regex(/^[^\s:]+:\d{1,5}$/, 'expected host:port');
const bootstrapList = z.union([
    z.array(hostPort),
    z.string().transform((text) => text.split(',').map((item) => item.trim()).filter(Boolean)).pipe(z.array(hostPort))
]).transform((items) => items.map((item) => {
    const index = item.lastIndexOf(':');
    return {host: item.slice(0, index), port: Number(item.slice(index + 1))};
}));

const BYTE_UNITS: Record<string, number> = {'': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40};

/** Bytes, also as `512M`, `8G`, `1.5GiB` (binary units). */
const byteSize = z.union([
    z.number().int().nonnegative(),
    z.string().trim().regex(/^\d+(\.\d+)?\s*([kmgt](i?b)?)?$/i, 'expected bytes, e.g. 8G or 512M').transform((text) => {
        const [, amount, unit] = /^([\d.]+)\s*([kmgt]?)/i.exec(text)!;
        return Math.floor(Number(amount) * BYTE_UNITS[unit!.toLowerCase()]!);
    })
], {error: 'expected bytes, e.g. 8G or 512M'});

const modelList = z.union([
    z.array(z.string().min(1)),
    // env and single values: comma-separated
    z.string().transform((text) => text.split(',').map((item) => item.trim()).filter(Boolean))
]);

/** Every setting of `strongdoge start`: read from flags, env `STRONGDOGE_*`, then `config.json` in the data dir. */
export const nodeSettingSchemas = {
    model: modelList,
    port: integer(0, 65535),
    host: z.string().min(1),
    threads: integer(1, 1024),
    daemon: booleanText,
    apiKey: z.string().min(1).optional(),
    parallel: integer(1, 64),
    contextSize: integer(64, 1 << 20),
    maxQueue: integer(0, 100_000),
    gpu: z.enum(['auto', 'off']),
    flashAttention: z.enum(['auto', 'on', 'off']),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']),
    network: z.string().min(1).max(128).regex(/^[\w.-]+$/, 'letters, digits, ".", "-" and "_" only'),
    networkSecret: z.string().min(8, 'at least 8 characters').optional(),
    bootstrap: bootstrapList.optional(),
    relay: z.enum(['auto', 'on', 'off']),
    relayMaxMbps: z.coerce.number().positive().max(1_000_000).optional(),
    relayThrough: z.union([z.array(z.string()), z.string().transform((text) => text.split(',').map((item) => item.trim()).filter(Boolean))])
        .pipe(z.array(z.string().regex(/^[0-9a-f]{64}$/, 'expected node ids (64 hex characters)')).max(16)),
    offline: booleanText,
    price: z.coerce.number().nonnegative().optional(),
    servePeers: booleanText,
    shardSandbox: booleanText,
    maxPeerJobs: integer(0, 1024),
    maxJobTokens: integer(1, 1 << 20),
    maxPrice: z.coerce.number().nonnegative().optional(),
    prefer: z.enum(['local', 'remote']),
    peerTimeout: z.coerce.number().positive().max(3600),
    chainRpc: z.url({protocol: /^https?$/}),
    chainId: integer(1, 2 ** 31),
    anchorContract: z.string().regex(/^0x[0-9a-fA-F]{40}$/, 'expected a 0x address').optional(),
    anchorInterval: integer(60, 7 * 24 * 3600),
    maxFeeGwei: z.coerce.number().positive().max(1_000_000),
    wallet: z.string().min(1).optional(),
    shard: z.enum(['auto', 'never', 'always']),
    maxStages: integer(2, 16),
    memoryLimit: byteSize.optional(),
    maxShardMemory: byteSize.optional(),
    rpcDir: z.string().min(1).optional()
};

export type NodeSettingKey = keyof typeof nodeSettingSchemas;
export type NodeSettings = {[K in NodeSettingKey]: z.output<typeof nodeSettingSchemas[K]>} & {dataDir: string};

export function nodeSettingDefaults(): Omit<NodeSettings, 'dataDir' | 'apiKey' | 'networkSecret' | 'bootstrap' | 'relayMaxMbps' | 'price' | 'maxPrice' | 'anchorContract' | 'wallet' | 'memoryLimit' | 'maxShardMemory' | 'rpcDir'> {
    return {
        model: [],
        port: DEFAULT_PORT,
        host: '127.0.0.1',
        threads: defaultThreads(),
        daemon: false,
        parallel: 4,
        contextSize: 4096,
        maxQueue: 64,
        gpu: 'auto',
        flashAttention: 'auto',
        logLevel: 'info',
        network: PUBLIC_NETWORK,
        relay: 'auto',
        relayThrough: [],
        offline: false,
        servePeers: true,
        shardSandbox: true,
        maxPeerJobs: 4,
        maxJobTokens: 4096,
        prefer: 'local',
        peerTimeout: 15,
        chainRpc: DOGECHAIN_RPC,
        chainId: DOGECHAIN_CHAIN_ID,
        anchorInterval: 3600,
        maxFeeGwei: 500,
        shard: 'auto',
        maxStages: 4
    };
}

/** `contextSize` → `STRONGDOGE_CONTEXT_SIZE`. */
export function envNameFor(key: string) {
    return ENV_PREFIX + key.replace(/[A-Z]/g, (letter) => `_${letter}`).toUpperCase();
}

export interface SettingSources {
    /** From command-line flags: only those the user gave. */
    flags: Partial<Record<string, unknown>>,
    env: NodeJS.ProcessEnv,
    /** Parsed `config.json`, and where it is (for messages). */
    file?: {path: string, values: Record<string, unknown>}
}

/** Settings whose values are secrets: never echoed in messages. */
export const SECRET_SETTINGS = new Set(['apiKey', 'networkSecret']);

function describe(value: unknown) {
    const text = JSON.stringify(value);
    return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** Flags win over env, env over the config file, the file over defaults. */
export function resolveNodeSettings(dataDir: string, {flags, env, file}: SettingSources): NodeSettings {
    if (file !== undefined) {
        const unknown = Object.keys(file.values).filter((key) => !Object.hasOwn(nodeSettingSchemas, key));
        if (unknown.length > 0)
            throw new ConfigError(`${file.path}: unknown key "${unknown[0]}" (known: ${Object.keys(nodeSettingSchemas).join(', ')})`);
    }

    const settings: Record<string, unknown> = {...nodeSettingDefaults(), dataDir};
    for (const [key, schema] of Object.entries(nodeSettingSchemas)) {
        const envName = envNameFor(key);
        const [value, source] =
            flags[key] !== undefined ? [flags[key], `option --${key.replace(/[A-Z]/g, (l) => `-${l.toLowerCase()}`)}`]
                : env[envName] !== undefined && env[envName] !== '' ? [env[envName], `environment variable ${envName}`]
                    : file?.values[key] !== undefined ? [file.values[key], `${file.path} key "${key}"`]
                        : [undefined, undefined];
        if (source === undefined)
            continue;
        const parsed = schema.safeParse(value);
        if (!parsed.success)
            // A secret is never echoed, not even a wrong one: it may be a real secret given to the wrong setting.
            throw new ConfigError(`invalid ${source}: ${parsed.error.issues[0]!.message}${SECRET_SETTINGS.has(key) ? '' : ` (got ${describe(value)})`}`);
        settings[key] = parsed.data;
    }
    // docs/architecture.md, "Sharding": on the public network anyone may open a shard session.
    if (settings.shardSandbox === false && settings.networkSecret === undefined)
        throw new ConfigError('--shard-sandbox off is only for a private network of peers you trust (--network-secret): on the public network, layers are hosted only in the sandbox');
    return settings as NodeSettings;
}
