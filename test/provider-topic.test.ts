import test from 'ava';
import crypto from 'hypercore-crypto';
import OpenAI from 'openai';
import {JobRequester} from '../inference/remote/jobs/job-requester.js';
import {JobsProtocol} from '../inference/remote/jobs/jobs-protocol.js';
import {RemoteInference} from '../inference/remote/remote-inference.js';
import type {Capabilities} from '../swarm/capabilities.js';
import type {GossipModelView} from '../swarm/gossip/model-gossip.js';
import {hostsTopic, networkTopic, providerTopic} from '../swarm/network-topic.js';
import {capabilitiesFixture} from '../harness/capabilities-fixture.js';
import {waitFor} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {greedyCompletion} from '../harness/generation-requests.js';
import {DEFAULT_DOMAIN} from '../harness/ledger-fixture.js';
import {fetchStatus} from '../harness/node-status.js';
import {nodeIdentity, nodeIdOf, peersOf, startSwarmDaemon, startTestnet, testSwarmNode, waitForPeers} from '../harness/swarm-fixture.js';

/**
 * The DHT topics of issue 26 (docs/architecture.md, "Finding providers and hosts"): a node announces itself on the
 * topic of each model it serves and, while it has room for layers, on the hosts topic; a look-up finds it without a
 * connection, and a request whose gossiped providers are gone finds one there. Real swarm nodes and a real daemon on a
 * loopback HyperDHT testnet.
 */

const SHA = 'ab'.repeat(32);

test('the topics: one per network and model, a private network\'s unlike a public one of the same name, none equal to the network\'s', (t) => {
    const topics = [networkTopic({name: 'n'}), providerTopic({name: 'n'}, SHA), providerTopic({name: 'n'}, 'cd'.repeat(32)), providerTopic({name: 'm'}, SHA),
        providerTopic({name: 'n', secret: 's'}, SHA), hostsTopic({name: 'n'}), hostsTopic({name: 'n', secret: 's'}), hostsTopic({name: 'm'})];
    t.is(new Set(topics.map((topic) => topic.toString('hex'))).size, topics.length);
    t.deepEqual(providerTopic({name: 'n'}, SHA), providerTopic({name: 'n'}, SHA));
});

test.serial('a node is found on the topics of what it serves while it serves it, and on no other network\'s', async (t) => {
    const {testnet} = await startTestnet();
    t.teardown(() => testnet.destroy());
    let capabilities: Capabilities = capabilitiesFixture({
        models: [{id: 'served', sha256: SHA, sizeBytes: 1, quantization: 'F16', layers: 1, layerBytes: [1], loaded: true},
            {id: 'on-disk', sha256: 'cd'.repeat(32), sizeBytes: 1, quantization: 'F16', layers: 1, layerBytes: [1], loaded: false}],
        shardHost: {freeBytes: 1e9}
    });
    const make = (network: {name: string, secret?: string}, caps: () => Capabilities) => {
        const node = testSwarmNode(testnet.bootstrap, network.name, {network, capabilities: caps});
        t.teardown(() => node.stop());
        return node;
    };
    const provider = make({name: 'topics'}, () => capabilities);
    const seeker = make({name: 'topics'}, () => capabilitiesFixture());
    const outsider = make({name: 'topics', secret: 'another network'}, () => capabilitiesFixture());
    await Promise.all([provider.start(), seeker.start(), outsider.start()]);

    await waitFor(async () => (await seeker.lookupProviders(SHA)).includes(provider.id), 20_000, 200);
    await waitFor(async () => (await seeker.lookupHosts()).includes(provider.id), 20_000, 200);
    t.deepEqual(await seeker.lookupProviders('cd'.repeat(32)), [], 'a model on disk but not loaded is not announced');
    t.deepEqual(await outsider.lookupProviders(SHA), [], 'a private network of the same name looks up another topic');
    t.deepEqual(await outsider.lookupHosts(), []);
    t.deepEqual(await provider.lookupProviders(SHA), [], 'never this node itself');
    t.deepEqual(provider.announcements(), {models: [SHA], host: true});

    // Unloaded, and no room left: gone from both topics.
    capabilities = {...capabilities, models: capabilities.models.map((offer) => ({...offer, loaded: false})), shardHost: {freeBytes: 0}};
    provider.capabilitiesChanged();
    t.deepEqual(provider.announcements(), {models: [], host: false});
    await waitFor(async () => !(await seeker.lookupProviders(SHA)).includes(provider.id), 20_000, 200);
    await waitFor(async () => !(await seeker.lookupHosts()).includes(provider.id), 20_000, 200);
    t.pass();
});

test.serial('a request whose gossiped provider is gone is served by a provider announced on the model\'s DHT topic, connected to on demand', async (t) => {
    const {testnet, bootstrap} = await startTestnet();
    t.teardown(() => testnet.destroy());
    const network = 'provider-topic';
    // B: the node A and R join by key; with --max-peers 2 neither dials any other topic peer (test/provider-discovery.test.ts).
    const b = testSwarmNode(testnet.bootstrap, network);
    t.teardown(() => b.stop());
    await b.start();
    const fixture = await createDataDirWithDemoModel({width: 256, feedForwardLength: 512});
    t.teardown(() => fixture.cleanup());
    const a = await startSwarmDaemon(bootstrap, fixture.dataDir, ['--network', network, '--model', 'demo', '--max-peers', '2', '--relay-through', b.id],
        {readyTimeoutMs: 150_000});
    t.teardown(() => a.stop('SIGKILL'));
    const aId = await nodeIdOf(a);
    const sha256 = (await fetchStatus(a, '/api/network/models')).models.find((model) => model.id === 'demo')?.sha256;
    t.truthy(sha256);

    const identity = nodeIdentity();
    const jobs = new JobsProtocol();
    const r = testSwarmNode(testnet.bootstrap, network, {identity, limits: {maxPeers: 2}, relay: {through: [b.id]}});
    r.use(jobs);
    t.teardown(() => r.stop());
    await r.start();
    await waitForPeers(a, [b.id], 60_000);
    await waitFor(async () => r.peer(b.id) !== undefined, 60_000, 100);
    await waitFor(async () => (await r.lookupProviders(sha256!)).includes(aId), 30_000, 200);
    t.is(r.peer(aId), undefined, 'R is not connected to A');

    // Gossip's word is stale: it names only a provider that left the network.
    const ghost = crypto.randomBytes(32).toString('hex');
    const gossip: GossipModelView[] = [{sha256: sha256!, name: 'demo', sizeBytes: 1, layers: 1, quantization: 'F16', local: false, providerCount: 1,
        providerCountCapped: false, providers: [{id: ghost, direct: false, ageMs: 10, self: false}], ageMs: 10}];
    const remote = new RemoteInference({swarm: r, requester: new JobRequester({jobs, identity, domain: DEFAULT_DOMAIN}),
        routing: {deadlines: {firstTokenMs: 30_000, tokenMs: 30_000}, maxAttempts: 3}, gossipModels: () => gossip});
    const prompt = 'Much topic, such provider';
    const result = await remote.generate({...greedyCompletion(prompt, 16), model: 'demo'}, {});
    const direct = await new OpenAI({baseURL: a.baseUrl, apiKey: 'x', maxRetries: 0}).completions.create({model: 'demo', prompt, max_tokens: 16, temperature: 0});
    t.is(result.text, direct.choices[0]!.text, 'the text a direct request to A gets');
    t.true(r.usage().get(aId)?.reasons.includes('on-demand:provider:demo'), JSON.stringify([...r.usage()]));
    t.true((await peersOf(a)).peers.some((peer) => peer.id === identity.id));
});
