import {constants} from 'node:fs';
import {access, mkdtemp, rm, stat} from 'node:fs/promises';
import {createServer} from 'node:net';
import {availableParallelism, cpus, freemem, tmpdir, totalmem} from 'node:os';
import {dirname, join, resolve} from 'node:path';
import {Command} from 'commander';
import type {EngineBuildType} from '../../engine/engine-build.js';
import type {RpcTool, RpcToolchain} from '../../engine/rpc/rpc-toolchain.js';
import {loadNodeSettings} from '../config/load-node-settings.js';
import type {SettingFlags} from '../config/node-config.js';
import type {NodeSettings} from '../../node/node-settings.js';
import {formatBytes} from '../../core/display.js';
import {formatEngineBuild, formatNatAddress} from '../../tui/text-format.js';
import type {NatStatus, RelayMode} from '../../swarm/relay-policy.js';
import {addDataDirOption, settingOption} from './shared-options.js';

export interface DoctorReport {
    node: {version: string, platform: string},
    /** What node-llama-cpp runs on here: its prebuilt binaries or `strongdoge engine build`'s (a build is never started here). */
    engine: {gpu: string | false, devices: string[], vramTotalBytes: number, vramFreeBytes: number, build: EngineBuildType, llamaCppRelease: string} | {error: string},
    cpu: {model: string, threads: number, llamaThreads: number},
    memory: {totalBytes: number, freeBytes: number},
    sharding: {
        /** This node can host and use layer shards (built, or buildable on start). */
        available: boolean,
        /** Why not, or what happens on start. */
        detail: string,
        rpcServer: {dir: string, built: boolean, release?: string, serverPath?: string},
        toolchain: RpcToolchain,
        /** Whether the rpc servers that host peers' layers can run in the sandbox here (docs/architecture.md, "Sharding"). */
        sandbox: {available: true, bwrapPath: string} | {available: false, reason: string}
    },
    api: {host: string, port: number, free: boolean, error?: string},
    /** How peers will reach this machine, as the DHT sees it; null with --offline. */
    network: {bootstrapped: boolean, nat: NatStatus, relay: RelayMode} | null,
    dataDir: {path: string, exists: boolean, writable: boolean, error?: string}
}

async function engineReport(gpuSetting: 'auto' | 'off'): Promise<DoctorReport['engine']> {
    try {
        // load only when the command runs
        const [{getLlama, LlamaLogLevel}, {engineBuildOf}] = await Promise.all([import('node-llama-cpp'), import('../../engine/engine-build.js')]);
        const llama = await getLlama({gpu: gpuSetting === 'off' ? false : 'auto', build: 'never', logLevel: LlamaLogLevel.error,
            logger: (_level, message) => process.stderr.write(`[llama.cpp] ${message.trimEnd()}\n`)});
        try {
            const devices = llama.gpu === false ? [] : await llama.getGpuDeviceNames();
            const vram = llama.gpu === false ? {total: 0, free: 0} : await llama.getVramState();
            return {gpu: llama.gpu, devices, vramTotalBytes: vram.total, vramFreeBytes: vram.free,
                build: engineBuildOf(llama), llamaCppRelease: llama.llamaCppRelease.release};
        } finally {
            await llama.dispose();
        }
    } catch (error) {
        return {error: (error as Error).message};
    }
}

/** Whether the API could listen there now. */
function portReport(host: string, port: number) {
    return new Promise<DoctorReport['api']>((resolve) => {
        const server = createServer();
        server.once('error', (error: NodeJS.ErrnoException) =>
            resolve({host, port, free: false, ...(error.code !== 'EADDRINUSE' && {error: error.message})}));
        server.listen(port, host, () => server.close(() => resolve({host, port, free: true})));
    });
}

/** The data dir, or the nearest directory above it that exists (it is created on start): writable? */
async function dataDirReport(path: string): Promise<DoctorReport['dataDir']> {
    const exists = await stat(path).then((info) => info.isDirectory(), () => false);
    let probe = path;
    while (!exists && dirname(probe) !== probe && !(await stat(probe).then(() => true, () => false)))
        probe = dirname(probe);
    try {
        await access(probe, constants.W_OK);
        return {path, exists, writable: true};
    } catch (error) {
        return {path, exists, writable: false, error: (error as Error).message};
    }
}

