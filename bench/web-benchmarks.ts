/**
 * The web page's costs (README, "The web page"): bytes a browser transfers on the first load, and the CPU of an
 * idle node while a page is open and idle, on the chat and on the network view (which polls the status documents
 * every 2 s), against the same node with no page. Debian's chromium through playwright-core. Writes
 * bench/results/web.json.
 */
import {setTimeout as sleep} from 'node:timers/promises';
import {launchChromium, watchedPage} from '../harness/browser.js';
import {startDaemon} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {cpuSeconds} from './lib/process-cpu.js';
import {machine, writeReport} from './lib/report.js';
import {round} from './lib/statistics.js';

const IDLE_SECONDS = 30;

const fixture = await createDataDirWithDemoModel({writesBytes: false});
const daemon = await startDaemon(['--model', 'demo', '--data-dir', fixture.dataDir, '--threads', '1']);
const browser = await launchChromium();
const idle = async (what: string) => {
    await sleep(3_000); // settle
    const before = await cpuSeconds(daemon.process.pid!);
    await sleep(IDLE_SECONDS * 1000);
    const used = await cpuSeconds(daemon.process.pid!) - before;
    return {what, seconds: IDLE_SECONDS, cpuPercentOfOneCore: round((used / IDLE_SECONDS) * 100, 2)};
};

try {
    await sleep(10_000); // past the start-up work (model load, compute measurement)
    const before = await idle('no page open');

    // First load: a fresh context, so nothing is cached; sizes as sent (compressed) plus headers.
    const {page, context} = await watchedPage(browser);
    const transfers: {url: string, bodyBytes: number, headerBytes: number}[] = [];
    page.on('requestfinished', (request) => {
        void request.sizes().then((sizes) => transfers.push({url: new URL(request.url()).pathname, bodyBytes: sizes.responseBodySize, headerBytes: sizes.responseHeadersSize}));
    });
    await page.goto(daemon.origin, {waitUntil: 'networkidle'});
    await sleep(500);
    const firstLoad = [...transfers];
    const files = firstLoad.filter((transfer) => transfer.url === '/' || transfer.url.startsWith('/assets/'));
    const api = firstLoad.filter((transfer) => !files.includes(transfer));
    const sum = (list: typeof transfers) => list.reduce((total, transfer) => total + transfer.bodyBytes + transfer.headerBytes, 0);

    const withPageOnChat = await idle('page open on the chat, idle (polls every 10 s)');
    await page.goto(`${daemon.origin}/#/network`);
    await page.locator('[data-engine-state="ready"]').waitFor();
    const withPageOnNetwork = await idle('page open on the network view, idle (polls every 2 s)');
    await context.close();
    const after = await idle('no page open, after');

    const report = {
        benchmark: 'web page: bytes on first load, node CPU with an idle page open',
        date: new Date().toISOString(),
        machine: machine(),
        targets: {firstLoadKB: '< 300 (compressed)', idleCpuPercentOfOneCore: '< 1'},
        results: {
            firstLoad: {
                totalBytes: sum(firstLoad),
                pageFilesBytes: sum(files),
                apiBytes: sum(api),
                requests: firstLoad.length,
                files: files.map(({url, bodyBytes}) => ({url, bodyBytes}))
            },
            idle: [before, withPageOnChat, withPageOnNetwork, after],
            includes: 'node main process + engine worker'
        }
    };
    await writeReport('web', report, report.results);
} finally {
    await browser.close();
    await daemon.stop();
    await fixture.cleanup();
}
