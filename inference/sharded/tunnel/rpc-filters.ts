import {RpcGuard, type RpcGuardOptions} from './rpc-guard.js';
import {RpcSession, type RpcSessionOptions} from './rpc-stream.js';
import type {StreamFilter} from './socket-pipe.js';

/** What the coordinator's tunnel endpoint needs from the RPC codec of one connection. */
export interface RpcConnectionFilter extends StreamFilter {
    /** Requests sent whose replies have not come yet. */
    readonly awaitingReplies: number
}

/** The coordinator's side: llama.cpp's RPC client is on the socket, the stage's server beyond the tunnel. */
export function coordinatorFilter(options: RpcSessionOptions): RpcConnectionFilter {
    const session = new RpcSession(options);
    return {
        fromSocket: (chunk) => session.fromClient(chunk),
        fromTunnel: (chunk) => session.fromServer(chunk),
        get awaitingReplies() {
            return session.awaitingReplies;
        }
    };
}

export interface HostFilterOptions extends Omit<RpcSessionOptions, 'guard' | 'reportMemory'>, RpcGuardOptions {}

/**
 * The host's side: the coordinator's client beyond the tunnel, this node's rpc server on the socket. Every request
 * passes the guard (docs/peer-protocol.md, "Graph checks") before the server sees a byte of it.
 */
export function hostFilter(options: HostFilterOptions): StreamFilter {
    const {budget, graphLimits, cachedTensorBytes, maxPayloadBytes} = options;
    const guard = new RpcGuard({budget, ...(graphLimits && {graphLimits}), ...(cachedTensorBytes && {cachedTensorBytes})});
    const session = new RpcSession({...(maxPayloadBytes !== undefined && {maxPayloadBytes}), guard});
    return {
        fromSocket: (chunk) => session.fromServer(chunk),
        fromTunnel: (chunk) => session.fromClient(chunk),
        close: () => guard.close()
    };
}
