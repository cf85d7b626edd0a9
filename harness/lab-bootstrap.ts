/**
 * The HyperDHT bootstrap network of a netns lab (netns-lab.ts starts it inside the lab's "internet" namespace).
 * Usage: node --import tsx lab-bootstrap.ts <host,host,...> <port> <lookup delay ms>
 * Runs one persistent, unfirewalled DHT node per host (each bound to its own address, so replies leave from the
 * address the nodes were asked on), prints one JSON line {"nodes": [{host, port}, ...]} once all are up, and runs
 * until SIGTERM or until stdin closes (the lab went away).
 *
 * Once all are up, every node but the first answers FIND_NODE <lookup delay> ms late. Why: a joining node learns
 * that it is not firewalled only if the answer to its quick probe (PING_NAT, sent when the first lookup answer
 * comes in) arrives before its bootstrap lookup ends; if not, dht-rpc checks again only after ~20 minutes of stable
 * network. On the real DHT that lookup takes several round trips; here nodes a fraction of a millisecond away
 * answer it at once and the probe loses the race. The late answers keep the lookup open until the probe is back.
 */
import {createRequire} from 'node:module';

/** The parts of dht-rpc/hyperdht used here (swarm/types/holepunch.d.ts declares fewer). */
interface DhtNode {
    fullyBootstrapped(): Promise<void>,
    destroy(): Promise<void>,
    io: {onrequest: (request: {internal: boolean, command: number}, external: boolean) => void}
}
type DhtConstructor = new (options: {
    ephemeral: boolean,
    firewalled: boolean,
    bootstrap: {host: string, port: number}[],
    host: string,
    port: number
}) => DhtNode;

const HyperDHT = createRequire(import.meta.url)('hyperdht') as DhtConstructor;
const FIND_NODE = 2; // dht-rpc/lib/commands.js
const [hostList, portText, delayText] = process.argv.slice(2) as [string, string, string];
const hosts = hostList.split(',');
const port = Number(portText);
const addresses = hosts.map((host) => ({host, port}));

const nodes: DhtNode[] = [];
// As hyperdht/testnet.js: the first node starts the network alone, the others join through it.
for (const [index, host] of hosts.entries()) {
    const node = new HyperDHT({ephemeral: false, firewalled: false, bootstrap: index === 0 ? [] : addresses.slice(0, 1), host, port});
    nodes.push(node);
    await node.fullyBootstrapped();
}
const delay = Number(delayText);
for (const node of nodes.slice(1)) {
    const answer = node.io.onrequest;
    node.io.onrequest = (request, external) => request.internal && request.command === FIND_NODE && delay > 0
        ? setTimeout(() => answer(request, external), delay)
        : answer(request, external);
}
process.stdout.write(JSON.stringify({nodes: addresses}) + '\n');

let stopping = false;
async function stop() {
    if (stopping)
        return;
    stopping = true;
    await Promise.allSettled(nodes.map((node) => node.destroy()));
    process.exit(0);
}
process.on('SIGTERM', stop);
process.stdin.on('end', stop).on('error', stop).resume();
