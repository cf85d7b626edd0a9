import test from 'ava';
import type {Testnet} from 'hyperdht/testnet.js';
import {waitFor} from '../harness/cli-process.js';
import {killServingProvider, seamReport, streamGreedyCompletion} from '../harness/generation-requests.js';
import {startGossipNodes, startScaleDaemon, stopGossipNodes, timedCompletion, waitForPeerCount, watchConnections, type GossipNode,
    type ScaleDaemon} from '../harness/network-scale-fixture.js';
import {fetchStatus} from '../harness/node-status.js';
import {peersOf, startTestnet} from '../harness/swarm-fixture.js';

/**
 * A network of 80 nodes with `--max-peers 6` (issue 26): 76 in-process `SwarmNode`s with the model gossip, and four
 * daemons, two serving the demo model (A, D) and two asking for it (C1, C2). The providers start once the
 * requesters have filled their places, so a requester is most likely not connected to them (checked and logged:
 * the topic's dials are random). A requester's request is served with the text a direct request to A gets, no node
 * ever holds more than its limit plus the connections in use, and once the provider that served is killed,
 * requests (one in flight included) go to the second provider, found the same way.
 */

const NETWORK = 'scale';
const MAX_PEERS = 6;
const IN_PROCESS = 76;
const PEER_TIMEOUT_S = 2;

let testnet: Testnet | undefined;
let nodes: GossipNode[] = [];
const daemons: {name: string, handle: ScaleDaemon}[] = [];
const cleanups: (() => unknown)[] = [];

test.after.always(async () => {
    for (const cleanup of cleanups.reverse())
        await Promise.resolve(cleanup()).catch(() => undefined);
    await Promise.all(daemons.map(({handle}) => handle.cleanup().catch(() => undefined)));
    await stopGossipNodes(nodes);
    await testnet?.destroy();
});

const servedBy = async (providers: readonly ScaleDaemon[]) =>
    Promise.all(providers.map(async (provider) => provider.daemon.process.signalCode === null
        ? (await fetchStatus(provider.daemon, '/api/node')).peerJobs.served
        : null));

