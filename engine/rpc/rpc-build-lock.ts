/**
 * The lock that makes concurrent callers, in this process or others, build the RPC server once
 * (docs/architecture.md, "Sharding"): proper-lockfile's lock, a directory whose mtime its holder refreshes.
 */
import {readFile, rm, rmdir, writeFile} from 'node:fs/promises';
import {hostname} from 'node:os';
import {setTimeout as sleep} from 'node:timers/promises';
import {processAlive} from './process-alive.js';

/**
 * The holder refreshes the lock this often (`update`); one not refreshed for `stale` is a dead holder's and is taken
 * over. A holder that exits, even on a signal, removes it (proper-lockfile's exit hook); one killed outright on
 * this host is known dead by its pid, written beside the lock (`<lock>.owner`), and is taken over at once.
 */
const LOCK_UPDATE_MS = 5_000;
const LOCK_STALE_MS = 60_000;
/** How often a waiting caller tries again. */
const LOCK_POLL_MS = 500;

export interface BuildLockOptions {
    /** Called once, when another process holds the lock and this caller starts waiting; defaults to none. */
    onWaiting?: () => void,
    /** Called if the lock was taken over while held (this process stalled past `stale`); defaults to none. */
    onLost?: (error: Error) => void,
    /** Stops the wait. */
    signal?: AbortSignal
}

/** Runs `task` holding the lock `lockPath`, after waiting while another process holds it. */
export async function withBuildLock<T>(lockPath: string, task: () => Promise<T>, {onWaiting, onLost, signal}: BuildLockOptions = {}): Promise<T> {
    // Loaded here, not at start-up: proper-lockfile installs its exit hooks when it loads.
    const {lock} = await import('proper-lockfile');
    const ownerPath = `${lockPath}.owner`;
    const me = `${hostname()} ${process.pid}`;
    let waiting = false;
    for (;;) {
        signal?.throwIfAborted();
        // One try per call (no `retries`): the wait is this loop, which says it waits once and can be aborted.
        // proper-lockfile's default for a lost lock throws from a timer, which would end the process.
        const release = await lock(lockPath, {lockfilePath: lockPath, realpath: false, stale: LOCK_STALE_MS, update: LOCK_UPDATE_MS, retries: 0,
            onCompromised: (error) => onLost?.(error)})
            .catch((error: NodeJS.ErrnoException) => {
                if (error.code !== 'ELOCKED')
                    throw error;
                return undefined;
            });
        if (release !== undefined) {
            await writeFile(ownerPath, me);
            try {
                return await task();
            } finally {
                if (await readFile(ownerPath, 'utf8').catch(() => '') === me)
                    await rm(ownerPath, {force: true});
                // Already gone if it was lost.
                await release().catch(() => undefined);
            }
        }
        if (await takeOverFromDead(lockPath, ownerPath))
            continue;
        if (!waiting)
            onWaiting?.();
        waiting = true;
        await sleep(LOCK_POLL_MS, undefined, {signal}).catch(() => undefined);
    }
}

/** Removes the lock of a holder on this host whose process is gone; true when it did. */
async function takeOverFromDead(lockPath: string, ownerPath: string) {
    const owner = async () => (await readFile(ownerPath, 'utf8').catch(() => '')).split(' ');
    const [host, pid] = await owner();
    if (host !== hostname() || !/^\d+$/.test(pid ?? '') || processAlive(Number(pid)))
        return false;
    // Read again just before: another waiter may have taken it over and be its holder now.
    const [hostNow, pidNow] = await owner();
    if (hostNow !== host || pidNow !== pid)
        return false;
    await rmdir(lockPath).catch(() => undefined);
    await rm(ownerPath, {force: true});
    return true;
}
