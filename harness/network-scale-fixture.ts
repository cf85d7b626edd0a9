
import {readFile} from 'node:fs/promises';
import OpenAI from 'openai';
import {localModelsFromOffers} from '../swarm/gossip/model-gossip.js';
import {ModelGossipProtocol} from '../swarm/gossip/model-gossip-protocol.js';
import type {SwarmNode} from '../swarm/swarm-node.js';
import {capabilitiesFixture} from './capabilities-fixture.js';
import {launchFromSource, waitFor, type DaemonHandle} from './cli-process.js';
import {createDataDirWithDemoModel} from './demo-model-fixture.js';
import {nodeIdentity, nodeIdOf, peersOf, startSwarmDaemon, testSwarmNode} from './swarm-fixture.js';

/**
 * A network of many nodes on one small machine (issue 26's scale test and benchmark): most nodes are in-process
 * `SwarmNode`s with the model gossip a daemon runs (node/strongdoge-node.ts), a few are daemons where a model is
 * served or asked for. Every one holds the same `--max-peers`.
 */


/** A model that streams for seconds and never ends by itself (as test/provider-discovery.test.ts sizes it): an answer to interrupt. */
export const SCALE_DEMO_MODEL = {width: 512, feedForwardLength: 1024, endsText: false};

export interface ScaleDaemon {
    daemon: DaemonHandle,
    id: string,
    client: OpenAI,
    cleanup: () => Promise<unknown>
}

export interface ScaleDaemonOptions {
    bootstrap: string,
    network: string,
    maxPeers: number,
    /** Serves the demo model, or asks peers only (`--serve-peers off`). */
    serving: boolean,
    extra?: string[]
}

/** A daemon of the network, running the sources, with its own data dir holding the demo model. */
export async function startScaleDaemon({bootstrap, network, maxPeers, serving, extra = []}: ScaleDaemonOptions): Promise<ScaleDaemon> {
    const fixture = await createDataDirWithDemoModel(SCALE_DEMO_MODEL);
    let daemon: DaemonHandle;
    try {
        daemon = await startSwarmDaemon(bootstrap, fixture.dataDir, ['--network', network, '--max-peers', String(maxPeers),
            ...(serving ? ['--model', 'demo'] : ['--serve-peers', 'off']), ...extra], {launch: launchFromSource, readyTimeoutMs: 240_000});
    } catch (error) {
        await fixture.cleanup();
        throw error;
    }
    return {daemon, id: await nodeIdOf(daemon), client: new OpenAI({baseURL: daemon.baseUrl, apiKey: 'x', maxRetries: 0}),
        cleanup: async () => {
            await daemon.stop('SIGKILL');
            await fixture.cleanup();
        }};
}

export interface GossipNode {
    node: SwarmNode,
    gossip: ModelGossipProtocol
}

/**
 * `count` in-process nodes of `network`, each with the model gossip at a daemon's defaults and `maxPeers`, started
 * `batch` at a time so the DHT look-ups of a 2-core machine keep up.
 */
export async function startGossipNodes({bootstrap, network, count, maxPeers, batch = 16}:
    {bootstrap: {host: string, port: number}[], network: string, count: number, maxPeers: number, batch?: number}): Promise<GossipNode[]> {
    const nodes: GossipNode[] = [];
    for (let index = 0; index < count; index++) {
        const identity = nodeIdentity();
        const capabilities = () => capabilitiesFixture();
        const node = testSwarmNode(bootstrap, network, {identity, capabilities, limits: {maxPeers}});
        const gossip = new ModelGossipProtocol({selfId: identity.id, localModels: () => localModelsFromOffers(capabilities().models)});
        node.use(gossip);
        nodes.push({node, gossip});
    }
    for (let start = 0; start < count; start += batch)
        await Promise.all(nodes.slice(start, start + batch).map(({node}) => node.start()));
    return nodes;
}

export async function stopGossipNodes(nodes: readonly GossipNode[]) {
    for (const {gossip} of nodes)
        gossip.dispose();
    await Promise.all(nodes.map(({node}) => node.stop().catch(() => undefined)));
}

/** One node's connections as `/api/peers` or `SwarmNode.connectionCounts()` state them. */
export interface ConnectionSample {
    node: string,
    held: number,
    inUse: number,
    maxPeers: number
}

/**
 * Samples every node's connections every `intervalMs` until stopped: the most each held, and each sample where a
 * node held more than its limit plus those in use (docs/architecture.md, "Swarm").
 */
export function watchConnections(daemons: () => readonly {name: string, daemon: DaemonHandle}[], nodes: readonly GossipNode[], intervalMs = 250) {
    const breaches: ConnectionSample[] = [];
    const most = new Map<string, number>();
    let samples = 0;
    const record = (sample: ConnectionSample) => {
        samples++;
        most.set(sample.node, Math.max(most.get(sample.node) ?? 0, sample.held));
        if (sample.held > sample.maxPeers + sample.inUse)
            breaches.push(sample);
    };
    let polling = false;
    const timer = setInterval(() => {
        for (const [index, {node}] of nodes.entries())
            record({node: `in-process ${index}`, ...node.connectionCounts()});
        if (polling)
            return;
        polling = true;
        void Promise.all(daemons().map(async ({name, daemon}) => {
            if (daemon.process.exitCode !== null || daemon.process.signalCode !== null)
                return;
            const {connections} = await peersOf(daemon);
            if (connections !== null)
                record({node: name, held: connections.held, inUse: connections.inUse, maxPeers: connections.maxPeers});
        }).map((sampled) => sampled.catch(() => undefined))).finally(() => polling = false);
    }, intervalMs);
    return {
        breaches,
        most,
        get samples() {
            return samples;
        },
        stop: () => clearInterval(timer)
    };
}

/** Waits until `daemon` holds at least `count` peers. */
export async function waitForPeerCount(daemon: DaemonHandle, count: number, timeoutMs: number) {
    await waitFor(async () => (await peersOf(daemon)).peers.length >= count, timeoutMs, 500);
}

/** A process's resident memory, from /proc (Linux), in bytes; null where it cannot be read. */
export async function residentBytes(pid: number | undefined): Promise<number | null> {
    if (pid === undefined)
        return null;
    try {
        const status = await readFile(`/proc/${pid}/status`, 'utf8');
        const kilobytes = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
        return kilobytes === undefined ? null : Number(kilobytes) * 1024;
    } catch {
        return null;
    }
}

/** Streams a greedy completion from `client`: its text and the milliseconds to its first chunk. */
export async function timedCompletion(client: OpenAI, prompt: string, maxTokens: number) {
    const sentAt = performance.now();
    let firstAt: number | undefined;
    let text = '';
    for await (const chunk of await client.completions.create({model: 'demo', prompt, max_tokens: maxTokens, temperature: 0, stream: true})) {
        firstAt ??= performance.now();
        text += chunk.choices[0]?.text ?? '';
    }
    return {text, firstTokenMs: firstAt! - sentAt};
}
