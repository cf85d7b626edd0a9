import type {ChildProcess} from 'node:child_process';
import {EventEmitter} from 'node:events';
import {createInterface} from 'node:readline';
import {Backoff} from '../core/backoff.js';

export interface ProcessSupervisorOptions {
    /** What the child is, for log lines ("engine", "rpc-server"). */
    name: string,
    /** Starts one child process; called again for every restart. */
    spawn: () => ChildProcess,
    /**
     * Asked every `checkIntervalMs` while a child runs: a reason to kill it (it hangs, a job stalled), or undefined
     * when it is healthy. Defaults to none: only an exit is noticed.
     */
    healthCheck?: () => string | undefined,
    /** How often `healthCheck` runs; defaults to 2 s. */
    checkIntervalMs?: number,
    /** How long `stop()` waits after SIGTERM before SIGKILL; defaults to 3 s. */
    stopGraceMs?: number
}

/** Restart delays: quick at first, slower while the child keeps failing (docs/architecture.md, "Engine"). */
const RESTART_BACKOFF = {initialMs: 250, maxMs: 30_000, stableAfterMs: 60_000};

export const processSupervisorDefaults = {
    checkIntervalMs: 2_000,
    stopGraceMs: 3_000
};

export interface ProcessSupervisorEvents<Incoming> {
    /** A child started (the first, or a restart). */
    spawn: [child: ChildProcess],
    /** A message on the child's IPC channel. */
    message: [message: Incoming],
    /** A line the child wrote on stdout or stderr, or a line about it (watchdog kills, spawn errors). */
    log: [line: string],
    /** The child exited; `restarting` says whether another follows. */
    exit: [code: number | null, signal: NodeJS.Signals | null, restarting: boolean]
}

/**
 * Keeps one child process running until `stop()`: spawns, forwards, health-checks, restarts with backoff
 * (docs/architecture.md, "Engine"). What the child does, and what its exit means for work in flight, is the owner's.
 */
export class ProcessSupervisor<Incoming = unknown, Outgoing = unknown> extends EventEmitter<ProcessSupervisorEvents<Incoming>> {
    private readonly options: Required<Omit<ProcessSupervisorOptions, 'healthCheck'>> & Pick<ProcessSupervisorOptions, 'healthCheck'>;
    private readonly backoff = new Backoff(RESTART_BACKOFF);
    private child: ChildProcess | undefined;
    private stopped = true;
    private checkTimer: NodeJS.Timeout | undefined;
    private restartTimer: NodeJS.Timeout | undefined;
    /** Restarts so far. */
    restarts = 0;

    constructor(options: ProcessSupervisorOptions) {
        super();
        this.options = {...processSupervisorDefaults, ...options};
    }

    get pid() {
        return this.child?.pid;
    }

    start() {
        this.stopped = false;
        this.spawnChild();
        this.checkTimer = setInterval(() => this.check(), this.options.checkIntervalMs);
        this.checkTimer.unref();
    }

    /** The child is up and doing its work: the next failure restarts it quickly again once it stays up a while. */
    markStarted() {
        this.backoff.succeeded();
    }

    /** Sends on the child's IPC channel; false if there is no child to send to. */
    send(message: Outgoing) {
        if (!this.child?.connected)
            return false;
        this.child.send(message as object);
        return true;
    }

    /** Kills the running child; a new one starts unless the supervisor is stopped. */
    kill(signal: NodeJS.Signals = 'SIGKILL', reason?: string) {
        if (this.child === undefined)
            return;
        if (reason !== undefined)
            this.emit('log', `${this.options.name} watchdog: ${reason}; killing pid ${this.child.pid}`);
        this.child.kill(signal);
    }

    /** Stops for good: no restart; SIGTERM, then SIGKILL if the child does not exit in time. */
    async stop() {
        this.stopped = true;
        clearInterval(this.checkTimer);
        clearTimeout(this.restartTimer);
        const child = this.child;
        if (child === undefined || child.exitCode !== null || child.signalCode !== null)
            return;
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        const forceKill = setTimeout(() => child.kill('SIGKILL'), this.options.stopGraceMs);
        await exited;
        clearTimeout(forceKill);
    }

    private spawnChild() {
        const child = this.options.spawn();
        this.child = child;
        for (const stream of [child.stdout, child.stderr])
            if (stream)
                createInterface({input: stream}).on('line', (line) => this.emit('log', line));
        child.on('message', (message: Incoming) => {
            if (this.child === child)
                this.emit('message', message);
        });
        child.on('error', (error) => this.emit('log', `${this.options.name} process error: ${error.message}`));
        // 'close', not 'exit': it comes after the child's last output line, which often says why it exited.
        child.on('close', (code, signal) => this.handleExit(child, code, signal));
        this.emit('spawn', child);
    }

    private handleExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null) {
        if (this.child !== child)
            return;
        this.child = undefined;
        const restarting = !this.stopped;
        if (restarting)
            this.restarts++;
        this.emit('exit', code, signal, restarting);
        if (this.stopped) // also when an exit listener stopped the supervisor
            return;
        this.restartTimer = setTimeout(() => this.spawnChild(), this.backoff.failed());
    }

    private check() {
        if (this.child === undefined)
            return;
        const reason = this.options.healthCheck?.();
        if (reason !== undefined)
            this.kill('SIGKILL', reason);
    }
}
