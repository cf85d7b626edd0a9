import {spawn, type ChildProcess} from 'node:child_process';
import {once} from 'node:events';
import {mkdtemp, readdir, readFile, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {createInterface} from 'node:readline';
import test from 'ava';
import OpenAI from 'openai';
import {CLI_PATH, waitFor} from '../harness/cli-process.js';
import {fetchStatus} from '../harness/node-status.js';
import {TEST_RPC_DIR, testRpcBinaries} from '../harness/rpc-binaries.js';

/** `strongdoge demo`: four real node processes on a loopback testnet, one model split over three of them, the fourth a spare. */

interface ProcessInfo {
    pid: number,
    ppid: number,
    state: string,
    command: string
}

/** Every process on this machine, from /proc (Linux, as sharding is). */
async function processes(): Promise<ProcessInfo[]> {
    const found: ProcessInfo[] = [];
    for (const entry of (await readdir('/proc')).filter((name) => /^\d+$/.test(name))) {
        const [stat, command] = await Promise.all([readFile(`/proc/${entry}/stat`, 'utf8'), readFile(`/proc/${entry}/cmdline`, 'utf8')])
            .catch(() => [undefined, undefined]);
        if (stat === undefined || command === undefined)
            continue;
        // The name in parentheses may hold spaces: the fields after its closing one are fixed.
        const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        found.push({pid: Number(entry), ppid: Number(ppid), state: state!, command: command.replaceAll('\0', ' ')});
    }
    return found;
}

async function descendantsOf(pid: number) {
    const all = await processes();
    const found: ProcessInfo[] = [];
    for (let parents = [pid]; parents.length > 0;) {
        const children = all.filter((info) => parents.includes(info.ppid));
        found.push(...children);
        parents = children.map((child) => child.pid);
    }
    return found;
}

/** Running, not a zombie waiting to be reaped. */
async function running(pid: number) {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
    return stat !== undefined && stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
}

let demo: ChildProcess | undefined;
let dataDir: string;

test.before(async () => {
    await testRpcBinaries();
    dataDir = await mkdtemp(join(tmpdir(), 'strongdoge-demo-'));
});

test.after.always(async () => {
    if (demo?.exitCode === null && demo.signalCode === null) {
        for (const info of await descendantsOf(demo.pid!))
            process.kill(info.pid, 'SIGKILL');
        demo.kill('SIGKILL');
    }
    await rm(dataDir, {recursive: true, force: true});
});

test('the demo serves a 3-stage pipeline over three of its four node processes, and SIGTERM stops every process it started', async (t) => {
    demo = spawn(process.execPath, [CLI_PATH, 'demo', '--daemon', '--port', '0', '--data-dir', dataDir, '--rpc-dir', TEST_RPC_DIR],
        {stdio: ['ignore', 'pipe', 'pipe']});
    const logs: Record<string, unknown>[] = [];
    let stderr = '';
    demo.stderr!.on('data', (chunk) => stderr += chunk);
    createInterface({input: demo.stdout!}).on('line', (line) => logs.push(JSON.parse(line) as Record<string, unknown>));
    const exited = once(demo, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    const ready = () => logs.find((record) => String(record.msg).startsWith('the demo is ready'));
    await waitFor(() => ready() !== undefined || demo!.exitCode !== null, 60_000, 100).catch(() => undefined);
    const announced = ready();
    t.truthy(announced, `no ready line; stderr ${stderr}; logs ${JSON.stringify(logs.filter((record) => Number(record.level) >= 40 || record.msg === 'pipeline').slice(-20))}`);
    const url = announced!.url as string;
    t.regex(url, /^http:\/\/127\.0\.0\.1:\d+\/v1$/);
    t.regex(announced!.curl as string, /^curl http:\/\/127\.0\.0\.1:\d+\/v1\/chat\/completions /);
    // The coordinator and two of the three hosts: the third is the spare.
    const stageNodes = (announced!.stages as {node: string}[]).map((stage) => stage.node);
    t.is(stageNodes[0], 'coordinator');
    t.is(new Set(stageNodes).size, 3);
    t.true(stageNodes.slice(1).every((node) => ['host-1', 'host-2', 'host-3'].includes(node)), stageNodes.join());

    const coordinator = {origin: url.replace(/\/v1$/, '')};
    const pipeline = (await fetchStatus(coordinator, '/api/cluster')).pipelines[0]!;
    t.is(pipeline.state, 'ready');
    t.deepEqual(pipeline.stages.map((stage) => stage.self), [true, false, false]);
    t.true(pipeline.placementMatches);

    const reply = await new OpenAI({baseURL: url, apiKey: 'x', maxRetries: 0}).chat.completions.create({
        model: 'demo', messages: [{role: 'user', content: 'Hello'}], max_tokens: 16, temperature: 0
    });
    t.true(reply.usage!.completion_tokens > 0);
    // The demo model writes words, not stray byte tokens that show as U+FFFD.
    const content = reply.choices[0]!.message.content ?? '';
    t.false(content.includes('\uFFFD'), content);
    t.regex(content, /\p{L}{2,}/u);
    // The request's activations crossed both hosts' stages.
    const after = (await fetchStatus(coordinator, '/api/cluster')).pipelines[0]!;
    for (const [index, stage] of after.stages.entries())
        if (!stage.self)
            t.true(stage.bytesReceived > pipeline.stages[index]!.bytesReceived, JSON.stringify(stage));

    const started = await descendantsOf(demo.pid!);
    const commands = started.map((info) => info.command).join('\n');
    t.is(started.filter((info) => / start --data-dir \S+\/demo\/coordinator /.test(info.command)).length, 1, commands);
    const hosts = started.filter((info) => / start --data-dir \S+\/demo\/host-\d /.test(info.command));
    t.is(hosts.length, 3, commands);
    // The ready line names each host's process, for a person to kill one and see the failover.
    const announcedHosts = announced!.hosts as {node: string, pid: number}[];
    t.deepEqual(announcedHosts.map((host) => host.node), ['host-1', 'host-2', 'host-3']);
    for (const {node, pid} of announcedHosts) {
        t.true(hosts.some((host) => host.pid === pid && host.command.includes(`/demo/${node} `)), `${node} ${pid}:\n${commands}`);
        t.true((announced!.failover as string).includes(`${node}: ${pid}`));
        // A stage's host runs the coordinator's session in an rpc server; the spare runs none.
        const serves = started.some((info) => info.ppid === pid && info.command.includes('ggml-rpc-server'));
        t.is(serves, stageNodes.includes(node), `${node}'s rpc server:\n${commands}`);
    }

    demo.kill('SIGTERM');
    const [code] = await exited;
    t.is(code, 0, stderr);
    const left = [];
    for (const info of started)
        if (await running(info.pid))
            left.push(info);
    t.deepEqual(left, [], 'processes left behind');
    // Each node stopped itself, in time, rather than being killed.
    t.deepEqual(logs.filter((record) => record.msg === 'stopped').map((record) => record.node).sort(), ['coordinator', 'host-1', 'host-2', 'host-3']);
});
