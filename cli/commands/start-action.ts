import {loadOrCreateIdentity} from '../../swarm/node-identity.js';
import {DashboardStore} from '../../tui/dashboard-store.js';
import {renderDashboard} from '../../tui/dashboard-app.js';
import {ConfigError} from '../config/config-error.js';
import {loadNodeSettings} from '../config/load-node-settings.js';
import type {SettingFlags} from '../config/node-config.js';
import {dashboardLogSink, feedDashboard} from '../../node/dashboard-feed.js';
import {dataDirPermissionWarnings, ensureDataDir} from '../data-dir.js';
import {createLogger} from '../../node/logger.js';
import {resolveModelRefs} from '../model-refs.js';
import {walletPassword} from '../prompt.js';
import {NO_DRAFT_MODEL, SECRET_SETTINGS} from '../../node/node-settings.js';
import {packageInfo} from '../../node/package-info.js';
import {StrongdogeNode} from '../../node/strongdoge-node.js';

/** A graceful stop may take this long before the process exits anyway. */
const SHUTDOWN_TIMEOUT_MS = 15_000;

/** `strongdoge start`: loaded only when the command runs, so `--help` and `status` start fast. */
export async function runStart(flags: SettingFlags & {dataDir?: string}) {
    const settings = await loadNodeSettings(flags);
    const {dataDir} = settings;
    await ensureDataDir(dataDir);
    // A person at a terminal gets the dashboard (logs feed its error line); pipes and daemons get log lines.
    const store = !settings.daemon && process.stdout.isTTY && process.stdin.isTTY ? new DashboardStore() : undefined;
    const logger = createLogger({
        level: settings.logLevel,
        format: settings.daemon || store ? 'json' : 'human',
        ...(store && {output: dashboardLogSink(store)})
    });
    logger.info({dataDir, version: packageInfo.version}, 'strongdoge starting');

    const {identity, created, permissionsFixed} = await loadOrCreateIdentity(dataDir).catch((error: Error) => {
        throw new ConfigError(error.message);
    });
    if (created)
        logger.info({nodeId: identity.shortId}, 'created a new node identity');
    if (permissionsFixed)
        logger.warn('the identity file was readable by others: its mode is now 0600');
    for (const warning of await dataDirPermissionWarnings(dataDir, SECRET_SETTINGS))
        logger.warn(warning);
    // Draft models are neither fetched nor loaded where nothing drafts with them.
    const draftsUsed = settings.speculative === 'auto' || settings.speculative === 'draft';
    if (!draftsUsed && settings.draftModel.some((draft) => draft !== NO_DRAFT_MODEL))
        logger.warn({speculative: settings.speculative}, `--draft-model is not loaded: --speculative ${settings.speculative} does not draft with it`);
    const models = await resolveModelRefs(settings.model, dataDir,
        {logger, showProgressBar: !settings.daemon && process.stderr.isTTY, drafts: draftsUsed ? settings.draftModel : []});
    // Asked before the dashboard takes the terminal; a daemon reads STRONGDOGE_WALLET_PASSWORD.
    const password = settings.daemon ? process.env.STRONGDOGE_WALLET_PASSWORD : await walletPassword(settings);
    const node = new StrongdogeNode({settings, models, identity, logger, walletPassword: password});
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
}
