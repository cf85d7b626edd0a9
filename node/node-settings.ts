import {availableParallelism} from 'node:os';
import {z} from 'zod';
import {MAX_DRAFT_TOKENS} from '../core/inference-types.js';
import {PUBLIC_NETWORK} from '../swarm/network-topic.js';
import {bootstrapList, booleanText, byteSize, integer, modelList, nodeIdList} from './setting-schemas.js';

/**
 * Every setting of `strongdoge start`, declared once: its value type, default, flag, and the words of `--help` and
 * of README's "Configuration" table. The CLI builds its options, reads flags, env `STRONGDOGE_*` and `config.json`
 * (cli/config/), and renders README's table from these; the node takes the resolved `NodeSettings`.
 */

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

export interface SettingDeclaration<S extends z.ZodType = z.ZodType> {
    /** Parses the flag's text, the environment variable's text and the `config.json` value alike. */
    schema: S,
    /** The value when no source gives one, or a function computing it when settings are read. Defaults to none: `undefined`. */
    default?: z.output<S> | (() => z.output<S>),
    /** What README says the default is (markdown), and `--help` where there is no value to show. Defaults to the value. */
    defaultText?: string,
    /** The flag's one-letter alias, e.g. `m` for `-m`. Defaults to none. */
    short?: string,
    /** The flag's argument as `--help` shows it, e.g. `<n>`. Defaults to none: the flag is a switch. */
    argument?: string,
    /** The flag may be repeated; the environment variable is comma-separated, the `config.json` key a list. Defaults to false. */
    repeatable?: boolean,
    /** Its line in `strongdoge start --help`. */
    description: string,
    /** README's short note after the flag. Defaults to none. */
    note?: string,
    /** Never echoed in messages, and worth a warning in a file others can read. Defaults to false. */
    secret?: boolean,
    /** `ledger`: also an option of `strongdoge ledger …`. Defaults to the node's own settings. */
    group?: 'ledger'
}

type Declared<S extends z.ZodType> = Omit<SettingDeclaration<S>, 'schema'>;

/** A declaration, typed so that `NodeSettings` knows which settings always have a value. */
function setting<S extends z.ZodType>(schema: S, declaration: Declared<S> & Pick<Required<Declared<S>>, 'default'>): SettingDeclaration<S> & {default: unknown};
function setting<S extends z.ZodType>(schema: S, declaration: Declared<S>): SettingDeclaration<S>;
function setting<S extends z.ZodType>(schema: S, declaration: Declared<S>): SettingDeclaration<S> {
    return {schema, ...declaration};
}

