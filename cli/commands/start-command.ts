import {Command, Option} from 'commander';
import {loadOrCreateIdentity} from '../../swarm/node-identity.js';
import {ConfigError} from '../config/config-error.js';
import {readConfigFile} from '../config/config-file.js';
import {nodeSettingDefaults, resolveNodeSettings, envNameFor} from '../config/node-config.js';
import {ensureDataDir, resolveDataDir} from '../data-dir.js';
import {createLogger} from '../logger.js';
import {resolveModelRefs} from '../model-refs.js';
import {StrongdogeNode} from '../strongdoge-node.js';
import {DashboardStore} from '../../tui/dashboard-store.js';
import {renderDashboard} from '../../tui/dashboard-app.js';
import {dashboardLogSink, feedDashboard} from '../dashboard-feed.js';
import {addDataDirOption} from './shared-options.js';

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** A graceful stop may take this long before the process exits anyway. */
const SHUTDOWN_TIMEOUT_MS = 15_000;

function settingOption(flags: string, description: string, key: string) {
    const defaults = nodeSettingDefaults() as Record<string, unknown>;
    const fallback = defaults[key];
    const shown = fallback === undefined || (Array.isArray(fallback) && fallback.length === 0) || fallback === false ? '' : ` (default: ${fallback})`;
    return new Option(flags, `${description}${shown} [env ${envNameFor(key)}]`);
}

export function startCommand() {
    const command = new Command('start')
        .description('run a node: load models and serve the OpenAI-compatible API (the default command)')
        .addOption(settingOption('-m, --model <path|hf:ref|url>', 'model to serve; repeat for several', 'model').argParser(collect))
        .addOption(settingOption('-p, --port <n>', 'API port', 'port'))
        .addOption(settingOption('--host <address>', 'API address; anything but loopback exposes your node', 'host'))
        .addOption(settingOption('-t, --threads <n>', 'CPU threads for inference', 'threads'))
        .addOption(settingOption('-d, --daemon', 'run headless: JSON-lines logs on stdout', 'daemon'))
        .addOption(settingOption('--api-key <key>', 'require this bearer token from API clients', 'apiKey'))
        .addOption(settingOption('--parallel <n>', 'requests decoded together per model', 'parallel'))
        .addOption(settingOption('--context-size <n>', 'context tokens per request', 'contextSize'))
        .addOption(settingOption('--max-queue <n>', 'requests that may wait before new ones get 429', 'maxQueue'))
        .addOption(settingOption('--gpu <auto|off>', 'GPU offload', 'gpu'))
        .addOption(settingOption('--log-level <level>', 'trace, debug, info, warn, error', 'logLevel'))
        .addOption(settingOption('--network <name>', 'swarm network to join', 'network'))
        .addOption(settingOption('--network-secret <secret>', 'private network: only peers with this secret are kept', 'networkSecret'))
        .addOption(settingOption('--bootstrap <host:port,...>', 'DHT bootstrap nodes instead of the public ones', 'bootstrap'))
        .addOption(settingOption('--offline', 'do not join the swarm: local models only', 'offline'))
        .addOption(settingOption('--price <n>', 'price per million tokens asked from peers (0 = free)', 'price'))
        .addOption(settingOption('--serve-peers <on|off>', 'serve other nodes\' requests', 'servePeers'))
        .addOption(settingOption('--max-peer-jobs <n>', 'peers\' requests served at once', 'maxPeerJobs'))
        .addOption(settingOption('--max-job-tokens <n>', 'most tokens generated for one peer request', 'maxJobTokens'))
        .addOption(settingOption('--max-price <n>', 'most to pay a peer per million tokens', 'maxPrice'))
        .addOption(settingOption('--prefer <local|remote>', 'serve from this node or from peers when both can', 'prefer'))
        .addOption(settingOption('--peer-timeout <seconds>', 'a serving peer silent this long is replaced mid-generation', 'peerTimeout'));
    addDataDirOption(command);
    return command.action(async (flags: Record<string, unknown> & {dataDir?: string}) => {
        const dataDir = resolveDataDir(flags.dataDir);
        const {dataDir: _ignored, ...settingFlags} = flags;
        const settings = resolveNodeSettings(dataDir, {flags: settingFlags, env: process.env, file: await readConfigFile(dataDir)});
        await ensureDataDir(dataDir);
        // A person at a terminal gets the dashboard (logs feed its error line); pipes and daemons get log lines.
        const store = !settings.daemon && process.stdout.isTTY && process.stdin.isTTY ? new DashboardStore() : undefined;
        const logger = createLogger({
            level: settings.logLevel,
            format: settings.daemon || store ? 'json' : 'human',
            ...(store && {output: dashboardLogSink(store)})
        });
        logger.info({dataDir, version: command.parent?.version()}, 'strongdoge starting');

        const {identity, created, permissionsFixed} = await loadOrCreateIdentity(dataDir).catch((error: Error) => {
            throw new ConfigError(error.message);
        });
        if (created)
            logger.info({nodeId: identity.shortId}, 'created a new node identity');
        if (permissionsFixed)
            logger.warn('the identity file was readable by others: its mode is now 0600');
        const models = await resolveModelRefs(settings.model, dataDir, {logger, showProgressBar: !settings.daemon && process.stderr.isTTY});
        const node = new StrongdogeNode(settings, models, identity, logger);
        let dashboard: {unmount(): void} | undefined;
        const stopFeed = store && feedDashboard(node, store, settings.apiKey !== undefined);
        const leaveDashboard = () => {
            stopFeed?.();
            dashboard?.unmount();
            dashboard = undefined;
        };

        let stopping = false;
        const stop = (signal: NodeJS.Signals | 'q') => {
            if (stopping) {
                logger.warn({signal}, 'second signal: exiting now');
                leaveDashboard();
                process.exit(1);
            }
            stopping = true;
            logger.info({signal}, 'shutting down');
            setTimeout(() => {
                logger.error('shutdown took too long: exiting');
                leaveDashboard();
                process.exit(1);
            }, SHUTDOWN_TIMEOUT_MS).unref();
            node.stop().then(() => {
                logger.info('stopped');
                leaveDashboard();
                process.exit(0);
            }, (error: Error) => {
                logger.error({err: error}, 'error while stopping');
                leaveDashboard();
                process.exit(1);
            });
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);

        if (store)
            dashboard = renderDashboard(store, () => stop('q'));
        try {
            await node.start();
        } catch (error) {
            logger.fatal({err: error}, `cannot start: ${(error as Error).message}`);
            leaveDashboard();
            if (store)
                process.stderr.write(`strongdoge: cannot start: ${(error as Error).message}\n`);
            await node.stop().catch(() => undefined);
            process.exit(1);
        }
    });
}
