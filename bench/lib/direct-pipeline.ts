/**
 * A sharded engine without Hyperswarm or a node (docs/architecture.md, "Sharding"): the coordinator's engine child,
 * tunnel endpoints with the RPC codec (the memory rewrite gives the split asked for), each joined by TCP to an rpc
 * server, and the remote stages' links optionally delayed in user space, since this machine's kernel has no netem.
 */
import {EventEmitter} from 'node:events';
import {EngineSupervisor, type EngineSupervisorOptions} from '../../engine/engine-supervisor.js';
import type {ModelLoadSpec} from '../../engine/engine-settings.js';
import type {RpcServerFiles} from '../../engine/rpc/rpc-server-dir.js';
import {RpcServerHost} from '../../engine/rpc/rpc-server-host.js';
import {layerSplit} from '../../inference/sharded/layer-split.js';
import {coordinatorFilter} from '../../inference/sharded/tunnel/rpc-filters.js';
import type {TunnelStream} from '../../inference/sharded/tunnel/shard-protocol.js';
import {SocketStream} from '../../inference/sharded/tunnel/socket-pipe.js';
import {TunnelEndpoint} from '../../inference/sharded/tunnel/tunnel-endpoint.js';

export interface RpcAddress {
    host: string,
    port: number
}

/**
 * A tunnel stream whose bytes wait `delayMs()` each way, order kept. The delays actually applied are recorded
 * (`applied`): timers fire late by a fraction of a millisecond, so estimates divide by the round trip measured.
 */
export class DelayedStream extends EventEmitter implements TunnelStream {
    static readonly applied: number[] = [];

    constructor(private readonly inner: TunnelStream, private readonly delayMs: () => number) {
        super();
        inner.on('data', (bytes) => this.later(() => this.emit('data', bytes)));
        inner.on('drain', () => this.emit('drain'));
        inner.on('close', (reason) => this.emit('close', reason));
    }

    get closed() {
        return this.inner.closed;
    }

    write(bytes: Uint8Array) {
        this.later(() => this.inner.write(bytes));
        return !this.inner.closed;
    }

    close(reason: string) {
        this.inner.close(reason);
    }

    /** The mean round trip applied since `applied` was last emptied, in ms (twice the mean one-way delay). */
    static meanRttMs() {
        return 2 * DelayedStream.applied.reduce((sum, ms) => sum + ms, 0) / Math.max(1, DelayedStream.applied.length);
    }

    private later(action: () => void) {
        const delay = this.delayMs();
        if (delay <= 0) {
            action();
            return;
        }
        const queuedAt = performance.now();
        setTimeout(() => {
            DelayedStream.applied.push(performance.now() - queuedAt);
            action();
        }, delay);
    }
}

export interface DirectPipelineOptions {
    model: ModelLoadSpec,
    files: RpcServerFiles,
    /** Layers on this node's own first device; 0 for none. */
    coordinatorLayers: number,
    /** Layers of each remote stage, in order. */
    stageLayers: number[],
    stageServers: RpcAddress[],
    /** This node's own devices: its layers' and the output layer's. */
    own: {first: RpcAddress, output: RpcAddress},
    /** The engine's settings besides its model and shard. */
    engine: Omit<EngineSupervisorOptions, 'models' | 'prepareLoad'>,
    /** How a remote stage's link is made. Defaults to plain TCP. */
    connectStage?: (server: RpcAddress) => TunnelStream,
    /** Each way, on every remote stage's link; read per message. Defaults to none. */
    delayMs?: () => number
}

/** Starts the pipeline; its engine is ready when this resolves. */
export async function startDirectPipeline({model, files, coordinatorLayers, stageLayers, stageServers, own, engine: settings, connectStage, delayMs}: DirectPipelineOptions) {
    // As the coordinator does: its layers on its own first device, the remote stages, the output layer on its own last device.
    const first = coordinatorLayers > 0 ? [own.first] : [];
    const servers = [...first, ...stageServers, own.output];
    const split = layerSplit(0, [...(first.length > 0 ? [coordinatorLayers] : []), ...stageLayers, 0]);
    const failures: string[] = [];
    const remote = (index: number) => index >= first.length && index < first.length + stageLayers.length;
    const endpoints = await Promise.all(servers.map((server, index) => TunnelEndpoint.listen({
        connect: () => {
            if (!remote(index))
                return new SocketStream(server.port, server.host);
            const stream = connectStage?.(server) ?? new SocketStream(server.port, server.host);
            return delayMs === undefined ? stream : new DelayedStream(stream, delayMs);
        },
        createFilter: () => coordinatorFilter({reportMemory: {free: split.reportedBytes[index]!, total: split.reportedBytes[index]!}})
    }, (reason) => failures.push(reason))));
    const engine = new EngineSupervisor({
        ...settings, models: [model],
        prepareLoad: async () => ({shard: {rpcLibraryPath: files.libraryPath, endpoints: endpoints.map((endpoint) => endpoint.address), gpuLayers: split.gpuLayers}})
    });
    const logs: string[] = [];
    engine.on('workerLog', (line) => logs.push(line));
    await engine.start().catch((error: Error) => {
        throw new Error(`the direct pipeline did not load: ${error.message}; ${logs.slice(-10).join(' | ')}`);
    });
    const devices = [...(first.length > 0 ? [coordinatorLayers] : []), ...stageLayers];
    const expected = [...devices.flatMap((count, index) => Array<string>(count).fill(`RPC${index}`)), `RPC${devices.length}`];
    const placement = engine.getStatus().placement[model.id] ?? [];
    return {
        engine, endpoints, failures, logs,
        placementMatches: placement.length === expected.length && placement.every((device, layer) => device === expected[layer]),
        async stop() {
            await engine.dispose();
            await Promise.all(endpoints.map((endpoint) => endpoint.close('done')));
        }
    };
}

/** `count` rpc servers on loopback, started together. */
export async function startRpcServers(files: RpcServerFiles, count: number, threads: number, cacheDir?: string) {
    return Promise.all(Array.from({length: count}, async () => {
        const server = new RpcServerHost({binaries: files, threads, ...(cacheDir !== undefined && {cacheDir})});
        await server.start();
        return server;
    }));
}

/** The coordinator's own two devices, on loopback. */
export function ownDevices([first, output]: RpcServerHost[]) {
    return {first: {host: '127.0.0.1', port: first!.port!}, output: {host: '127.0.0.1', port: output!.port!}};
}
