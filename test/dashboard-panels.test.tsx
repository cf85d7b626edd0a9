/** @jsxRuntime automatic */
/** @jsxImportSource react */
import test from 'ava';
import {render} from 'ink-testing-library';
import {emptyDashboardState} from '../tui/dashboard-state.js';
import {DashboardStore} from '../tui/dashboard-store.js';
import {DashboardView, focusablePanels} from '../tui/dashboard-view.js';
import {DevicePanel} from '../tui/panels/device-panel.js';
import {LedgerPanel} from '../tui/panels/ledger-panel.js';
import {PeersPanel} from '../tui/panels/peers-panel.js';
import {PipelinePanel} from '../tui/panels/pipeline-panel.js';
import {RequestsPanel} from '../tui/panels/requests-panel.js';
import {ThroughputPanel} from '../tui/panels/throughput-panel.js';
import {layerBar, progressBar, sparkline} from '../tui/text-graphics.js';
import {busyDashboardState} from '../harness/dashboard-fixtures.js';
import {addSpeculation} from '../core/speculation-summary.js';

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
    t.is(layerBar([[0, 3], [4, 7]], 8, 8), 'AAAABBBB');
    t.is(layerBar([[0, 1]], 4, 4), 'AA··');
    t.is(layerBar([null, [0, 3]], 4, 4), 'BBBB', 'a stage without layers keeps its letter');
});

test('empty state: every panel says what is missing', (t) => {
    const state = emptyDashboardState();
    t.regex(frame(<DevicePanel device={state.device} engine={state.engine} progress={state.progress}/>), /detecting…[\s\S]*models none/);
    t.regex(frame(<PeersPanel peers={[]}/>), /Peers \(0\)[\s\S]*no peers yet/);
    t.is(frame(<PipelinePanel cluster={state.cluster}/>), '', 'no pipelines and no hosting: no panel');
    t.regex(frame(<RequestsPanel requests={[]}/>), /none yet: point a chat client/);
    t.regex(frame(<LedgerPanel ledger={state.ledger}/>), /points -\s+log 0 records[\s\S]*anchor none yet · next not scheduled/);
    t.regex(frame(<LedgerPanel ledger={{...state.ledger, anchoringOff: 'no wallet'}}/>), /anchoring off: no wallet/);
    t.notRegex(frame(<LedgerPanel ledger={state.ledger}/>), /DOGE/, 'payments off: no DOGE line');
    t.regex(frame(<ThroughputPanel throughput={state.throughput} width={8}/>), /local\s+0\.0/);
});

test('busy state: devices, peers, pipeline, throughput, requests and ledger', (t) => {
    const state = busyDashboardState();
    const device = frame(<DevicePanel device={state.device} engine={state.engine} progress={state.progress}/>);
    t.regex(device, /cuda NVIDIA GeForce RTX 4090, VRAM 20\.0 GB free of 24\.0 GB/);
    t.regex(device, /compute 120\.500 TFLOPS/);
    t.regex(device, /loading qwen-7b ███████░░░░░░░░░ {2}42%/);
    t.regex(device, /models llama-3\.1-8b {2}\(2 running, 1 queued\)\s*│\n│ spec lookup 62% · 2\.4 tok\/pass · llama-3\.1-8b/, 'the model\'s speculation on its own line');
    const peers = frame(<PeersPanel peers={state.peers}/>);
    t.regex(peers, /c0ffeec0\s+23ms 60\.10TF cuda 12\.0 GB 97% llama-3\.1-8b/);
    t.regex(peers, /deadbeef\s+-\s+\? cpu 50% relayed -/);
    const pipeline = frame(<PipelinePanel cluster={state.cluster} width={20}/>);
    t.regex(pipeline, /Sharding · hosting 1 session, 12\.0 GB offered/);
    t.regex(pipeline, /llama-3\.1-70b ready · ~38\.3 ms\/token · spec draft 70% · 3\.1 tok\/pass\s*│/);
    t.regex(pipeline, /AAAAAAAAAABBBBBBBBBB 2 stages: the fewest that fit/);
    t.regex(pipeline, /A {2}this node {2}layers 0-39 {3}50% {2}21\.0 GB\s*│/, 'no hop or traffic for this node\'s own layers');
    t.regex(pipeline, /B {2}c0ffeec0 {3}layers 40-79 {2}50% {2}21\.0 GB {2}hop 12\.5ms {2}ok 97% {2}↑21\.3 GB ↓3\.4 MB/);
    t.notRegex(pipeline, /failover|last failure/);
    t.regex(frame(<ThroughputPanel throughput={state.throughput} width={6}/>), /local\s+▁▂▄▇▅█ 140[\s\S]*for peers\s+▁▁▅▅▁█ 60\.0/);
    const requests = frame(<RequestsPanel requests={state.requests}/>);
    t.regex(requests, /200 llama-3\.1-8b peers:c0ffeec0ffeec0ff 128t 88\.2t\/s/);
    t.regex(requests, /503 llama-3\.1-8b local 12t 140t\/s/);
    t.regex(frame(<LedgerPanel ledger={state.ledger}/>), /points 1234\s+log 42 records[\s\S]*anchor block 123456 \(5m \d+s ago, 40 records\) · next in 5[45]m/);
    t.regex(frame(<LedgerPanel ledger={state.ledger} payments={PAYMENTS}/>), /points 1234[^\n]*\n[^\n]*DOGE earned 12\.5 · owed 0\.000025 · paid 1\.25 · deposited 50 /);
});

