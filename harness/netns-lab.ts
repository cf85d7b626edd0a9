/**
 * A network-namespace lab that reproduces home-router NATs, for tests of hole-punching and blind relays.
 *
 * Topology (every box is a network namespace, names unique per lab so parallel test processes do not collide):
 *
 *     host a ── router a ──┐                      ┌── host c ('none': sits on the internet itself)
 *   192.168.1.2  11.1.0.2  │                      │    11.3.0.2
 *                       internet (a router, plus the HyperDHT bootstrap nodes on 11.0.0.1…)
 *     host b ── router b ──┘
 *   192.168.1.2  11.2.0.2
 *
 * The internet is a router rather than a bridge so that it can stand in for the internet's hops: it takes
 * `internetHops` off every TTL it forwards, so hyperdht's low-TTL (5) punch packets die before the far NAT, as
 * they do on real paths. Routers drop unsolicited WAN traffic silently, like home routers. Public addresses are
 * in 11.0.0.0/8, not a bogon: hyperdht treats bogons specially (skips them as an open peer's address, tries
 * private ones as LAN shortcuts when two peers share a public address), so a private "internet" would test
 * something else than the real one. The namespaces have no route out; nothing reaches the real 11/8. Every LAN is
 * 192.168.1.0/24, as in real homes.
 *
 * Usage:
 *     if (!labSupported().ok) return t.pass();   // or test.skip
 *     const lab = await createLab([{name: 'a', nat: 'random'}, {name: 'b', nat: 'random'}, {name: 'relay', nat: 'none'}]);
 *     t.teardown(() => lab.close());
 *     const child = lab.hosts.a!.spawnNode(script, ['--bootstrap', lab.bootstrap], {stdio: ['ignore', 'pipe', 'inherit']});
 *
 * A host made with `direct: true` is also joined to this process's own namespace by a veth link of its own, so this
 * process can connect to `host.directAddress` (past the internet and any NAT; the link carries nothing else), and
 * `host.setDelay(ms)` puts netem on the host's links where the kernel has it (`netemSupported()`). A lab that only
 * needs such hosts can do without the DHT (`dhtNodes: 0`):
 *     const lab = await createLab([{name: 'stage', nat: 'none', direct: true}], {dhtNodes: 0});
 *     lab.hosts.stage!.spawn(server, ['--host', lab.hosts.stage!.directAddress!]);
 *
 * Things to know:
 * - A process inside a host cannot be reached from the test process (another network namespace): talk to it over
 *   its stdio, over a Unix socket (those are not namespaced), or with lab.exec(host.namespace, ...).
 * - Everything is fast here, so peers that join a topic at the same instant announce before either looks up and
 *   find nothing: look up again after the first announce (PeerDiscovery.refresh(), without options).
 * - A relayed connection shows the relay's public address as stream.rawStream.remoteHost.
 *
 * Needs root, iproute2 and iptables (labSupported() says what is missing); conntrack is handy to look at a
 * router's NAT table: lab.exec(host.router!, 'conntrack', ['-L']).
 */
import {type ChildProcess, execFile, execFileSync, spawn, type SpawnOptions} from 'node:child_process';
import {fileURLToPath} from 'node:url';
import {promisify} from 'node:util';
import {processAlive} from '../engine/rpc/process-alive.js';

/** 'none': a host on the internet itself; 'consistent': behind a port-preserving MASQUERADE (a typical home
 * router); 'random': behind MASQUERADE --random-fully, a new random port per destination (a symmetric NAT). */
export type NatKind = 'none' | 'consistent' | 'random';

/** A host to build: `direct` joins it to this process's namespace too (the top of the file says how). */
export interface LabHostOptions {
    name: string,
    nat: NatKind,
    direct?: boolean
}

