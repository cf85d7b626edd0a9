import {randomBytes} from 'node:crypto';
import {spawn, type ChildProcess} from 'node:child_process';
import {openSync, writeSync} from 'node:fs';
import {access} from 'node:fs/promises';
import {join, resolve} from 'node:path';
import {createInterface} from 'node:readline';
import {setTimeout as sleep} from 'node:timers/promises';
import {fileURLToPath} from 'node:url';
import {Command} from 'commander';
import type {Level} from 'pino';
import type {Logger} from '../../node/logger.js';
import {DEFAULT_PORT, ENV_PREFIX} from '../../node/node-settings.js';
import {ensureDataDir, modelsDir, resolveDataDir} from '../data-dir.js';
import {addDataDirOption} from './shared-options.js';

/** This CLI's own entry point: each demo node is a `strongdoge start` of the same version. */
const CLI_ENTRY = fileURLToPath(new URL('../main.js', import.meta.url));
const MODEL = 'demo';
/** The network name the nodes show (their dashboards would say "public", yet they reach no one else). */
const NETWORK = 'demo';
/**
 * Room for three of the demo model's eight layers with a 512-token context for each of 4 sequences, and a stage's
 * compute buffer: a plan needs the coordinator and two hosts.
 */
const NODE_MEMORY = 18 * 2 ** 20;
const CONTEXT_SIZE = 512;
/** Two stages and a spare: killing a stage's host shows the failover (docs/architecture.md, "Sharding", "Failover"). */
const HOSTS = ['host-1', 'host-2', 'host-3'];
const HOST_START_TIMEOUT_MS = 60_000;
/** A node's graceful stop (cli/commands/start-action.ts gives itself 15 s) may take this long before it is killed. */
const STOP_TIMEOUT_MS = 20_000;
const POLL_MS = 250;
const OUTPUT_DRAIN_MS = 1_000;
const STATUS_TIMEOUT_MS = 5_000;

interface DemoFlags {
    daemon?: boolean,
    port: string,
    rpcDir?: string,
    dataDir?: string
}

interface DemoNode {
    name: string,
    child: ChildProcess,
    /** The API's base URL once the node logs it; undefined if it exits first or its output is not read. */
    listening: Promise<string | undefined>,
    exited: Promise<void>
}

/** The demo's nodes take only the settings given here, not the user's `STRONGDOGE_*` environment (a model, a port). */
function nodeEnv() {
    return Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith(ENV_PREFIX)));
}

/**
 * Runs `strongdoge start` as a child. Separate processes are the real thing (each node has its own swarm identity,
 * engine and rpc servers, as on separate machines), and a llama.cpp abort in one node cannot take the others down.
 * With `terminal` the node shows its dashboard here and stays in this process group, so it reads Ctrl-C itself
 * (a key to its dashboard); the others get their own group, so a terminal's Ctrl-C reaches only this process,
 * which stops them in order. Their JSON log lines go to `output`, tagged with the node's name.
 */
function spawnNode(name: string, args: string[], output: Logger | 'terminal', networkSecret: string): DemoNode {
    const terminal = output === 'terminal';
    const child = spawn(process.execPath, [CLI_ENTRY, 'start', ...args], {
        env: {...nodeEnv(), STRONGDOGE_NETWORK_SECRET: networkSecret},
        stdio: terminal ? 'inherit' : ['ignore', 'pipe', 'pipe'],
        detached: !terminal
    });
    // 'close' comes once the node's last log lines are read; a process that inherited the pipe must not hold it up.
    const exited = new Promise<void>((resolve) => {
        child.once('close', () => resolve());
        child.once('exit', () => setTimeout(resolve, OUTPUT_DRAIN_MS));
        child.once('error', () => resolve());
    });
    if (terminal)
        return {name, child, listening: Promise.resolve(undefined), exited};
    const log = output.child({node: name});
    createInterface({input: child.stderr!}).on('line', (line) => log.warn(line));
    const listening = new Promise<string | undefined>((resolve) => {
        createInterface({input: child.stdout!}).on('line', (line) => {
            let record: Record<string, unknown>;
            try {
                record = JSON.parse(line) as Record<string, unknown>;
            } catch {
                log.info(line);
                return;
            }
            const {level, time: _time, msg, ...fields} = record;
            const method = (log.levels.labels[Number(level)] ?? 'info') as Level;
            log[method](fields, String(msg ?? ''));
            if (typeof fields.url === 'string')
                resolve(fields.url);
        });
        void exited.then(() => resolve(undefined));
    });
    return {name, child, listening, exited};
}