const PAYMENTS = {earned: '12.5', owed: '0.000025', paid: '1.25', deposited: '50.0'};

test('an 80×24 terminal fits the dashboard with payments on: DOGE earned and owed, paid and deposited on two lines of the ledger panel', (t) => {
    const view = frame(<DashboardView state={{...busyDashboardState(), cluster: emptyDashboardState().cluster, payments: PAYMENTS}} columns={80} focus="ledger" showHelp={false}/>);
    const lines = view.split('\n');
    t.true(lines.length <= 24, `${lines.length} lines`);
    t.true(lines.every((line) => [...line].length <= 80));
    t.regex(view, /│ DOGE earned 12\.5 · owed 0\.000025 +│\n.*│ DOGE paid 1\.25 · deposited 50 +│/);
    t.regex(view, /│ spec lookup 62% · 2\.4 tok\/pass · ll… │/, 'a narrow column cuts the model\'s name, not the numbers');
});

test('the device panel counts a model this node coordinates as a pipeline among its models', (t) => {
    const {device, progress, cluster} = busyDashboardState();
    const engine = {...emptyDashboardState().engine, state: 'ready'};
    t.regex(frame(<DevicePanel device={device} engine={engine} progress={progress} pipelines={[{...cluster.pipelines[0]!, model: 'demo'}]}/>), /models demo \(pipeline\)/);
    const small = frame(<DevicePanel device={device} engine={{...engine, models: [{id: 'small', speculation: null}]}} progress={progress} pipelines={cluster.pipelines}/>);
    t.regex(small, /models small, llama-3\.1-70b \(pipeline\)/);
    t.notRegex(small, /spec/, 'no request yet, and the pipeline\'s speculation is the sharding panel\'s');
});

test('speculation per model: each model that speculated on its own line, acceptance unknown while nothing was drafted', (t) => {
    const {device} = busyDashboardState();
    const engine = {...emptyDashboardState().engine, state: 'ready', models: [
        {id: 'coder', speculation: addSpeculation(undefined, {drafter: 'draft', passes: 4, tokens: 16, drafted: 16, accepted: 12})},
        {id: 'chat', speculation: addSpeculation(undefined, {drafter: 'lookup', passes: 8, tokens: 8, drafted: 0, accepted: 0})},
        {id: 'embed', speculation: null}
    ]};
    const view = frame(<DevicePanel device={device} engine={engine} progress={[]}/>);
    t.regex(view, /models coder, chat, embed/);
    t.regex(view, /│ spec draft 75% · 4\.0 tok\/pass · coder\s*│\n│ spec lookup none drafted · 1\.0 tok\/pass · chat\s*│\n╰/);
    t.notRegex(view, /· embed/);
});

test('pipelines while waiting and loading: the reason, where each stage\'s weights come from and how far, spares, failovers and the last failure', (t) => {
    const {cluster} = busyDashboardState();
    const [ready] = cluster.pipelines;
    const peer = ready!.stages[1]!;
    const loading = {
        ...ready!, model: 'mixtral-8x22b', state: 'loading', placementMatches: null, failovers: 2,
        stages: [ready!.stages[0]!, {...peer, hopMs: null, successRate: null, bytesSent: 8.4e9, bytesReceived: 1e3, weights: {from: 'coordinator' as const, fetch: null}},
            {...peer, peer: 'deadbeef'.repeat(8), bytesSent: 0, weights: {from: 'source' as const,
                fetch: {state: 'fetching' as const, doneBytes: 5.25e9, totalBytes: 21e9, stored: 0, failed: 0, reason: null}}}],
        spares: [{state: 'ready' as const}, {state: 'fetching' as const}],
        failures: [{peer: 'f00d'.repeat(16), reason: 'the stage stalled', at: '2026-11-25T10:00:01Z'}, {peer: 'beef'.repeat(16), reason: 'the tunnel closed', at: '2026-11-25T10:00:03Z'}]
    };
    const waiting = {...ready!, model: 'qwen-72b', state: 'waiting', reason: 'qwen-72b is to be split over at least 2 stages, and there are 0', stages: [], plan: null, placementMatches: null,
        speculation: null};
    const view = frame(<PipelinePanel cluster={{pipelines: [loading, waiting], hosting: {available: false, reason: 'offline', sessions: 0, freeBytes: 0}}}/>);
    t.regex(view, /Sharding · hosting not offered \(offline\)/);
    t.regex(view, /mixtral-8x22b loading · ~38\.3 ms\/token · 2 failovers · spares 1\/2 ready · spec draft 70%/, 'speculation so far survives a failover');
    t.regex(view, /B {2}c0ffeec0 {3}layers 40-79 {2}50% {2}21\.0 GB {2}weights sent 40% \(8\.4 GB \/ 21\.0 GB\)/);
    t.regex(view, /C {2}deadbeef {3}layers 40-79 {2}50% {2}21\.0 GB {2}weights source 25% \(5\.3 GB \/ 21\.0 GB\)/);
    t.regex(view, /last failure \d\d:\d\d:\d\d beefbeef: the tunnel closed/);
    t.notRegex(view, /f00d/, 'only the last failure');
    t.regex(view, /qwen-72b waiting\s*│\n│ qwen-72b is to be split over at least 2 stages, and there are 0/);
    t.regex(frame(<PipelinePanel cluster={{pipelines: [{...ready!, placementMatches: false}], hosting: cluster.hosting}}/>), /ready · ~38\.3 ms\/token · llama\.cpp placed layers off the plan/);
    t.regex(frame(<PipelinePanel cluster={{pipelines: [], hosting: {available: false, reason: 'the RPC server is not built yet', sessions: 2, freeBytes: 0}}}/>),
        /Sharding · hosting not offered \(the RPC server is not built yet\), 2 sessions/, 'sessions still open are shown');
});

