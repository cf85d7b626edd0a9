import {spawn} from 'node:child_process';
import {once} from 'node:events';
import {setTimeout as sleep} from 'node:timers/promises';
import test from 'ava';
import {ProcessSupervisor} from '../engine/process-supervisor.js';
import {waitFor} from '../harness/cli-process.js';
import {processAlive} from '../engine/rpc/process-alive.js';

/** A real child process running `script` under Node. */
const node = (script: string) => () => spawn(process.execPath, ['-e', script], {stdio: ['ignore', 'pipe', 'pipe']});

test('a child that crashes is restarted, its output forwarded line by line', async (t) => {
    const supervisor = new ProcessSupervisor({name: 'crasher', spawn: node('console.log("up"); console.error("oops"); setTimeout(() => process.exit(3), 50)')});
    const lines: string[] = [];
    const exits: [number | null, boolean][] = [];
    supervisor.on('log', (line) => lines.push(line));
    supervisor.on('exit', (code, _signal, restarting) => exits.push([code, restarting]));
    supervisor.start();
    t.teardown(() => supervisor.stop());
    await waitFor(() => supervisor.restarts >= 2, 10_000);
    t.deepEqual(exits.slice(0, 2), [[3, true], [3, true]]);
    t.true(lines.filter((line) => line === 'up').length >= 2);
    t.true(lines.includes('oops'));
});

test('a failing health check kills the child, with the reason logged, and a new one starts', async (t) => {
    let healthy = true;
    const supervisor = new ProcessSupervisor({name: 'hanger', spawn: node('setInterval(() => {}, 1000)'), healthCheck: () => healthy ? undefined : 'it hangs', checkIntervalMs: 20});
    const lines: string[] = [];
    supervisor.on('log', (line) => lines.push(line));
    const spawned: number[] = [];
    supervisor.on('spawn', (child) => spawned.push(child.pid!));
    supervisor.start();
    t.teardown(() => supervisor.stop());
    const first = supervisor.pid!;
    healthy = false;
    const [, signal] = await once(supervisor, 'exit') as [number | null, NodeJS.Signals | null, boolean];
    healthy = true;
    t.is(signal, 'SIGKILL');
    t.true(lines.some((line) => line === `hanger watchdog: it hangs; killing pid ${first}`));
    await waitFor(() => spawned.length === 2, 5_000);
    t.not(supervisor.pid, first);
    t.true(processAlive(supervisor.pid!));
});

test('stop() ends the child for good: SIGTERM, then SIGKILL for a child that ignores it', async (t) => {
    const supervisor = new ProcessSupervisor({name: 'stubborn', spawn: node('process.on("SIGTERM", () => {}); console.log("ready"); setInterval(() => {}, 1000)'), stopGraceMs: 200});
    supervisor.start();
    await once(supervisor, 'log'); // the handler is installed
    const pid = supervisor.pid!;
    const exit = once(supervisor, 'exit') as Promise<[number | null, NodeJS.Signals | null, boolean]>;
    await supervisor.stop();
    const [, signal, restarting] = await exit;
    t.is(signal, 'SIGKILL');
    t.false(restarting);
    t.false(processAlive(pid));
    await sleep(300);
    t.is(supervisor.pid, undefined, 'no restart after stop');
    t.is(supervisor.restarts, 0);
});

test('messages come from the current child only; send() says whether there was one', async (t) => {
    const supervisor = new ProcessSupervisor<{echo: string}, {echo: string}>({
        name: 'echo',
        spawn: () => spawn(process.execPath, ['-e', 'process.on("message", (m) => process.send(m))'], {stdio: ['ignore', 'pipe', 'pipe', 'ipc']})
    });
    t.false(supervisor.send({echo: 'nobody'}));
    supervisor.start();
    t.teardown(() => supervisor.stop());
    const reply = once(supervisor, 'message');
    t.true(supervisor.send({echo: 'hello'}));
    t.deepEqual((await reply)[0], {echo: 'hello'});
});