export interface LabHost {
    name: string,
    nat: NatKind,
    /** The namespace the host's processes run in. */
    namespace: string,
    /** The router's namespace (its conntrack and iptables state lives there); null for a 'none' host. */
    router: string | null,
    /** The host's own address: 192.168.1.2 behind a NAT, else its public address. */
    address: string,
    /** The address the internet sees it as (its router's WAN address behind a NAT). */
    publicAddress: string,
    /** The host's address on its direct link, which this process reaches; null without `direct`. */
    directAddress: string | null,
    /** Puts `ms` of delay each way (netem) on the host's own links (to its router or the internet, and its direct
     * link), so every round trip from the host gains twice that; 0 takes it off again. Fails where the kernel has
     * no netem (`netemSupported()`). */
    setDelay(ms: number): Promise<void>,
    /** Spawns `command` inside the host's namespace; the lab kills it on close. */
    spawn(command: string, args?: readonly string[], options?: SpawnOptions): ChildProcess,
    /** Spawns `node --import tsx script ...args` inside the host's namespace, from the repository root. */
    spawnNode(script: string, args?: readonly string[], options?: SpawnOptions): ChildProcess
}

export interface Lab {
    /** The "internet" namespace: the core router and the bootstrap nodes. */
    internet: string,
    /** The first three DHT nodes, as strongdoge's --bootstrap takes them (Hyperswarm: `bootstrap.split(',')`). */
    bootstrap: string,
    /** Every DHT node on the internet. */
    dhtNodes: {host: string, port: number}[],
    hosts: Record<string, LabHost>,
    /** Runs a command inside one of the lab's namespaces and resolves to its stdout. */
    exec(namespace: string, command: string, args?: readonly string[]): Promise<string>,
    /** Kills every process the lab started and deletes its namespaces (with their veths, routes, iptables rules
     * and conntrack tables). Idempotent; also done synchronously on process exit if a test never got to it. */
    close(): Promise<void>
}

export interface LabOptions {
    /** How many persistent HyperDHT nodes run on the internet (10 by default, as hyperdht/testnet.js). Why that
     * many: before each punch hyperdht samples its NAT by pinging routing-table nodes, skipping the 5 newest when it
     * knows 8 or more, and calls its NAT unknown (HOLEPUNCH_ABORTED) below 3 answers; with 3 nodes, every punch
     * from behind a NAT aborts. 0: no DHT at all (`bootstrap` is empty), for a lab of direct hosts. */
    dhtNodes?: number,
    /** TTL the internet takes off each packet it forwards (8 by default; at least 5 kills low-TTL punches). */
    internetHops?: number
}

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BOOTSTRAP_SCRIPT = fileURLToPath(new URL('lab-bootstrap.ts', import.meta.url));
const DHT_PORT = 49737;
// Every DHT node but the first answers FIND_NODE this late, so that a joining node on a 'none' host gets to know
// that it is not firewalled (lab-bootstrap.ts explains); 200 ms leaves a loaded machine room.
const LOOKUP_DELAY_MS = 200;
// The internet's addresses: 11.0.0.0/8, not a bogon (the top of the file says why).
const PUBLIC = '11';
const LAN = {router: '192.168.1.1', host: '192.168.1.2', prefix: 24};
// Namespace names: sdlab-<pid>-<counter>-..., so a lab can tell leftovers of a dead process from a live neighbour's.
const NAME_PREFIX = 'sdlab-';
// Direct links: veth `sdlink<n>` in this process's namespace with the /30 n of 10.231.0.0/16 (.1 its end, .2 the
// host's). The link's name claims n, atomically, across processes; close() deletes it (a deleted namespace would
// take it along, but only a moment later).
const DIRECT = {device: 'sdlink', hostDevice: 'direct', prefix: '10.231', links: 16_384};
const run = promisify(execFile);
let labCounter = 0;
const openLabs = new Set<LabState>();

interface LabState {
    namespaces: string[],
    /** Direct links' ends in this process's namespace. */
    links: string[],
    processes: Set<ChildProcess>
}

let supported: ReturnType<typeof labSupported> | undefined;
let netem: boolean | undefined;

