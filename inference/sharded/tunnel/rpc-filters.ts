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

/** What a host counts of a session, all its connections together. */
export interface SessionMeter {
    /** GRAPH_COMPUTE and GRAPH_RECOMPUTE requests the server was sent: the passes through the stage. */
    graphComputes: number,
    /** Tokens those graphs computed (each graph's batch, a pass of drafts included): shard receipts' bound. */
    graphTokens: number
}

export interface HostFilterOptions extends Omit<RpcSessionOptions, 'guard' | 'reportMemory'>, RpcGuardOptions {
    /** Counted into as requests pass; defaults to none. */
    meter?: SessionMeter
}

/**
 * The host's side: the coordinator's client beyond the tunnel, this node's rpc server on the socket. Every request
 * passes the guard (docs/peer-protocol.md, "Graph checks") before the server sees a byte of it.
 */
export function hostFilter(options: HostFilterOptions): StreamFilter {
    const {budget, graphLimits, cachedTensorBytes, maxPayloadBytes, meter, maxGraphTokens} = options;
    const guard = new RpcGuard({budget, ...(graphLimits && {graphLimits}), ...(cachedTensorBytes && {cachedTensorBytes}),
        ...(maxGraphTokens !== undefined && {maxGraphTokens})});
    const session = new RpcSession({...(maxPayloadBytes !== undefined && {maxPayloadBytes}), guard});
    return {
        fromSocket: (chunk) => session.fromServer(chunk),
        fromTunnel: (chunk) => {
            // Counted as the coordinator's bytes arrive: before it can have a token the pass helped make.
            const before = session.graphComputes;
            const tokensBefore = guard.tokensComputed;
            try {
                return session.fromClient(chunk);
            } finally {
                if (meter !== undefined) {
                    meter.graphComputes += session.graphComputes - before;
                    meter.graphTokens += guard.tokensComputed - tokensBefore;
                }
            }
        },
        close: () => guard.close()
    };
}