test.serial('80 nodes with --max-peers 6: a requester not connected to the provider is served, within its limit, and fails over to a second provider when the first is killed', async (t) => {
    t.timeout(480_000);
    const started = await startTestnet();
    testnet = started.testnet;
    nodes = await startGossipNodes({bootstrap: testnet.bootstrap, network: NETWORK, count: IN_PROCESS, maxPeers: MAX_PEERS});
    const watch = watchConnections(() => daemons.map(({name, handle}) => ({name, daemon: handle.daemon})), nodes);
    cleanups.push(() => watch.stop());

    const start = async (name: string, serving: boolean) => {
        const handle = await startScaleDaemon({bootstrap: started.bootstrap, network: NETWORK, maxPeers: MAX_PEERS, serving,
            extra: serving ? [] : ['--peer-timeout', String(PEER_TIMEOUT_S)]});
        daemons.push({name, handle});
        return handle;
    };
    const [c1, c2] = await Promise.all([start('C1', false), start('C2', false)]);
    // the requesters fill their places among the in-process nodes before a provider exists
    await Promise.all([c1, c2].map((requester) => waitForPeerCount(requester.daemon, MAX_PEERS - 1, 120_000)));
    const [a, d] = await Promise.all([start('A', true), start('D', true)]);
    const providers = [a, d];
    const requesters = [{name: 'C1', requester: c1}, {name: 'C2', requester: c2}];

    // Both providers are known at each requester: the model is listed as the network's.
    const known = async (requester: ScaleDaemon) =>
        (await fetchStatus(requester.daemon, '/api/network/models')).models.find((entry) => entry.id === 'demo')?.gossip?.providers.length ?? 0;
    await waitFor(async () => (await known(c1)) >= 2 && (await known(c2)) >= 2, 180_000, 1_000);
    const atFirst = new Map<string, boolean>();
    const look = async ({name, requester}: {name: string, requester: ScaleDaemon}) => {
        const peers = (await peersOf(requester.daemon)).peers;
        const connected = peers.some((peer) => providers.some((provider) => provider.id === peer.id));
        atFirst.set(name, connected);
        t.log(`${name} at first: ${peers.length} peers, ${connected ? 'CONNECTED to a provider by the network topic (by chance)' : 'not connected to A or D'}`);
        if (!connected)
            t.like((await requester.client.models.list()).data.find((entry) => entry.id === 'demo'), {owned_by: 'strongdoge:network'});
    };
    for (const requester of requesters)
        await look(requester);
    // The topic's dials are random, and a full node makes room for a provider that dials it (a provider is worth
    // more than an idle neighbour): a requester met one by chance in about a third of our runs. Should both have,
    // another requester joins (the network then has a node more than 80), until one has not.
    for (let extra = 3; extra <= 10 && [...atFirst.values()].every(Boolean); extra++) {
        const name = `C${extra}`;
        const requester = await start(name, false);
        await waitFor(async () => (await known(requester)) >= 2, 180_000, 1_000);
        requesters.push({name, requester});
        await look({name, requester});
    }
    t.true([...atFirst.values()].some((connected) => !connected), 'a requester is not connected to a provider at first');

    const prompt = 'Such wow, much network';
    const direct = await a.client.completions.create({model: 'demo', prompt, max_tokens: 24, temperature: 0});
    const expectedShort = direct.choices[0]!.text;
    let lastServer: ScaleDaemon | undefined;
    for (const {name, requester} of requesters) {
        const before = await servedBy(providers);
        const answer = await timedCompletion(requester.client, prompt, 24);
        t.is(answer.text, expectedShort, `${name}: the text a direct request to A gets`);
        const after = await servedBy(providers);
        const server = providers.find((_, index) => after[index]! > before[index]!);
        t.truthy(server, `${name} was served by a provider`);
        lastServer = server;
        const peer = (await peersOf(requester.daemon)).peers.find((entry) => entry.id === server!.id);
        t.truthy(peer, `${name} holds a connection to the provider that served it`);
        if (!atFirst.get(name))
            t.true(peer!.reasons.some((reason) => reason.startsWith('on-demand:')), `${name}: ${peer!.reasons.join()}`);
        t.log(`${name}: served by ${server === a ? 'A' : 'D'} in ${Math.round(answer.firstTokenMs)} ms to the first token; reasons ${peer!.reasons.join()}`);
    }

    // Failover: C1 asks for a long answer, and the provider serving it is killed once 20 chunks have arrived.
    const long = 'The long tale of a large network';
    const maxTokens = 400;
    const expected = await a.client.completions.create({model: 'demo', prompt: long, max_tokens: maxTokens, temperature: 0});
    let victim: Promise<ScaleDaemon | undefined> | undefined;
    let seamText = '';
    let chunks = 0;
    const {text, finishReason, completionTokens} = await streamGreedyCompletion(c1.client, long, maxTokens, (soFar) => {
        if (++chunks === 20) {
            seamText = soFar;
            victim = killServingProvider(providers, 20_000);
        }
    });
    const killed = await victim;
    t.truthy(killed, 'a provider was serving C1, and was killed');
    t.log(`killed ${killed === a ? 'A' : 'D'} mid-answer; C2's first request was served by ${lastServer === a ? 'A' : 'D'}`);
    t.true(expected.choices[0]!.text.startsWith(seamText), 'before the failure: the uninterrupted text');
    t.true(text.startsWith(seamText));
    t.log(seamReport(text, expected.choices[0]!.text, seamText));
    t.is(finishReason, 'length');
    t.is(completionTokens, maxTokens);
    const survivor = providers.find((provider) => provider !== killed)!;
    t.true((await fetchStatus(survivor.daemon, '/api/node')).peerJobs.served > 0, 'the second provider finished the answer');

    // The next request from each requester: served by the survivor, text equal to the direct request's.
    for (const {name, requester} of requesters) {
        const before = (await fetchStatus(survivor.daemon, '/api/node')).peerJobs.served;
        const answer = await timedCompletion(requester.client, prompt, 24);
        t.is(answer.text, expectedShort, `${name} after the kill`);
        t.true((await fetchStatus(survivor.daemon, '/api/node')).peerJobs.served > before, `${name} after the kill: served by the survivor`);
    }

    watch.stop();
    t.log(`connections sampled ${watch.samples} times; most held: ${Math.max(...watch.most.values())}; daemons ${
        daemons.map(({name}) => `${name} ${watch.most.get(name) ?? '-'}`).join(', ')}`);
    t.deepEqual(watch.breaches.slice(0, 5), [], 'no node held more than its limit plus the connections in use');
    t.true(watch.samples > IN_PROCESS * 10);
});