/** Whether this machine can host a lab: root, ip and iptables (with the NAT and TTL targets) inside a new namespace. */
export function labSupported(): {ok: true} | {ok: false, reason: string} {
    supported ??= probe();
    return supported;
}

function probe(): ReturnType<typeof labSupported> {
    if (process.platform !== 'linux')
        return {ok: false, reason: 'network namespaces need Linux'};
    if (process.getuid?.() !== 0)
        return {ok: false, reason: 'network namespaces need root'};
    for (const [command, args] of [['ip', ['-V']], ['iptables', ['--version']]] as const) {
        try {
            execFileSync(command, args, {stdio: 'ignore'});
        } catch {
            return {ok: false, reason: `${command} is not installed`};
        }
    }
    const namespace = `${NAME_PREFIX}${process.pid}-probe`;
    try {
        execFileSync('ip', ['netns', 'add', namespace], {stdio: 'pipe'});
        execFileSync('ip', ['netns', 'exec', namespace, 'iptables', '-t', 'nat', '-A', 'POSTROUTING', '-j', 'MASQUERADE', '--random-fully'], {stdio: 'pipe'});
        execFileSync('ip', ['netns', 'exec', namespace, 'iptables', '-t', 'mangle', '-A', 'PREROUTING', '-j', 'TTL', '--ttl-dec', '1'], {stdio: 'pipe'});
        return {ok: true};
    } catch (error) {
        const stderr = (error as {stderr?: Buffer}).stderr?.toString().trim();
        return {ok: false, reason: `cannot set up a network namespace with NAT: ${stderr || (error as Error).message}`};
    } finally {
        deleteNamespacesSync([namespace]);
    }
}

/** Whether this kernel has netem, for `host.setDelay` (a container's kernel may lack sch_netem). Needs a lab. */
export function netemSupported(): boolean {
    netem ??= labSupported().ok && probeNetem();
    return netem;
}