async function shardingReport(dataDir: string, rpcDir: string | undefined): Promise<DoctorReport['sharding']> {
    const [{findRpcBinaries}, {detectRpcToolchain}, {probeSandbox}] = await Promise.all([import('../../engine/rpc/rpc-build.js'), import('../../engine/rpc/rpc-toolchain.js'),
        import('../../engine/rpc/rpc-sandbox.js')]);
    // where the node builds it (node/strongdoge-node.ts)
    const dir = resolve(rpcDir ?? join(dataDir, 'rpc'));
    // The probe compiles the sandbox's launcher: into a temporary dir while the node has not made its own (doctor creates nothing).
    const launcherDir = await stat(dir).then(() => dir, () => mkdtemp(join(tmpdir(), 'strongdoge-doctor-')));
    const [binaries, toolchain, probe] = await Promise.all([findRpcBinaries(dir).catch(() => undefined), detectRpcToolchain(),
        process.platform === 'linux' ? probeSandbox({launcherDir}) : undefined]).finally(() => launcherDir === dir || rm(launcherDir, {recursive: true, force: true}));
    const rpcServer = binaries === undefined ? {dir, built: false} : {dir, built: true, release: binaries.release, serverPath: binaries.serverPath};
    const sandbox: DoctorReport['sharding']['sandbox'] = probe === undefined ? {available: false, reason: `the sandbox is for Linux, not ${process.platform}`}
        : probe.available ? {available: true, bwrapPath: probe.bwrapPath} : {available: false, reason: probe.reason};
    if (process.platform !== 'linux')
        return {available: false, detail: `sharding runs the rpc-server on Linux only so far, not ${process.platform}`, rpcServer, toolchain, sandbox};
    if (binaries !== undefined)
        return {available: true, detail: `RPC server built (llama.cpp ${binaries.release})`, rpcServer, toolchain, sandbox};
    if (toolchain.missing.length > 0)
        return {available: false, detail: `${toolchain.missing.join(', ')} not found: the RPC server cannot be built`, rpcServer, toolchain, sandbox};
    return {available: true, detail: 'RPC server not built yet: the node builds it on start (about a minute)', rpcServer, toolchain, sandbox};
}

function sandboxText(sandbox: DoctorReport['sharding']['sandbox']) {
    return sandbox.available
        ? `works: peers' rpc servers run in bubblewrap (${sandbox.bwrapPath}), with nothing of this node in reach`
        : `unavailable: ${sandbox.reason}; this node hosts no layers for peers (on a private network, --shard-sandbox off hosts without it)`;
}

async function networkReport(settings: DiagnoseSettings): Promise<DoctorReport['network']> {
    if (settings.offline)
        return null;
    const {probeNat} = await import('../../swarm/nat-probe.js');
    return {...await probeNat(settings.bootstrap ? {bootstrap: settings.bootstrap} : {}), relay: settings.relay};
}

type DiagnoseSettings = Pick<NodeSettings, 'dataDir' | 'rpcDir' | 'host' | 'port' | 'threads' | 'gpu' | 'offline' | 'bootstrap' | 'relay'>;

export async function diagnose(settings: DiagnoseSettings): Promise<DoctorReport> {
    const [engine, sharding, api, dataDir, network] = await Promise.all([
        engineReport(settings.gpu), shardingReport(settings.dataDir, settings.rpcDir), portReport(settings.host, settings.port), dataDirReport(settings.dataDir),
        networkReport(settings)
    ]);
    return {
        node: {version: process.version, platform: `${process.platform}-${process.arch}`},
        engine,
        cpu: {model: cpus()[0]?.model.trim() ?? 'unknown', threads: availableParallelism(), llamaThreads: settings.threads},
        memory: {totalBytes: totalmem(), freeBytes: freemem()},
        sharding,
        api,
        network,
        dataDir
    };
}

function networkText(network: DoctorReport['network']): string {
    if (network === null)
        return 'offline (--offline)';
    if (!network.bootstrapped)
        return 'the DHT did not answer: no peers can be found (check the connection, or --bootstrap)';
    const {nat, relay} = network;
    const reach = nat.reachable
        ? `reachable by peers${relay === 'off' ? '' : '; relays for peers that cannot punch holes (--relay off to stop)'}`
        : nat.type === 'random'
            ? 'not reachable, and this NAT changes ports per peer: peers with a random NAT too are reached through a relay'
            : 'not reachable: peers punch holes to it; a relay carries what punching cannot';
    return `NAT ${formatNatAddress(nat)}, ${reach}`;
}

