/**
 * Remote layer devices inside the engine child: llama.cpp's RPC backend, built in engine/rpc/, loaded into the ggml
 * node-llama-cpp already loaded, one device per pipeline stage (docs/architecture.md, "Sharding", "The coordinator").
 */
import {readFileSync} from 'node:fs';
import koffi from 'koffi';
import type {Llama} from 'node-llama-cpp';

/** The already loaded ggml library: the RPC backend must register with this copy, not a second one. */
function loadedGgmlPath() {
    const maps = readFileSync('/proc/self/maps', 'utf8');
    for (const line of maps.split('\n')) {
        const path = line.split(/\s+/)[5];
        // libggml.so or node-llama-cpp's variant name libggml.v0.4.0.so, not libggml-base/-cpu
        if (path !== undefined && /\/libggml(\.[^/-]*)?\.so[^/]*$/.test(path))
            return path;
    }
    throw new Error('node-llama-cpp has not loaded libggml: cannot attach remote devices');
}

/**
 * Registers each endpoint (`host:port`, loopback ends of the tunnels and of this node's own rpc servers) as an RPC
 * device, in order: llama.cpp puts RPC devices first, in registration order, so endpoint i is device `RPC<i>`. Each endpoint gets a
 * backend that stays open for the life of the process: without it ggml-rpc opens a new connection for almost
 * every call, and every connection is a tunnel stream to set up. Blocks on the network: the tunnel must run in
 * another process.
 */
export function registerRpcDevices(llama: Llama, libraryPath: string, endpoints: string[]) {
    const ggml = koffi.load(loadedGgmlPath());
    const backendLoad = ggml.func('void *ggml_backend_load(const char *path)');
    const procAddress = ggml.func('void *ggml_backend_reg_get_proc_address(void *reg, const char *name)');
    const register = ggml.func('void ggml_backend_register(void *reg)');
    const rpcRegistry = backendLoad(libraryPath);
    if (rpcRegistry === null)
        throw new Error(`cannot load the RPC backend ${libraryPath}`);
    const addServerAddress = procAddress(rpcRegistry, 'ggml_backend_rpc_add_server');
    if (addServerAddress === null)
        throw new Error(`${libraryPath} is not a ggml RPC backend`);
    const addServer = koffi.proto('void *ggml_rpc_add_server(const char *endpoint)');
    // Not offered through the registry: the library is open already (above), so this finds the same copy.
    const init = koffi.load(libraryPath).func('void *ggml_backend_rpc_init(const char *endpoint, uint32_t device)');
    for (const endpoint of endpoints) {
        if (init(endpoint, 0) === null)
            throw new Error(`cannot connect to the stage at ${endpoint}`);
        register(koffi.call(addServerAddress, addServer, endpoint));
    }
    // node-llama-cpp read "no GPU offloading" once, before these devices existed; layers for them count as GPU layers.
    (llama as unknown as {_supportsGpuOffloading: boolean})._supportsGpuOffloading = true;
}

const PLACEMENT_LINE = /load_tensors: layer\s+(\d+) assigned to device (\S+?),/;

/**
 * Collects llama.cpp's own report of where each layer went (debug log lines, one per layer; the output layer is
 * numbered after the last repeating layer): the device per layer index.
 */
export class PlacementReport {
    readonly devices: string[] = [];
    private closed = false;

    /** Feeds one log line; true if it was a placement line. */
    read(line: string) {
        const match = PLACEMENT_LINE.exec(line);
        if (match === null)
            return false;
        if (this.closed) // another model's (a draft model loaded after the target): read, not recorded
            return true;
        this.devices[Number(match[1])] = match[2]!;
        return true;
    }

    /** The model it reports on has loaded: later placement lines are another model's. */
    close() {
        this.closed = true;
    }

}