function probeNetem() {
    const namespace = `${NAME_PREFIX}${process.pid}-netem`;
    try {
        execFileSync('ip', ['netns', 'add', namespace], {stdio: 'pipe'});
        execFileSync('ip', ['netns', 'exec', namespace, 'tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'delay', '0ms'], {stdio: 'pipe'});
        return true;
    } catch {
        return false;
    } finally {
        deleteNamespacesSync([namespace]);
    }
}

/** Builds a lab with one host per entry (names: letters, digits and dashes) and starts its bootstrap nodes. */
export async function createLab(hosts: LabHostOptions[], options: LabOptions = {}): Promise<Lab> {
    const {dhtNodes = 10, internetHops = 8} = options;
    const names = new Set(hosts.map((host) => host.name));
    if (names.size !== hosts.length || hosts.some((host) => !/^[a-z0-9][a-z0-9-]{0,30}$/i.test(host.name)))
        throw new Error(`lab host names must be unique letters, digits and dashes: ${hosts.map((host) => host.name).join(', ')}`);
    if (hosts.length > 250 || dhtNodes < 0 || dhtNodes > 250)
        throw new Error('a lab has at most 250 hosts and 0 to 250 DHT nodes');
    removeStaleNamespaces();

    const id = `${NAME_PREFIX}${process.pid}-${++labCounter}`;
    const state: LabState = {namespaces: [], links: [], processes: new Set()};
    openLabs.add(state);
    registerExitHook();

    const ip = (...args: string[]) => run('ip', args);
    const inside = (namespace: string, command: string, ...args: string[]) => run('ip', ['netns', 'exec', namespace, command, ...args]);
    const addNamespace = async (namespace: string) => {
        await ip('netns', 'add', namespace);
        state.namespaces.push(namespace);
        await ip('-n', namespace, 'link', 'set', 'lo', 'up');
    };
    const spawnIn = (namespace: string, command: string, args: readonly string[] = [], spawnOptions: SpawnOptions = {}) => {
        // `ip netns exec` execs the command in place, so the child's pid is the command's own.
        const child = spawn('ip', ['netns', 'exec', namespace, command, ...args], spawnOptions);
        state.processes.add(child);
        child.once('exit', () => state.processes.delete(child));
        return child;
    };

    const internet = `${id}-inet`;
    const serverAddresses = Array.from({length: dhtNodes}, (_, index) => `${PUBLIC}.0.0.${index + 1}`);
    const labHosts: Record<string, LabHost> = {};
    try {
        await addNamespace(internet);
        for (const address of serverAddresses)
            await ip('-n', internet, 'address', 'add', `${address}/32`, 'dev', 'lo');
        await inside(internet, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
        if (internetHops > 1)
            await inside(internet, 'iptables', '-t', 'mangle', '-A', 'PREROUTING', '-j', 'TTL', '--ttl-dec', String(internetHops - 1));

        for (const [index, {name, nat, direct = false}] of hosts.entries()) {
            // Site n hangs off the internet on its own link: 11.n.0.1 (internet side) - 11.n.0.2 (the site).
            const site = index + 1;
            const publicAddress = `${PUBLIC}.${site}.0.2`;
            const namespace = `${id}-${name}`;
            const router = nat === 'none' ? null : `${namespace}-r`;
            await addNamespace(namespace);
            if (router)
                await addNamespace(router);
            // Veths are created inside the namespaces, so their short names never meet the root namespace's.
            const edge = router ?? namespace;
            const edgeLink = router ? 'wan' : 'eth0';
            await ip('-n', internet, 'link', 'add', `site${site}`, 'type', 'veth', 'peer', 'name', edgeLink, 'netns', edge);
            // Both ends of each of the host's own links, for setDelay: [namespace (null: this process's own), device].
            const linkEnds: [string | null, string][] = [[namespace, 'eth0'], router ? [router, 'lan'] : [internet, `site${site}`]];
            await ip('-n', internet, 'address', 'add', `${PUBLIC}.${site}.0.1/24`, 'dev', `site${site}`);
            await ip('-n', internet, 'link', 'set', `site${site}`, 'up');
            await ip('-n', edge, 'address', 'add', `${publicAddress}/24`, 'dev', edgeLink);
            await ip('-n', edge, 'link', 'set', edgeLink, 'up');
            await ip('-n', edge, 'route', 'add', 'default', 'via', `${PUBLIC}.${site}.0.1`);
            if (router) {
                await ip('-n', router, 'link', 'add', 'lan', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', namespace);
                await ip('-n', router, 'address', 'add', `${LAN.router}/${LAN.prefix}`, 'dev', 'lan');
                await ip('-n', router, 'link', 'set', 'lan', 'up');
                await ip('-n', namespace, 'address', 'add', `${LAN.host}/${LAN.prefix}`, 'dev', 'eth0');
                await ip('-n', namespace, 'link', 'set', 'eth0', 'up');
                await ip('-n', namespace, 'route', 'add', 'default', 'via', LAN.router);
                await inside(router, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
                const restoring = run('ip', ['netns', 'exec', router, 'iptables-restore']);
                restoring.child.stdin!.end(routerRules(nat));
                await restoring;
            }
            let directAddress: string | null = null;
            if (direct) {
                const link = await addDirectLink(state, namespace);
                directAddress = link.hostAddress;
                linkEnds.push([null, link.device], [namespace, DIRECT.hostDevice]);
            }
            labHosts[name] = {
                name, nat, namespace, router, publicAddress, directAddress,
                address: router ? LAN.host : publicAddress,
                setDelay: async (ms) => {
                    for (const [where, device] of linkEnds)
                        await run(...tc(where, 'qdisc', 'replace', 'dev', device, 'root', 'netem', 'delay', `${ms}ms`));
                },
                spawn: (command, args, spawnOptions) => spawnIn(namespace, command, args, spawnOptions),
                spawnNode: (script, args = [], spawnOptions = {}) =>
                    spawnIn(namespace, process.execPath, ['--import', 'tsx', script, ...args], {cwd: ROOT, ...spawnOptions})
            };
        }

        const nodes = dhtNodes === 0 ? [] : await startBootstrap((args) => spawnIn(internet, process.execPath, args, {cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe']}),
            serverAddresses);
        let closing: Promise<void> | undefined;
        return {
            internet,
            bootstrap: nodes.slice(0, 3).map(({host, port}) => `${host}:${port}`).join(','),
            dhtNodes: nodes,
            hosts: labHosts,
            exec: async (namespace, command, args = []) => (await inside(namespace, command, ...args)).stdout,
            close: () => closing ??= closeLab(state)
        };
    } catch (error) {
        await closeLab(state);
        throw error;
    }
}

/** `tc ...args` in a namespace, or in this process's own (null), as run()'s arguments. */
function tc(namespace: string | null, ...args: string[]): [string, string[]] {
    return namespace === null ? ['tc', args] : ['ip', ['netns', 'exec', namespace, 'tc', ...args]];
}

/** A veth link from this process's namespace to `namespace`, on the first free /30 of the direct links' range. */
async function addDirectLink(state: LabState, namespace: string) {
    for (;;) {
        const taken = new Set(execFileSync('ip', ['-o', 'link', 'show'], {encoding: 'utf8'}).split('\n')
            .map((line) => new RegExp(`^\\d+: ${DIRECT.device}(\\d+)[@:]`).exec(line)?.[1]).filter((number) => number !== undefined).map(Number));
        const number = Array.from({length: DIRECT.links}, (_, index) => index).find((index) => !taken.has(index));
        if (number === undefined)
            throw new Error(`every direct link (${DIRECT.links}) is taken`);
        const device = `${DIRECT.device}${number}`;
        try {
            await run('ip', ['link', 'add', device, 'type', 'veth', 'peer', 'name', DIRECT.hostDevice, 'netns', namespace]);
        } catch (error) {
            // Another lab claimed the same number between the listing and now: list again.
            if (/File exists/.test((error as {stderr?: string}).stderr ?? ''))
                continue;
            throw error;
        }
        state.links.push(device);
        const address = (last: number) => `${DIRECT.prefix}.${Math.floor(number / 64)}.${(number % 64) * 4 + last}`;
        await run('ip', ['address', 'add', `${address(1)}/30`, 'dev', device]);
        await run('ip', ['link', 'set', device, 'up']);
        await run('ip', ['-n', namespace, 'address', 'add', `${address(2)}/30`, 'dev', DIRECT.hostDevice]);
        await run('ip', ['-n', namespace, 'link', 'set', DIRECT.hostDevice, 'up']);
        return {device, hostAddress: address(2)};
    }
}

/** A home router: masquerades the LAN behind its WAN address and lets in from the WAN only what the LAN asked for,
 * silently (real routers send no "port unreachable" for a stray punch). Input for iptables-restore. */
function routerRules(nat: NatKind) {
    return [
        '*nat',
        ':POSTROUTING ACCEPT [0:0]',
        `-A POSTROUTING -o wan -j MASQUERADE${nat === 'random' ? ' --random-fully' : ''}`,
        'COMMIT',
        '*filter',
        ':INPUT ACCEPT [0:0]',
        ':FORWARD ACCEPT [0:0]',
        '-A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT',
        '-A INPUT -i wan -j DROP',
        '-A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT',
        '-A FORWARD -i wan -j DROP',
        'COMMIT',
        ''
    ].join('\n');
}

async function startBootstrap(spawnNode: (args: string[]) => ChildProcess, addresses: string[]) {
    const child = spawnNode(['--import', 'tsx', BOOTSTRAP_SCRIPT, addresses.join(','), String(DHT_PORT), String(LOOKUP_DELAY_MS)]);
    return new Promise<{host: string, port: number}[]>((resolve, reject) => {
        let stdout = '';
        let stderr = '';
        const timer = setTimeout(() => fail(new Error(`the lab's bootstrap nodes did not start within 30 s: ${stderr}`)), 30_000);
        const fail = (error: Error) => {
            clearTimeout(timer);
            reject(error);
        };
        child.stderr!.on('data', (chunk: Buffer) => stderr += chunk);
        child.stdout!.on('data', (chunk: Buffer) => {
            stdout += chunk;
            const line = stdout.split('\n').find((text) => text.startsWith('{'));
            if (!line)
                return;
            clearTimeout(timer);
            // A script that forgets close() should still end (and its exit hook clean up), not wait on these nodes.
            child.unref();
            for (const stream of [child.stdin, child.stdout, child.stderr])
                (stream as {unref?: () => void} | null)?.unref?.();
            resolve((JSON.parse(line) as {nodes: {host: string, port: number}[]}).nodes);
        });
        child.once('error', fail);
        child.once('exit', (code, signal) => fail(new Error(`the lab's bootstrap nodes exited (${code ?? signal}): ${stderr}`)));
    });
}

async function closeLab(state: LabState) {
    const exited = [...state.processes].map((child) => new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null)
            return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
    }));
    const grace = setTimeout(() => {
        for (const child of state.processes)
            child.kill('SIGKILL');
    }, 3000);
    await Promise.all(exited);
    clearTimeout(grace);
    // Processes the children started themselves: whatever still runs inside one of the lab's namespaces.
    for (const namespace of state.namespaces)
        killNamespaceProcessesSync(namespace);
    deleteLinksSync(state.links);
    state.links = [];
    deleteNamespacesSync(state.namespaces.reverse());
    state.namespaces = [];
    openLabs.delete(state);
}

function killNamespaceProcessesSync(namespace: string) {
    let pids: string[];
    try {
        pids = execFileSync('ip', ['netns', 'pids', namespace], {encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore']}).split(/\s+/).filter(Boolean);
    } catch {
        return;
    }
    for (const pid of pids) {
        try {
            process.kill(Number(pid), 'SIGKILL');
        } catch {
            // Already gone.
        }
    }
}

function deleteLinksSync(links: string[]) {
    for (const link of links) {
        try {
            execFileSync('ip', ['link', 'del', link], {stdio: 'ignore'});
        } catch {
            // Already gone.
        }
    }
}

function deleteNamespacesSync(namespaces: string[]) {
    for (const namespace of namespaces) {
        try {
            execFileSync('ip', ['netns', 'del', namespace], {stdio: 'ignore'});
        } catch {
            // Already gone.
        }
    }
}

let exitHookRegistered = false;
function registerExitHook() {
    if (exitHookRegistered)
        return;
    exitHookRegistered = true;
    // A test that failed (or timed out) before close(): kill and delete synchronously, the only thing 'exit' allows.
    process.on('exit', () => {
        for (const state of openLabs) {
            for (const child of state.processes)
                child.kill('SIGKILL');
            for (const namespace of state.namespaces)
                killNamespaceProcessesSync(namespace);
            deleteLinksSync(state.links);
            deleteNamespacesSync(state.namespaces);
        }
    });
}

/** Namespaces left by a lab whose process died without running its exit hook (SIGKILL, a crash in native code). */
function removeStaleNamespaces() {
    let listing: string;
    try {
        listing = execFileSync('ip', ['netns', 'list'], {encoding: 'utf8'});
    } catch {
        return;
    }
    for (const line of listing.split('\n')) {
        const namespace = line.split(' ')[0]!;
        const owner = new RegExp(`^${NAME_PREFIX}(\\d+)-`).exec(namespace)?.[1];
        if (owner && !processAlive(Number(owner))) {
            killNamespaceProcessesSync(namespace);
            deleteNamespacesSync([namespace]);
        }
    }
}