/** In README's and `--help`'s order; the `config.json` key is the name, the flag and env variable follow from it. */
export const nodeSettingDeclarations = {
    model: setting(modelList, {default: [], short: 'm', argument: '<path|name|hf:ref|url>', repeatable: true,
        description: 'model to serve; repeat for several'}),
    draftModel: setting(modelList, {default: [], argument: '<path|name|hf:ref|url>', repeatable: true,
        description: 'a small model of the same vocabulary that drafts tokens for speculative decoding; one per --model, the Nth for'
            + ' the Nth (`none` for a model without one)',
        note: 'the Nth for the Nth `--model`, `none` for none'}),
    speculative: setting(z.enum(['auto', 'draft', 'lookup', 'off']), {default: 'auto', argument: '<auto|draft|lookup|off>',
        description: 'speculative decoding: auto = the draft model where one is given, else n-gram lookup in the prompt and text so far',
        note: 'auto: the draft model where given, else n-gram lookup'}),
    draftMin: setting(integer(0, MAX_DRAFT_TOKENS), {default: 0, argument: '<n>',
        description: 'fewest tokens drafted per pass where a request speculates, even where drafting does not pay',
        note: 'as llama-server\'s `--draft-min`'}),
    draftMax: setting(integer(1, MAX_DRAFT_TOKENS), {default: 12, argument: '<n>', description: 'most tokens drafted per pass; fewer are drafted where more do not pay',
        note: 'as llama-server\'s `--draft-max`'}),
    port: setting(integer(0, 65535), {default: DEFAULT_PORT, short: 'p', argument: '<n>', description: 'API port'}),
    host: setting(z.string().min(1), {default: '127.0.0.1', argument: '<address>', description: 'API address; anything but loopback exposes your node'}),
    threads: setting(integer(1, 1024), {default: defaultThreads, defaultText: 'CPU cores − 1', short: 't', argument: '<n>',
        description: 'CPU threads for inference'}),
    daemon: setting(booleanText, {default: false, short: 'd', description: 'run headless: JSON-lines logs on stdout'}),
    apiKey: setting(z.string().min(1), {argument: '<key>', secret: true,
        description: 'require this bearer token from API clients (visible to other users in `ps`: prefer STRONGDOGE_API_KEY or config.json)'}),
    parallel: setting(integer(1, 64), {default: 4, argument: '<n>', description: 'requests decoded together per model', note: 'requests decoded together per model'}),
    contextSize: setting(integer(64, 1 << 20), {default: 4096, argument: '<n>', description: 'context tokens per request', note: 'tokens per request'}),
    maxQueue: setting(integer(0, 100_000), {default: 64, argument: '<n>', description: 'requests that may wait before new ones get 429'}),
    gpu: setting(z.enum(['auto', 'off']), {default: 'auto', argument: '<auto|off>', description: 'GPU offload'}),
    flashAttention: setting(z.enum(['auto', 'on', 'off']), {default: 'auto', defaultText: '`auto`: llama.cpp decides (on where supported)',
        argument: '<auto|on|off>',
        description: 'llama.cpp\'s flash attention: auto lets llama.cpp decide (on where supported); off is faster on CPUs as the context fills',
        note: 'off: faster on a CPU as the context fills; repeats of a request may differ'}),
    logLevel: setting(z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']), {default: 'info', argument: '<level>',
        description: 'trace, debug, info, warn, error'}),
    network: setting(z.string().min(1).max(128).regex(/^[\w.-]+$/, 'letters, digits, ".", "-" and "_" only'), {default: PUBLIC_NETWORK,
        argument: '<name>', description: 'swarm network to join'}),
    networkSecret: setting(z.string().min(8, 'at least 8 characters'), {argument: '<secret>', secret: true,
        description: 'private network: only peers with this secret are kept', note: 'private network'}),
    bootstrap: setting(bootstrapList, {defaultText: 'Hyperswarm\'s public bootstrap', argument: '<host:port,...>',
        description: 'DHT bootstrap nodes instead of the public ones'}),
    relay: setting(z.enum(['auto', 'on', 'off']), {default: 'auto', defaultText: '`auto`: once the DHT finds this node reachable',
        argument: '<auto|on|off>', description: 'relay for peers that cannot reach each other: auto once the DHT finds this node reachable',
        note: 'relay for peers that cannot punch holes'}),
    relayMaxMbps: setting(z.coerce.number().positive().max(1_000_000), {defaultText: 'no cap', argument: '<n>',
        description: 'refuse new relay clients while relayed traffic is above this', note: 'refuse new relay clients above it'}),
    relayThrough: setting(nodeIdList, {default: [], defaultText: 'none: relays peers announce', argument: '<node id,...>',
        description: 'relays to use first when a peer cannot be reached directly', note: 'relays to use first'}),
    maxPeers: setting(integer(1, 4096), {default: 64, argument: '<n>',
        description: 'most peer connections at once, the network topic\'s and those opened on demand alike; at the limit an idle one makes room,'
            + ' and one carrying a job, a pipeline stage or a relay is never closed for it',
        note: 'idle ones make room; busy ones stay'}),
    idlePeerTimeout: setting(integer(0, 7 * 24 * 3600), {default: 300, argument: '<seconds>',
        description: 'a connection opened on demand (not one of the network topic\'s) with nothing running over it this long is closed (0 = never)',
        note: 'for connections opened on demand; 0 = never'}),
    offline: setting(booleanText, {default: false, description: 'do not join the swarm: local models only', note: 'no swarm'}),
    price: setting(z.coerce.number().nonnegative().max(1e12), {defaultText: 'free', argument: '<DOGE>',
        description: 'DOGE per million tokens (prompt and completion) asked from peers, paid through payment channels (0 = free)',
        note: 'DOGE per million tokens, paid by peers'}),
    servePeers: setting(booleanText, {default: true, argument: '<on|off>', description: 'serve other nodes\' requests'}),
    shardSandbox: setting(booleanText, {default: true, argument: '<on|off>',
        description: 'run the llama.cpp servers hosting peers\' layers in a bubblewrap sandbox; off only on a private network (--network-secret)',
        note: 'host peers\' layers only in the sandbox; `off` needs `--network-secret`'}),
    fetchLayers: setting(booleanText, {default: true, argument: '<on|off>',
        description: 'download the layers a coordinator names from the model\'s public source; off on a metered link (the coordinator sends them)',
        note: 'download peers\' layers from the model\'s source'}),
    maxPeerJobs: setting(integer(0, 1024), {default: 4, argument: '<n>', description: 'peers\' requests served at once', note: 'peers\' requests at once'}),
    maxJobTokens: setting(integer(1, 1 << 20), {default: 4096, argument: '<n>', description: 'most tokens generated for one peer request',
        note: 'per peer request'}),
    maxPrice: setting(z.coerce.number().nonnegative(), {defaultText: 'any', argument: '<DOGE>', description: 'most to pay a peer per million tokens, in DOGE',
        note: 'most you pay a peer per million tokens'}),
    prefer: setting(z.enum(['local', 'remote']), {default: 'local', argument: '<local|remote>', description: 'serve from this node or from peers when both can'}),
    peerTimeout: setting(z.coerce.number().positive().max(3600), {default: 15, argument: '<seconds>',
        description: 'a serving peer silent this long is replaced mid-generation', note: 'most silence before a serving peer is replaced'}),
    shard: setting(z.enum(['auto', 'never', 'always']), {default: 'auto', defaultText: '`auto` (when it does not fit)', argument: '<auto|never|always>',
        description: 'split a model over peers\' layer shards: auto when it does not fit this node', note: 'split a model over peers\' layer shards'}),
    maxStages: setting(integer(2, 16), {default: 4, argument: '<n>', description: 'most stages in a pipeline, this node included',
        note: 'per pipeline, this node included'}),
    spareStages: setting(integer(0, 8), {default: 0, argument: '<n>', description: 'hosts outside a pipeline that download a stage\'s layers ahead, so a failover needs no transfer',
        note: 'per pipeline: ready spares for failover'}),
    memoryLimit: setting(byteSize, {defaultText: 'what is free', argument: '<bytes>', description: 'memory this node uses for models, e.g. 8G',
        note: 'memory for models here, e.g. `8G`'}),
    maxShardMemory: setting(byteSize, {defaultText: 'half of what is free', argument: '<bytes>',
        description: 'memory offered to peers for their layer shards, e.g. 4G', note: 'offered to peers\' layers'}),
    rpcDir: setting(z.string().min(1), {defaultText: '`<data dir>/rpc`', argument: '<path>', description: 'where llama.cpp\'s RPC server is built',
        note: 'llama.cpp\'s RPC server build'}),
    peerLogMaxRecords: setting(integer(1, 2 ** 40), {default: 2_000_000, argument: '<n>',
        description: 'most records of a peer\'s log this node downloads to verify it', note: 'longer peer logs are not downloaded'}),
    peerLogMaxBytes: setting(byteSize, {default: 2 * 2 ** 30, defaultText: '`2G`', argument: '<bytes>',
        description: 'most bytes of one peer\'s log this node downloads to verify it, e.g. 2G', note: 'larger peer logs are not downloaded'}),
    peerLogsMaxBytes: setting(byteSize, {default: 8 * 2 ** 30, defaultText: '`8G`', argument: '<bytes>',
        description: 'most bytes of peers\' logs kept in the data dir; others\' copies are removed to make room', note: 'peers\' logs kept here in all'}),
    peerLogRate: setting(byteSize, {default: 16 * 2 ** 20, defaultText: '`16M`', argument: '<bytes>',
        description: 'log replication bytes per second with one peer, each way; a peer asking for more is cut off from the log',
        note: 'per peer and second, each way'}),
    chainRpc: setting(z.url({protocol: /^https?$/}), {default: DOGECHAIN_RPC, argument: '<url>', group: 'ledger',
        description: 'JSON-RPC endpoint of the chain logs are anchored on', note: 'where logs are anchored'}),
    chainId: setting(integer(1, 2 ** 31), {default: DOGECHAIN_CHAIN_ID, defaultText: '`2000` (Dogechain)', argument: '<n>', group: 'ledger',
        description: 'that chain\'s id (Dogechain: 2000), checked before anything is sent', note: 'checked before anything is sent'}),
    trustedPeers: setting(nodeIdList, {default: [], defaultText: 'none', argument: '<node id,...>', group: 'ledger',
        description: 'nodes whose receipts this node stands behind: work done for them (or for this node) counts as witnessed points',
        note: 'witnessed points'}),
    anchorContract: setting(z.string().regex(/^0x[0-9a-fA-F]{40}$/, 'expected a 0x address'), {defaultText: 'the one `ledger deploy` stored',
        argument: '<address>', group: 'ledger', description: 'the anchoring contract'}),
    anchorContractBlock: setting(integer(0, 2 ** 48), {defaultText: 'the one `ledger deploy` stored, else 0', argument: '<n>', group: 'ledger',
        description: 'the block the anchoring contract was deployed in: reading its events starts there', note: 'event reads start there'}),
    confirmations: setting(integer(1, 100_000), {default: 30, argument: '<n>', group: 'ledger',
        description: 'blocks on top of an anchor or authorization, its own included, before it counts (default 30: a minute of Dogechain\'s'
            + ' ~2 s blocks, a wide margin over the few blocks an RPC node lags or forks behind its validators)',
        note: 'before an anchor counts: a minute of Dogechain\'s ~2 s blocks'}),
    chainLogBlocks: setting(integer(1, 1_000_000), {default: 10_000, argument: '<n>', group: 'ledger',
        description: 'blocks per eth_getLogs call when reading anchors; halved while the RPC refuses a range',
        note: 'per eth_getLogs call; halved when refused'}),
    anchorInterval: setting(integer(60, 7 * 24 * 3600), {default: 3600, argument: '<seconds>', group: 'ledger',
        description: 'anchor this often when the log grew', note: 'only when the log grew'}),
    maxFeeGwei: setting(z.coerce.number().positive().max(1_000_000), {default: 500, argument: '<n>', group: 'ledger',
        description: 'most an anchor, a redeem or a channel call may pay per gas', note: 'most a transaction pays per gas'}),
    paymentContract: setting(z.string().regex(/^0x[0-9a-fA-F]{40}$/, 'expected a 0x address'), {defaultText: 'the one `ledger deploy` stored',
        argument: '<address>', group: 'ledger', description: 'the payment channel contract a network pays through', note: 'where peers are paid'}),
    autoDeposit: setting(z.coerce.number().nonnegative().max(1e12), {defaultText: 'off', argument: '<DOGE>', group: 'ledger',
        description: 'open and top up payment channels to priced peers as jobs need them, depositing at most this much DOGE in all',
        note: 'most deposited in channels on this node\'s own'}),
    redeemInterval: setting(integer(1, 12 * 3600), {default: 3600, argument: '<seconds>', group: 'ledger',
        description: 'redeem the vouchers peers paid with this often (at most 12 h: a payer that asks to close leaves 24 h to redeem)',
        note: 'redeems vouchers in one batch; at most 12 h'}),
    redeemThreshold: setting(z.coerce.number().nonnegative().max(1e12), {default: 10, argument: '<DOGE>', group: 'ledger',
        description: 'redeem at once when peers owe this node more than this much DOGE in vouchers not redeemed', note: 'redeem at once above it'}),
    wallet: setting(z.string().min(1), {argument: '<keystore.json>', group: 'ledger',
        description: 'encrypted JSON keystore of the wallet that anchors, pays peers and is paid, password in STRONGDOGE_WALLET_PASSWORD (or a key in STRONGDOGE_WALLET_KEY)',
        note: 'encrypted; password in `STRONGDOGE_WALLET_PASSWORD`'})
};

