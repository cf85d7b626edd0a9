/** @jsxRuntime automatic */
/** @jsxImportSource react */
import test from 'ava';
import {render} from 'ink-testing-library';
import {emptyDashboardState} from '../tui/dashboard-state.js';
import {DashboardStore} from '../tui/dashboard-store.js';
import {DashboardView} from '../tui/dashboard-view.js';
import {DevicePanel} from '../tui/panels/device-panel.js';
import {LedgerPanel} from '../tui/panels/ledger-panel.js';
import {PeersPanel} from '../tui/panels/peers-panel.js';
import {PipelinePanel} from '../tui/panels/pipeline-panel.js';
import {RequestsPanel} from '../tui/panels/requests-panel.js';
import {ThroughputPanel} from '../tui/panels/throughput-panel.js';
import {layerBar, progressBar, sparkline} from '../tui/text-graphics.js';
import {busyDashboardState} from './helpers/dashboard-fixtures.js';

const frame = (element: Parameters<typeof render>[0]) => {
    const rendered = render(element);
    const output = rendered.lastFrame() ?? '';
    rendered.unmount();
    return output;
};

test('sparkline, progress and layer bars', (t) => {
    t.is(sparkline([0, 1, 2, 4], 4), '▁▃▅█');
    t.is(sparkline([], 3), '   ');
    t.is(sparkline([0, 0], 2), '▁▁');
    t.is(sparkline([1, 2, 3, 4, 5, 6], 3), '▆▇█');
    t.is(progressBar(0.5, 10), '█████░░░░░  50%');
    t.is(progressBar(2, 4), '████ 100%');
    t.is(layerBar([{firstLayer: 0, lastLayer: 3}, {firstLayer: 4, lastLayer: 7}], 8, 8), 'AAAABBBB');
    t.is(layerBar([{firstLayer: 0, lastLayer: 1}], 4, 4), 'AA··');
});

test('empty state: every panel says what is missing', (t) => {
    const state = emptyDashboardState();
    t.regex(frame(<DevicePanel device={state.device} engine={state.engine} progress={state.progress}/>), /detecting…[\s\S]*models none/);
    t.regex(frame(<PeersPanel peers={[]}/>), /Peers \(0\)[\s\S]*no peers yet/);
    t.regex(frame(<PipelinePanel pipeline={null}/>), /requests are served whole/);
    t.regex(frame(<RequestsPanel requests={[]}/>), /none yet: point a chat client/);
    t.regex(frame(<LedgerPanel ledger={state.ledger}/>), /points -\s+log 0 records[\s\S]*anchor none yet · next not scheduled/);
    t.regex(frame(<LedgerPanel ledger={{...state.ledger, anchoringOff: 'no wallet'}}/>), /anchoring off: no wallet/);
    t.regex(frame(<ThroughputPanel throughput={state.throughput} width={8}/>), /local\s+0\.0/);
});

test('busy state: devices, peers, pipeline, throughput, requests and ledger', (t) => {
    const state = busyDashboardState();
    const device = frame(<DevicePanel device={state.device} engine={state.engine} progress={state.progress}/>);
    t.regex(device, /cuda NVIDIA GeForce RTX 4090, VRAM 20\.0 GB free of 24\.0 GB/);
    t.regex(device, /compute 120\.500 TFLOPS/);
    t.regex(device, /loading qwen-7b ███████░░░░░░░░░ {2}42%/);
    const peers = frame(<PeersPanel peers={state.peers}/>);
    t.regex(peers, /c0ffeec0\s+23ms 60\.10TF cuda 12\.0 GB 97% llama-3\.1-8b/);
    t.regex(peers, /deadbeef\s+-\s+\? cpu 50% -/);
    const pipeline = frame(<PipelinePanel pipeline={state.pipeline} width={20}/>);
    t.regex(pipeline, /AAAAAAAAAABBBBBBBBBB/);
    t.regex(pipeline, /B c0ffeec0 layers 40-79 hop 12\.5ms/);
    t.regex(frame(<ThroughputPanel throughput={state.throughput} width={6}/>), /local\s+▁▂▄▇▅█ 140[\s\S]*for peers\s+▁▁▅▅▁█ 60\.0/);
    const requests = frame(<RequestsPanel requests={state.requests}/>);
    t.regex(requests, /200 llama-3\.1-8b peers:c0ffeec0ffeec0ff 128t 88\.2t\/s/);
    t.regex(requests, /503 llama-3\.1-8b local 12t 140t\/s/);
    t.regex(frame(<LedgerPanel ledger={state.ledger}/>), /points 1234\s+log 42 records[\s\S]*anchor block 123456 \(5m \d+s ago, 40 records\) · next in 5[45]m/);
});

test('the whole view shows the header, the proxy URL, errors and help', (t) => {
    const state = busyDashboardState();
    const view = frame(<DashboardView state={state} columns={120} focus="peers" showHelp={true}/>);
    t.regex(view, /strongdoge 0\.1\.0\s+node q3xk8ume\s+network public\s+engine ready/);
    t.regex(view, /API http:\/\/127\.0\.0\.1:9337\/v1\s+key: the one given to --api-key/);
    t.regex(view, /! peer banned: flood: too many messages/);
    t.regex(view, /tab \/ arrows move focus/);
});

test('a narrow 64-column terminal stacks panels within its width', (t) => {
    const view = frame(<DashboardView state={busyDashboardState()} columns={64} focus="requests" showHelp={false}/>);
    const lines = view.split('\n');
    t.true(lines.every((line) => [...line].length <= 64), `widest line: ${Math.max(...lines.map((line) => [...line].length))}`);
    for (const title of ['This device', 'Peers (2)', 'Pipeline', 'Throughput', 'Recent requests', 'Ledger'])
        t.true(view.includes(title), title);
    // one column: device above ledger, not beside it
    t.true(lines.findIndex((line) => line.includes('This device')) < lines.findIndex((line) => line.includes('Ledger')));
    t.false(lines.some((line) => line.includes('This device') && line.includes('Throughput')));
});

test('an 80×24 terminal fits the whole busy dashboard in two columns', (t) => {
    const view = frame(<DashboardView state={busyDashboardState()} columns={80} focus="requests" showHelp={false}/>);
    const lines = view.split('\n');
    t.true(lines.length <= 24, `${lines.length} lines`);
    t.true(lines.every((line) => [...line].length <= 80));
    t.true(lines.some((line) => line.includes('This device') && line.includes('Throughput')));
});

test('the store keeps bounded history and one-second throughput samples', (t) => {
    const store = new DashboardStore();
    let changes = 0;
    store.on('change', () => changes++);
    store.countTokens('local', 5);
    store.countTokens('local', 7);
    store.countTokens('forPeers', 3);
    store.tickThroughput();
    store.tickThroughput();
    t.deepEqual(store.state.throughput, {local: [12, 0], forPeers: [3, 0]});
    for (let i = 0; i < 80; i++)
        store.addRequest({id: String(i), model: 'm', route: 'local', tokens: 1, tokensPerSecond: 1, status: 200, finishedAt: i});
    t.is(store.state.requests.length, 50);
    t.is(store.state.requests[0]!.id, '79');
    for (let i = 0; i < 30; i++)
        store.addError(`e${i}`);
    t.is(store.state.errors.length, 20);
    t.true(changes > 100);
});
