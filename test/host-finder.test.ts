import test from 'ava';
import {HostFinder} from '../inference/sharded/coordinator/host-finder.js';
import {capabilitiesFixture} from '../harness/capabilities-fixture.js';
import {waitFor} from '../harness/cli-process.js';
import {startTestnet, testSwarmNode} from '../harness/swarm-fixture.js';

/**
 * The host finder on real swarm nodes (docs/architecture.md, "Finding providers and hosts"): B is everyone's only
 * topic neighbour (joined by key, `maxPeers: 2`), so the coordinator meets the host through the hosts topic only.
 */

test('the host finder connects to hosts the hosts topic names, holds them until released, says what it found, and stops holding once stopped', async (t) => {
    const {testnet} = await startTestnet();
    t.teardown(() => testnet.destroy());
    const b = testSwarmNode(testnet.bootstrap, 'host-finder');
    t.teardown(() => b.stop());
    await b.start();
    const line = {limits: {maxPeers: 2}, relay: {through: [b.id]}};
    const host = testSwarmNode(testnet.bootstrap, 'host-finder', {...line, capabilities: () => capabilitiesFixture({shardHost: {freeBytes: 1e9}})});
    const coordinator = testSwarmNode(testnet.bootstrap, 'host-finder', line);
    t.teardown(() => host.stop());
    t.teardown(() => coordinator.stop());
    await Promise.all([host.start(), coordinator.start()]);
    await waitFor(async () => (await coordinator.lookupHosts()).includes(host.id), 30_000, 200);
    t.is(coordinator.peer(host.id), undefined);

    const finder = new HostFinder({swarm: coordinator, intervalMs: 0});
    t.is(finder.summary(), '', 'nothing to say before a look-up');
    t.is(await finder.find((peerId) => peerId === 'excluded'), 1);
    const found = coordinator.peer(host.id);
    t.truthy(found, 'connected by key');
    t.not(found!.rtt.smoothedMs, undefined, 'its RTT measured before the planner sees it');
    t.like(coordinator.usage().get(host.id), {inUse: true, reasons: ['on-demand:shard-host']});
    t.is(finder.summary(), '; the DHT\'s hosts topic named 1 host beyond the connected peers, 1 connected (looked up every 0 s)');

    // Connected already: a new look-up names no host beyond the peers.
    t.is(await finder.find(() => false), 0);
    t.regex(finder.summary(), /named no host beyond the connected peers/);
    finder.release();
    t.false(coordinator.usage().get(host.id)!.inUse, 'let go once released: only room or the idle timeout closes it');

    // Once stopped, it looks up nothing more.
    finder.stop();
    t.is(await finder.find(() => false), 0);
});