type Declarations = typeof nodeSettingDeclarations;
export type NodeSettingKey = keyof Declarations;
type SettingValue<D> = D extends {schema: infer S extends z.ZodType}
    ? D extends {default: unknown} ? z.output<S> : z.output<S> | undefined
    : never;
export type NodeSettings = {[K in NodeSettingKey]: SettingValue<Declarations[K]>} & {dataDir: string};

export const nodeSettingKeys = Object.keys(nodeSettingDeclarations) as NodeSettingKey[];

export function settingDeclaration(key: NodeSettingKey): SettingDeclaration {
    return nodeSettingDeclarations[key];
}

/** Settings whose values are secrets: never echoed in messages. */
export const SECRET_SETTINGS: ReadonlySet<string> = new Set(nodeSettingKeys.filter((key) => settingDeclaration(key).secret));

/** The settings that have a default, with it. */
export function nodeSettingDefaults(): Partial<NodeSettings> {
    return Object.fromEntries(nodeSettingKeys.flatMap((key) => {
        const fallback = settingDeclaration(key).default;
        return fallback === undefined ? [] : [[key, typeof fallback === 'function' ? fallback() : fallback]];
    }));
}

/** `contextSize` → `STRONGDOGE_CONTEXT_SIZE`. */
export function envNameFor(key: string) {
    return ENV_PREFIX + key.replace(/[A-Z]/g, (letter) => `_${letter}`).toUpperCase();
}

/** `contextSize` → `--context-size`. */
export function flagNameFor(key: string) {
    return `--${key.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)}`;
}

/** The flag with its alias and argument, as commander takes it: `-m, --model <path|name|hf:ref|url>`. */
export function flagsFor(key: NodeSettingKey) {
    const {short, argument} = settingDeclaration(key);
    return `${short === undefined ? '' : `-${short}, `}${flagNameFor(key)}${argument === undefined ? '' : ` ${argument}`}`;
}

/** A `--draft-model` value that gives the model in its place none. */
export const NO_DRAFT_MODEL = 'none';

/** Where models, keys and `config.json` live: a flag and env only, since the file is read from there. */
export const dataDirSetting = {flags: '--data-dir <dir>', env: 'STRONGDOGE_HOME', default: '~/.strongdoge', description: 'where models, keys and config live'};

/** Read from the environment only, and documented with the settings. */
export const environmentOnlySettings = [
    {env: 'STRONGDOGE_WALLET_KEY', note: 'a private key, for anchoring; never in a file'}
];