function hasExited(node: DemoNode) {
    return node.child.exitCode !== null || node.child.signalCode !== null;
}

/** Sends `signal` (none: the node was already told) and waits for the exit, killing it after `STOP_TIMEOUT_MS`. */
async function stopNode(node: DemoNode, signal: NodeJS.Signals | undefined) {
    if (hasExited(node))
        return;
    if (signal !== undefined)
        node.child.kill(signal);
    const timer = setTimeout(() => node.child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await node.exited;
    clearTimeout(timer);
}

function curlExample(url: string) {
    return `curl ${url}/chat/completions -H 'content-type: application/json' -d '{"model": "${MODEL}", "messages": [{"role": "user", "content": "Hello"}]}'`;
}

const EXPLANATION = `four nodes on a private loopback network: the coordinator serves the API and splits the ${MODEL} model's layers `
    + 'over itself and two of the three hosts (llama.cpp\'s RPC backend, over Hyperswarm); every token passes through three nodes, '
    + 'and the third host is a spare that takes over a stage whose host dies';

/** How to see the failover: the hosts' process ids, and which are stages once the pipeline has formed. */
function killHint(hosts: DemoNode[], stageNodes?: string[]) {
    const pids = hosts.map((host) => `${host.name}: ${host.child.pid}${stageNodes === undefined ? '' : stageNodes.includes(host.name) ? ', a stage' : ', the spare'}`);
    return `To see a failover, kill -9 a host of the pipeline from another shell (${pids.join('; ')}): `
        + 'the spare takes over its stage. With two hosts gone the pipeline cannot form again.';
}

/** What a person reads: where the API is, how to call it, and how to see a failover. */
function banner(url: string, when: string, hosts: DemoNode[], stageNodes?: string[]) {
    return [
        '',
        `${EXPLANATION}.`,
        `API: ${url}, model "${MODEL}" (random weights: it answers in fluent nonsense)${when}:`,
        '',
        `  ${curlExample(url)}`,
        '',
        '  import OpenAI from \'openai\';',
        `  const client = new OpenAI({baseURL: '${url}', apiKey: 'strongdoge'});`,
        `  const reply = await client.chat.completions.create({model: '${MODEL}', messages: [{role: 'user', content: 'Hello'}]});`,
        '',
        killHint(hosts, stageNodes),
        '',
        ''
    ].join('\n');
}

function parsePort(value: string) {
    const port = Number(value);
    if (!Number.isInteger(port) || port < 0 || port > 65_535)
        throw new Error(`--port must be 0 to 65535, got "${value}"`);
    return port;
}

async function runDemo(flags: DemoFlags) {
    const port = parsePort(flags.port);
    // As `start` decides: a person at a terminal gets the coordinator's dashboard, anything else log lines.
    const interactive = !flags.daemon && process.stdout.isTTY === true && process.stdin.isTTY === true;
    if (interactive && port === 0)
        throw new Error('--port 0 needs --daemon: the dashboard hides the port it gets');
    const [{createLogger}, {default: createTestnet}, {ensureRpcBinaries, findRpcBinaries}, {RpcToolchainError}, {writeDemoModel}] = await Promise.all([
        import('../../node/logger.js'), import('hyperdht/testnet.js'), import('../../engine/rpc/rpc-build.js'), import('../../engine/rpc/rpc-toolchain.js'),
        import('../../engine/demo/demo-model.js')
    ]);
    const {probeSandbox} = await import('../../engine/rpc/rpc-sandbox.js');
    const dataDir = resolveDataDir(flags.dataDir);
    const root = join(dataDir, 'demo');
    const nodeDir = (name: string) => join(root, name);
    // Absolute: the nodes run the rpc server from another working directory.
    const rpcDir = resolve(flags.rpcDir ?? join(dataDir, 'rpc'));
    await ensureDataDir(nodeDir('coordinator'));
    const logger = createLogger({level: 'info', format: flags.daemon ? 'json' : 'human'});
    const nodesLogPath = join(root, 'nodes.log');
    // Under the dashboard the hosts' lines would garble the screen: they go to a file, written at once so none is lost on exit.
    const nodesLog = interactive ? openSync(nodesLogPath, 'w') : undefined;
    const nodeLogger = nodesLog === undefined ? logger : createLogger({level: 'trace', format: 'json', output: {write: (line: string) => writeSync(nodesLog, line)}});

    const hosts: DemoNode[] = [];
    let coordinator: DemoNode | undefined;
    let testnet: Awaited<ReturnType<typeof createTestnet>> | undefined;
    const aborted = new AbortController();
    let stopping: Promise<void> | undefined;
    const stopAll = (signal?: NodeJS.Signals) => stopping ??= (async () => {
        aborted.abort();
        if (hosts.length > 0)
            logger.info({signal}, 'stopping the demo nodes');
        // The coordinator first, so that it does not take the hosts' leaving for failures to recover from. In a
        // terminal it shares this process group: a Ctrl-C has reached it as well.
        if (coordinator !== undefined)
            await stopNode(coordinator, interactive && signal === 'SIGINT' ? undefined : 'SIGTERM');
        await Promise.all(hosts.map((host) => stopNode(host, 'SIGTERM')));
        await testnet?.destroy();
    })();
    const onSignal = (signal: NodeJS.Signals) => {
        // The steps below end when they see the abort; then the demo exits.
        if (stopping === undefined) {
            void stopAll(signal);
            return;
        }
        logger.warn({signal}, 'second signal: killing the demo nodes');
        for (const node of [coordinator, ...hosts])
            node?.child.kill('SIGKILL');
        process.exit(1);
    };
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
        process.on(signal, onSignal);
    // Should this process end any other way (a bug), its nodes, in their own process groups, must not outlive it.
    process.on('exit', () => {
        for (const node of [coordinator, ...hosts])
            if (node !== undefined && !hasExited(node))
                node.child.kill('SIGTERM');
    });

    try {
        if (await findRpcBinaries(rpcDir).catch(() => undefined) === undefined)
            logger.info({rpcDir}, 'building llama.cpp\'s RPC server, once (about a minute on 2 cores)');
        await ensureRpcBinaries({dir: rpcDir, onProgress: (line) => logger.info(line), signal: aborted.signal}).catch((error: Error) => {
            throw error instanceof RpcToolchainError ? new Error(`${error.message}; the demo needs it to split the model (see \`strongdoge doctor\`)`) : error;
        });
        const modelPath = join(modelsDir(nodeDir('coordinator')), `${MODEL}.gguf`);
        if (await access(modelPath).then(() => false, () => true)) {
            await writeDemoModel(modelPath);
            logger.info({modelPath}, 'wrote the demo model');
        }
        aborted.signal.throwIfAborted();
        testnet = await createTestnet(3, {host: '127.0.0.1'});
        const bootstrap = testnet.bootstrap.map(({host, port: dhtPort}) => `${host}:${dhtPort}`).join(',');
        logger.info({bootstrap}, 'started a loopback DHT: the demo nodes reach nothing beyond this machine');

        // The hosts run the coordinator's layers in the sandbox, as on any network; where it cannot work (no bubblewrap),
        // the demo's network is private to its own four nodes, and they may host without it.
        const sandbox = await probeSandbox({launcherDir: rpcDir});
        const sandboxArgs = sandbox.available ? [] : ['--shard-sandbox', 'off'];
        if (!sandbox.available)
            logger.warn({reason: sandbox.reason}, 'the demo hosts run their rpc servers without the sandbox (its own nodes only: a private network); a node on a shared network would host nothing');
        // One llama.cpp thread each: four processes share this machine, and oversubscribed threads collapse speed.
        // A network secret of their own: the four nodes keep to themselves.
        const secret = randomBytes(16).toString('hex');
        const common = (name: string) => ['--data-dir', nodeDir(name), '--bootstrap', bootstrap, '--network', NETWORK, '--host', '127.0.0.1',
            '--threads', '1', '--context-size', String(CONTEXT_SIZE), '--rpc-dir', rpcDir];
        for (const name of HOSTS)
            hosts.push(spawnNode(name, [...common(name), ...sandboxArgs, '--daemon', '--port', '0', '--max-shard-memory', String(NODE_MEMORY)], nodeLogger, secret));
        const timeout = sleep(HOST_START_TIMEOUT_MS, [undefined], {ref: false});
        const hostUrls = await Promise.race([Promise.all(hosts.map((host) => host.listening)), timeout]);
        aborted.signal.throwIfAborted();
        if (hostUrls.includes(undefined))
            throw new Error(`a demo host did not start${nodesLog === undefined ? '' : `: see ${nodesLogPath}`}`);
        logger.info('three hosts offer memory for layers (two stages and a spare); starting the coordinator');

        if (interactive)
            process.stdout.write(banner(`http://127.0.0.1:${port}/v1`, ', once the dashboard shows the pipeline ready', hosts)
                + `The hosts log to ${nodesLogPath}. q or Ctrl-C stops all four.\n\n`);
        // The coordinator only coordinates: it hosts no peer's layers.
        coordinator = spawnNode('coordinator', [...common('coordinator'), '--port', String(port), '--model', MODEL, '--shard', 'always',
            '--max-stages', '3', '--memory-limit', String(NODE_MEMORY), '--serve-peers', 'off', ...(interactive ? [] : ['--daemon'])],
        interactive ? 'terminal' : nodeLogger, secret);
        const origin = (await coordinator.listening)?.replace(/\/v1$/, '');
        const pipeline = origin === undefined ? undefined : await pipelineReady(origin, () => aborted.signal.aborted || hasExited(coordinator!));
        if (pipeline !== undefined) {
            const url = `${origin}/v1`;
            // Host names rather than node ids, which say nothing here.
            const names = new Map(await Promise.all(hosts.map(async (host, index) => [await nodeIdOf(hostUrls[index]!), host.name] as const)));
            const stages = pipeline.stages.map((stage) => ({node: stage.self ? 'coordinator' : names.get(stage.peer) ?? stage.peer, layers: stage.layers}));
            const pids = hosts.map((host) => ({node: host.name, pid: host.child.pid}));
            const stageNodes = stages.map((stage) => stage.node);
            logger.info({url, model: MODEL, stages, hosts: pids, ...(flags.daemon && {curl: curlExample(url), failover: killHint(hosts, stageNodes)})},
                `the demo is ready: ${flags.daemon ? EXPLANATION : 'see below'}`);
            if (!flags.daemon)
                process.stdout.write(banner(url, '', hosts, stageNodes));
        }
        await coordinator.exited;
    } catch (error) {
        if (!aborted.signal.aborted) {
            await stopAll();
            throw error;
        }
    }
    // A signal stopped the demo, or the coordinator ended by itself (q in its dashboard, or a failure).
    const code = aborted.signal.aborted ? 0 : coordinator?.child.exitCode ?? 1;
    await stopAll();
    process.exit(code);
}

/** The coordinator's pipeline once it serves; undefined if `givenUp` first. */
async function pipelineReady(origin: string, givenUp: () => boolean) {
    const {clusterStatusSchema} = await import('../../node/node-status.js');
    while (!givenUp()) {
        const cluster = await fetch(`${origin}/api/cluster`, {signal: AbortSignal.timeout(STATUS_TIMEOUT_MS)})
            .then(async (response) => clusterStatusSchema.parse(await response.json()), () => undefined);
        const pipeline = cluster?.pipelines[0];
        if (pipeline?.state === 'ready')
            return pipeline;
        await sleep(POLL_MS);
    }
    return undefined;
}

async function nodeIdOf(url: string) {
    const {nodeStatusSchema} = await import('../../node/node-status.js');
    const response = await fetch(url.replace(/\/v1$/, '/api/node'), {signal: AbortSignal.timeout(STATUS_TIMEOUT_MS)});
    return nodeStatusSchema.parse(await response.json()).id;
}

/** `strongdoge demo`: a layer-sharded pipeline over three of four local nodes, with a spare, in one command and offline. */
export function demoCommand() {
    const command = new Command('demo')
        .description('run four nodes on this machine that serve a generated demo model through a real 3-stage layer pipeline with a spare host, offline')
        .option('-d, --daemon', 'run headless: JSON-lines logs of every node on stdout')
        .option('-p, --port <n>', 'API port of the coordinator', String(DEFAULT_PORT))
        .option('--rpc-dir <path>', 'where llama.cpp\'s RPC server is built (default: <data dir>/rpc, shared with `start`)');
    addDataDirOption(command);
    return command.action((flags: DemoFlags) => runDemo(flags));
}
