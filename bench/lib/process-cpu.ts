import {execFile} from 'node:child_process';
import {readFile} from 'node:fs/promises';
import {promisify} from 'node:util';

const run = promisify(execFile);
const CLOCK_TICKS_PER_SECOND = 100;

/** utime + stime of a process and its children, in seconds (Linux /proc). */
export async function cpuSeconds(pid: number): Promise<number> {
    const pids = [pid, ...(await run('pgrep', ['-P', String(pid)]).then(({stdout}) => stdout.trim().split('\n').filter(Boolean).map(Number), () => []))];
    let ticks = 0;
    for (const each of pids) {
        const stat = await readFile(`/proc/${each}/stat`, 'utf8').catch(() => '');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        ticks += Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
    }
    return ticks / CLOCK_TICKS_PER_SECOND;
}