test('the whole view shows the header, the proxy URL, errors and help', (t) => {
    const state = busyDashboardState();
    const view = frame(<DashboardView state={state} columns={120} focus="peers" showHelp={true}/>);
    t.regex(view, /strongdoge 0\.1\.0\s+node q3xk8ume\s+network public\s+engine ready\s+NAT random, unreachable/);
    const relaying = frame(<DashboardView state={{...state, node: {...state.node, nat: {type: 'open', reachable: true}, relayPairs: 2}}} columns={120} focus="peers" showHelp={false}/>);
    t.regex(relaying, /NAT open, reachable, relaying 2 pairs/);
    t.regex(view, /API http:\/\/127\.0\.0\.1:9337\/v1\s+key: the one given to --api-key/);
    t.regex(view, /! peer banned: flood: too many messages/);
    t.regex(view, /tab \/ arrows move focus/);
});

test('a narrow 64-column terminal stacks panels within its width', (t) => {
    const view = frame(<DashboardView state={busyDashboardState()} columns={64} focus="requests" showHelp={false}/>);
    const lines = view.split('\n');
    t.true(lines.every((line) => [...line].length <= 64), `widest line: ${Math.max(...lines.map((line) => [...line].length))}`);
    for (const title of ['This device', 'Peers (2)', 'Sharding', 'Throughput', 'Recent requests', 'Ledger'])
        t.true(view.includes(title), title);
    // one column: device above ledger, not beside it; sharding after the peers
    t.true(lines.findIndex((line) => line.includes('This device')) < lines.findIndex((line) => line.includes('Ledger')));
    t.true(lines.findIndex((line) => line.includes('Sharding')) < lines.findIndex((line) => line.includes('Throughput')));
    t.false(lines.some((line) => line.includes('This device') && line.includes('Throughput')));
});

test('an 80×24 terminal fits the whole busy dashboard of a node that does not shard in two columns', (t) => {
    const view = frame(<DashboardView state={{...busyDashboardState(), cluster: emptyDashboardState().cluster}} columns={80} focus="requests" showHelp={false}/>);
    const lines = view.split('\n');
    t.true(lines.length <= 24, `${lines.length} lines`);
    t.true(lines.every((line) => [...line].length <= 80));
    t.true(lines.some((line) => line.includes('This device') && line.includes('Throughput')));
    t.false(view.includes('Sharding'));
});

test('in two columns the sharding panel spans the width below both, within 80 columns', (t) => {
    const view = frame(<DashboardView state={busyDashboardState()} columns={80} focus="pipeline" showHelp={false}/>);
    const lines = view.split('\n');
    t.true(lines.every((line) => [...line].length <= 80));
    const title = lines.findIndex((line) => line.includes('Sharding'));
    t.true(title > lines.findIndex((line) => line.includes('Ledger')) && title > lines.findIndex((line) => line.includes('Peers')));
    t.regex(lines.find((line) => line.includes('c0ffeec0   layers'))!, /hop 12\.5ms {2}ok 97%/);
});

test('the focus order skips the sharding panel while it is hidden', (t) => {
    const state = busyDashboardState();
    t.deepEqual(focusablePanels(state), ['device', 'peers', 'pipeline', 'throughput', 'requests', 'ledger']);
    t.deepEqual(focusablePanels({...state, cluster: emptyDashboardState().cluster}), ['device', 'peers', 'throughput', 'requests', 'ledger']);
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
