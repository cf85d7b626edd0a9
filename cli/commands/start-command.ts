import {Command, Option} from 'commander';
import {envNameFor, nodeSettingDefaults} from '../config/node-config.js';
import {addDataDirOption} from './shared-options.js';

const collect = (value: string, previous: string[] = []) => [...previous, value];

export function settingOption(flags: string, description: string, key: string) {
    const defaults = nodeSettingDefaults() as Record<string, unknown>;
    const fallback = defaults[key];
    const shown = fallback === undefined || (Array.isArray(fallback) && fallback.length === 0) || fallback === false ? '' : ` (default: ${fallback})`;
    return new Option(flags, `${description}${shown} [env ${envNameFor(key)}]`);
}

/** Where and how the contribution log is anchored: `start` and `ledger` take the same options. */
export function addLedgerOptions(command: Command) {
    return command
        .addOption(settingOption('--chain-rpc <url>', 'JSON-RPC endpoint of the chain logs are anchored on', 'chainRpc'))
        .addOption(settingOption('--chain-id <n>', 'that chain\'s id (Dogechain: 2000), checked before anything is sent', 'chainId'))
        .addOption(settingOption('--anchor-contract <address>', 'the anchoring contract (default: the one `ledger deploy` stored)', 'anchorContract'))
        .addOption(settingOption('--anchor-interval <seconds>', 'anchor this often when the log grew', 'anchorInterval'))
        .addOption(settingOption('--max-fee-gwei <n>', 'most an anchor may pay per gas', 'maxFeeGwei'))
        .addOption(settingOption('--wallet <keystore.json>', 'encrypted JSON keystore paying for anchors, password in STRONGDOGE_WALLET_PASSWORD (or a key in STRONGDOGE_WALLET_KEY)', 'wallet'));
}

export function startCommand() {
    const command = new Command('start')
        .description('run a node: load models and serve the OpenAI-compatible API (the default command)')
        .addOption(settingOption('-m, --model <path|hf:ref|url>', 'model to serve; repeat for several', 'model').argParser(collect))
        .addOption(settingOption('-p, --port <n>', 'API port', 'port'))
        .addOption(settingOption('--host <address>', 'API address; anything but loopback exposes your node', 'host'))
        .addOption(settingOption('-t, --threads <n>', 'CPU threads for inference', 'threads'))
        .addOption(settingOption('-d, --daemon', 'run headless: JSON-lines logs on stdout', 'daemon'))
        .addOption(settingOption('--api-key <key>', 'require this bearer token from API clients (visible to other users in `ps`: prefer STRONGDOGE_API_KEY or config.json)', 'apiKey'))
        .addOption(settingOption('--parallel <n>', 'requests decoded together per model', 'parallel'))
        .addOption(settingOption('--context-size <n>', 'context tokens per request', 'contextSize'))
        .addOption(settingOption('--max-queue <n>', 'requests that may wait before new ones get 429', 'maxQueue'))
        .addOption(settingOption('--gpu <auto|off>', 'GPU offload', 'gpu'))
        .addOption(settingOption('--flash-attention <auto|on|off>', 'llama.cpp\'s flash attention: auto lets llama.cpp decide (on where supported); off is faster on CPUs as the context fills', 'flashAttention'))
        .addOption(settingOption('--log-level <level>', 'trace, debug, info, warn, error', 'logLevel'))
        .addOption(settingOption('--network <name>', 'swarm network to join', 'network'))
        .addOption(settingOption('--network-secret <secret>', 'private network: only peers with this secret are kept', 'networkSecret'))
        .addOption(settingOption('--bootstrap <host:port,...>', 'DHT bootstrap nodes instead of the public ones', 'bootstrap'))
        .addOption(settingOption('--relay <auto|on|off>', 'relay for peers that cannot reach each other: auto once the DHT finds this node reachable', 'relay'))
        .addOption(settingOption('--relay-max-mbps <n>', 'refuse new relay clients while relayed traffic is above this', 'relayMaxMbps'))
        .addOption(settingOption('--relay-through <node id,...>', 'relays to use first when a peer cannot be reached directly', 'relayThrough'))
        .addOption(settingOption('--offline', 'do not join the swarm: local models only', 'offline'))
        .addOption(settingOption('--price <n>', 'price per million tokens asked from peers (0 = free)', 'price'))
        .addOption(settingOption('--serve-peers <on|off>', 'serve other nodes\' requests', 'servePeers'))
        .addOption(settingOption('--shard-sandbox <on|off>', 'run the llama.cpp servers hosting peers\' layers in a bubblewrap sandbox; off only on a private network (--network-secret)', 'shardSandbox'))
        .addOption(settingOption('--max-peer-jobs <n>', 'peers\' requests served at once', 'maxPeerJobs'))
        .addOption(settingOption('--max-job-tokens <n>', 'most tokens generated for one peer request', 'maxJobTokens'))
        .addOption(settingOption('--max-price <n>', 'most to pay a peer per million tokens', 'maxPrice'))
        .addOption(settingOption('--prefer <local|remote>', 'serve from this node or from peers when both can', 'prefer'))
        .addOption(settingOption('--peer-timeout <seconds>', 'a serving peer silent this long is replaced mid-generation', 'peerTimeout'))
        .addOption(settingOption('--shard <auto|never|always>', 'split a model over peers\' layer shards: auto when it does not fit this node', 'shard'))
        .addOption(settingOption('--max-stages <n>', 'most stages in a pipeline, this node included', 'maxStages'))
        .addOption(settingOption('--memory-limit <bytes>', 'memory this node uses for models, e.g. 8G (default: what is free)', 'memoryLimit'))
        .addOption(settingOption('--max-shard-memory <bytes>', 'memory offered to peers for their layer shards, e.g. 4G (default: half of what is free)', 'maxShardMemory'))
        .addOption(settingOption('--rpc-dir <path>', 'where llama.cpp\'s RPC server is built (default: <data dir>/rpc)', 'rpcDir'));
    addLedgerOptions(command);
    addDataDirOption(command);
    return command.action(async (flags: Record<string, unknown> & {dataDir?: string}) => {
        const {runStart} = await import('./start-action.js');
        await runStart(flags);
    });
}
