import test from 'ava';
import OpenAI from 'openai';
import {waitFor, type DaemonHandle} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {startLabDaemon} from '../harness/lab-daemon.js';
import {createLab, labSupported, type Lab, type LabHost} from '../harness/netns-lab.js';
import {fetchStatus} from '../harness/node-status.js';

/**
 * Providers found by key across NATs (issue 26, docs/architecture.md, "Finding providers and hosts"): in a lab of
 * network namespaces (harness/netns-lab.ts), a provider and a requester each behind a random (symmetric) NAT, which
 * never punch through to each other, and a reachable node that relays. Both join the relay node by key with
 * `--max-peers 2`, so neither dials the other on the network topic: the requester hears of the model by gossip and
 * connects to the provider on demand, through the relay.
 */

const support = labSupported();
// CI runs as root with iptables installed (.ci/run): there the lab must work, not be skipped.
const labTest = support.ok || process.env.CI ? test.serial : test.skip;
if (!support.ok)
    console.log(`provider relay lab: ${support.reason}${process.env.CI ? '' : '; skipped'}`);

/** Finding peers and relays through a fresh DHT, punching and falling back: generous for a loaded machine. */
const CONNECT_TIMEOUT_MS = 120_000;

interface LabNode {
    daemon: DaemonHandle,
    id: string
}

labTest('a requester behind a random NAT connects on demand, through a relay, to a provider behind another that gossip named', async (t) => {
    if (!support.ok)
        t.fail(support.reason);
    const lab: Lab = await createLab([{name: 'relay', nat: 'none'}, {name: 'provider', nat: 'random'}, {name: 'requester', nat: 'random'}]);
    t.teardown(() => lab.close());
    const start = async (host: LabHost, args: string[], serving: boolean): Promise<LabNode> => {
        const fixture = await createDataDirWithDemoModel(serving ? {} : {layers: 1, width: 64, headCount: 4, feedForwardLength: 64});
        t.teardown(fixture.cleanup);
        const daemon = await startLabDaemon(lab, host, ['--data-dir', fixture.dataDir, ...(serving ? ['--model', 'demo'] : ['--serve-peers', 'off']), ...args]);
        t.teardown(() => daemon.stop('SIGKILL'));
        return {daemon, id: (await fetchStatus(daemon, '/api/node')).id};
    };
    const relay = await start(lab.hosts.relay!, ['--relay', 'on', '--serve-peers', 'off'], false);
    const line = ['--max-peers', '2', '--relay-through', relay.id];
    const provider = await start(lab.hosts.provider!, line, true);
    const requester = await start(lab.hosts.requester!, line, false);

    // The requester hears of the model through the relay node's gossip, and is connected to the relay node alone.
    const gossiped = async () => (await fetchStatus(requester.daemon, '/api/network/models')).models.find((model) => model.id === 'demo');
    await waitFor(async () => (await gossiped())?.gossip?.providers.some((entry) => entry.nodeId === provider.id) ?? false, CONNECT_TIMEOUT_MS, 500);
    const peers = () => fetchStatus(requester.daemon, '/api/peers');
    t.deepEqual((await peers()).peers.map((peer) => peer.id), [relay.id]);
    t.like((await fetchStatus(requester.daemon, '/api/node')).nat, {type: 'random', reachable: false});

    const prompt = 'Across two NATs, found by gossip';
    const direct = await new OpenAI({baseURL: provider.daemon.baseUrl, apiKey: 'x', maxRetries: 0})
        .completions.create({model: 'demo', prompt, max_tokens: 16, temperature: 0});
    const answer = await new OpenAI({baseURL: requester.daemon.baseUrl, apiKey: 'x', maxRetries: 0})
        .completions.create({model: 'demo', prompt, max_tokens: 16, temperature: 0});
    t.is(answer.choices[0]!.text, direct.choices[0]!.text, 'the text a direct request to the provider gets');
    const found = (await peers()).peers.find((peer) => peer.id === provider.id);
    t.truthy(found, 'the requester holds a connection to the provider');
    t.true(found!.reasons.includes('on-demand:provider:demo'), found!.reasons.join());
    t.like(found!.route, {kind: 'relayed', relay: relay.id});
    t.true((await fetchStatus(relay.daemon, '/api/node')).relay!.pairs >= 1, 'the relay carries the pair');
});
