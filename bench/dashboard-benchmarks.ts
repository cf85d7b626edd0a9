/**
 * Dashboard costs: CPU of an idle node showing the dashboard in a real terminal (tmux), and the time to
 * render one frame of a busy dashboard. Writes bench/results/dashboard.json.
 */
import {execFile} from 'node:child_process';
import {setTimeout as sleep} from 'node:timers/promises';
import {promisify} from 'node:util';
import {createElement} from 'react';
import {render} from 'ink-testing-library';
import {DashboardView} from '../tui/dashboard-view.js';
import {busyDashboardState} from '../harness/dashboard-fixtures.js';
import {CLI_PATH, waitFor} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {cpuSeconds} from './lib/process-cpu.js';
import {machine, writeReport} from './lib/report.js';
import {round} from './lib/statistics.js';

const run = promisify(execFile);
const IDLE_SECONDS = 20;
const FRAMES = 300;

async function idleCpu() {
    const fixture = await createDataDirWithDemoModel();
    const session = `strongdoge-bench-${process.pid}`;
    try {
        await run('tmux', ['new-session', '-d', '-s', session, '-x', '120', '-y', '40',
            `env -u CI ${process.execPath} ${CLI_PATH} start --model demo --offline --threads 1 --port 0 --data-dir ${fixture.dataDir}`]);
        await waitFor(async () => (await run('tmux', ['capture-pane', '-p', '-t', session])).stdout.includes('engine ready'), 30_000, 200);
        const shell = Number((await run('tmux', ['list-panes', '-t', session, '-F', '#{pane_pid}'])).stdout.trim());
        await sleep(3_000); // settle after start-up
        const before = await cpuSeconds(shell);
        await sleep(IDLE_SECONDS * 1000);
        const used = await cpuSeconds(shell) - before;
        return {seconds: IDLE_SECONDS, cpuPercentOfOneCore: round((used / IDLE_SECONDS) * 100, 2), includes: 'node main process + engine worker'};
    } finally {
        await run('tmux', ['kill-session', '-t', session]).catch(() => undefined);
        await fixture.cleanup();
    }
}

function renderCost() {
    const state = busyDashboardState();
    const view = (tick: number) => createElement(DashboardView, {
        state: {...state, throughput: {local: [...state.throughput.local, tick % 200], forPeers: state.throughput.forPeers}},
        columns: 120, focus: 'requests', showHelp: false
    });
    const rendered = render(view(0));
    const startedAt = performance.now();
    for (let frame = 1; frame <= FRAMES; frame++)
        rendered.rerender(view(frame));
    const perFrameMs = (performance.now() - startedAt) / FRAMES;
    rendered.unmount();
    return {frames: FRAMES, msPerFrame: round(perFrameMs, 3)};
}

const report = {
    benchmark: 'dashboard: idle CPU in a real terminal, render cost per frame',
    date: new Date().toISOString(),
    machine: machine(),
    targets: {idleCpuPercentOfOneCore: '< 2'},
    results: {idle: await idleCpu(), render: renderCost()}
};
await writeReport('dashboard', report, report.results);