const toolText = (tool: RpcTool | undefined) => tool === undefined ? 'not found' : `${tool.version ?? 'version unknown'} (${tool.path})`;

function engineText(engine: DoctorReport['engine'], toolchain: RpcToolchain) {
    if ('error' in engine)
        return 'unavailable';
    if (engine.build === 'local')
        return `${engine.llamaCppRelease}, ${formatEngineBuild('local')} (\`strongdoge engine reset\` goes back to the prebuilt one)`;
    return `${engine.llamaCppRelease}, ${formatEngineBuild('prebuilt')}${toolchain.missing.length > 0 ? ''
        : '; `strongdoge engine build` builds it for this machine (faster or slower by CPU and weights: compare with `strongdoge bench --force`)'}`;
}

function reportText(report: DoctorReport) {
    const {engine, sharding, api, dataDir} = report;
    const gpu = 'error' in engine ? `unavailable: ${engine.error}`
        : engine.gpu === false ? 'none: llama.cpp runs on the CPU'
            : `${engine.gpu}, ${formatBytes(engine.vramFreeBytes)} free of ${formatBytes(engine.vramTotalBytes)}`;
    const rows: [string, string][] = [
        ['node', `${report.node.version} ${report.node.platform}`],
        ['GPU', gpu],
        ['llama.cpp', engineText(engine, sharding.toolchain)],
        ...('error' in engine ? [] : engine.devices.map((device, index): [string, string] => [`device ${index}`, device])),
        ['CPU', `${report.cpu.threads} threads (${report.cpu.model}); llama.cpp uses ${report.cpu.llamaThreads}`],
        ['memory', `${formatBytes(report.memory.freeBytes)} free of ${formatBytes(report.memory.totalBytes)}`],
        ['sharding', `${sharding.available ? 'available' : 'unavailable'}: ${sharding.detail}`],
        ['RPC server', sharding.rpcServer.built ? sharding.rpcServer.serverPath! : `not built (${sharding.rpcServer.dir})`],
        ['sandbox', sandboxText(sharding.sandbox)],
        ['cmake', toolText(sharding.toolchain.cmake)],
        ['C++ compiler', toolText(sharding.toolchain.cxxCompiler)],
        ['C compiler', toolText(sharding.toolchain.cCompiler)],
        ['build tool', toolText(sharding.toolchain.buildTool)],
        ['git', toolText(sharding.toolchain.git)],
        ['network', networkText(report.network)],
        ['API port', `${api.host}:${api.port} ${api.free ? 'free' : api.error === undefined ? 'in use' : `unusable: ${api.error}`}`],
        ['data dir', `${dataDir.path} ${dataDir.writable ? (dataDir.exists ? 'writable' : 'will be created') : `not writable: ${dataDir.error}`}`]
    ];
    const width = Math.max(...rows.map(([label]) => label.length));
    return rows.map(([label, value]) => `${label.padEnd(width)}  ${value}`).join('\n') + '\n';
}

export function doctorCommand() {
    const command = new Command('doctor')
        .description('check what this machine can do: GPU backend and devices, CPU, sharding (RPC server, cmake, compiler, the sandbox for peers\' servers), NAT, API port, data dir')
        .addOption(settingOption('port', {description: 'the API port to check', showDefault: false}))
        .addOption(settingOption('host', {description: 'the API address to check', showDefault: false}))
        .addOption(settingOption('rpcDir', {description: 'where the node builds llama.cpp\'s RPC server', showDefault: false}))
        .addOption(settingOption('bootstrap', {description: 'DHT bootstrap nodes to probe the NAT with', showDefault: false}))
        .addOption(settingOption('offline', {description: 'skip the network check', showDefault: false}))
        .option('--json', 'print JSON');
    addDataDirOption(command);
    return command.action(async ({json, ...flags}: Pick<SettingFlags, 'port' | 'host' | 'rpcDir' | 'bootstrap' | 'offline'> & {json?: boolean, dataDir?: string}) => {
        const settings = await loadNodeSettings(flags);
        const report = await diagnose(settings);
        process.stdout.write(json ? JSON.stringify(report, null, 2) + '\n' : reportText(report));
    });
}
