/**
 * ggml-rpc protocol v6's commands as the host's codec and guard read them (docs/peer-protocol.md, "Shard channel"):
 * their numbers and the layouts of their requests and replies, from ggml-rpc's `rpc_msg_*` structs and its server
 * loop.
 */
import {RPC_TENSOR_BYTES} from './ggml/rpc-tensor.js';

/** ggml-rpc's command bytes (`enum rpc_cmd`). `NONE` is the client's internal no-op and never sent. */
export const RpcCommand = {
    ALLOC_BUFFER: 0,
    GET_ALIGNMENT: 1,
    GET_MAX_SIZE: 2,
    BUFFER_GET_BASE: 3,
    FREE_BUFFER: 4,
    BUFFER_CLEAR: 5,
    SET_TENSOR: 6,
    SET_TENSOR_HASH: 7,
    GET_TENSOR: 8,
    COPY_TENSOR: 9,
    GRAPH_COMPUTE: 10,
    GET_DEVICE_MEMORY: 11,
    INIT_TENSOR: 12,
    GET_ALLOC_SIZE: 13,
    HELLO: 14,
    DEVICE_COUNT: 15,
    GRAPH_RECOMPUTE: 16,
    MEMSET_TENSOR: 17,
    NONE: 18,
    COUNT: 19
} as const;

/** The commands that travel on the wire. */
export type RpcCommandName = Exclude<keyof typeof RpcCommand, 'NONE' | 'COUNT'>;

/** Bytes of the transport capabilities in HELLO (`RPC_CONN_CAPS_SIZE`); all zero means plain TCP. */
export const RPC_CONN_CAPS_BYTES = 24;
/** Bytes before the caps in the HELLO reply: major, minor, patch, padding. */
export const HELLO_VERSION_BYTES = 4;

export interface CommandSpec {
    /** The request's payload size: exact, or the least when `variable`. */
    requestBytes: number,
    variable?: true,
    /** The reply's payload size; null: no reply; 'requested': the size the request asks for (GET_TENSOR). */
    replyBytes: number | null | 'requested',
    /** The request names a device in its first 4 bytes. */
    device?: true
}

/** Request and reply layouts of each command, from ggml-rpc's `rpc_msg_*` structs and its server loop. */
export const COMMAND_SPECS: Record<RpcCommandName, CommandSpec> = {
    ALLOC_BUFFER: {requestBytes: 4 + 8, replyBytes: 16, device: true},
    GET_ALIGNMENT: {requestBytes: 4, replyBytes: 8, device: true},
    GET_MAX_SIZE: {requestBytes: 4, replyBytes: 8, device: true},
    BUFFER_GET_BASE: {requestBytes: 8, replyBytes: 8},
    FREE_BUFFER: {requestBytes: 8, replyBytes: null},
    BUFFER_CLEAR: {requestBytes: 8 + 1, replyBytes: null},
    // | tensor | offset (u64) | data |
    SET_TENSOR: {requestBytes: RPC_TENSOR_BYTES + 8, variable: true, replyBytes: null},
    SET_TENSOR_HASH: {requestBytes: RPC_TENSOR_BYTES + 8 + 8, replyBytes: 1},
    GET_TENSOR: {requestBytes: RPC_TENSOR_BYTES + 8 + 8, replyBytes: 'requested'},
    COPY_TENSOR: {requestBytes: 2 * RPC_TENSOR_BYTES, replyBytes: 1},
    // | device (u32) | n_nodes (u32) | nodes (n_nodes × u64) | n_tensors (u32) | tensors |
    GRAPH_COMPUTE: {requestBytes: 4 + 4 + 4, variable: true, replyBytes: null, device: true},
    GET_DEVICE_MEMORY: {requestBytes: 4, replyBytes: 16, device: true},
    INIT_TENSOR: {requestBytes: RPC_TENSOR_BYTES, replyBytes: null},
    // | device (u32) | tensor | its GGML_MAX_SRC (10) sources |
    GET_ALLOC_SIZE: {requestBytes: 4 + 11 * RPC_TENSOR_BYTES, replyBytes: 8, device: true},
    HELLO: {requestBytes: RPC_CONN_CAPS_BYTES, replyBytes: HELLO_VERSION_BYTES + RPC_CONN_CAPS_BYTES},
    DEVICE_COUNT: {requestBytes: 0, replyBytes: 4},
    GRAPH_RECOMPUTE: {requestBytes: 4, replyBytes: null, device: true},
    // | tensor | offset (u64) | size (u64) | value (u8) |
    MEMSET_TENSOR: {requestBytes: RPC_TENSOR_BYTES + 8 + 8 + 1, replyBytes: null}
};

/** Command names by command byte; undefined for bytes that are no command on the wire. */
export const COMMAND_NAMES: (RpcCommandName | undefined)[] = [];
for (const name of Object.keys(COMMAND_SPECS) as RpcCommandName[])
    COMMAND_NAMES[RpcCommand[name]] = name;
