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

/** The host's side: the coordinator's client beyond the tunnel, this node's rpc server on the socket. */
export function hostFilter(options: RpcSessionOptions = {}): StreamFilter {
    const session = new RpcSession(options);
    return {fromSocket: (chunk) => session.fromServer(chunk), fromTunnel: (chunk) => session.fromClient(chunk)};
}
