/**
 * The ggml ops a host runs in a peer's graph, as `scripts/derive-rpc-op-allowlist.mjs` derives them
 * (docs/peer-protocol.md, "Graph checks"). Never CUSTOM or MAP_CUSTOM1..3: their op_params hold a function pointer
 * the server calls. Each op here has a contract in `op-rules.ts`.
 */
import {GGML_OP_NAMES} from './ggml-tables.js';

export const ALLOWED_OPS = [
    'NONE', 'ADD', 'ADD_ID', 'SUB', 'MUL', 'DIV', 'SQR', 'SQRT', 'LOG', 'SUM', 'SUM_ROWS', 'CUMSUM', 'MEAN',
    'ARGMAX', 'REPEAT', 'CONCAT', 'NORM', 'RMS_NORM', 'GROUP_NORM', 'L2_NORM', 'MUL_MAT', 'MUL_MAT_ID', 'SCALE',
    'SET', 'CPY', 'CONT', 'RESHAPE', 'VIEW', 'PERMUTE', 'TRANSPOSE', 'GET_ROWS', 'SET_ROWS', 'DIAG', 'SOFT_MAX',
    'ROPE', 'ROPE_BACK', 'CLAMP', 'IM2COL', 'POOL_2D', 'PAD', 'ARANGE', 'ARGSORT', 'TOP_K', 'TRI', 'FILL',
    'FLASH_ATTN_EXT', 'SSM_CONV', 'SSM_SCAN', 'RWKV_WKV6', 'GATED_LINEAR_ATTN', 'RWKV_WKV7', 'SOLVE_TRI',
    'GATED_DELTA_NET', 'LIGHTNING_INDEXER', 'DSV4_HC_COMB', 'DSV4_HC_PRE', 'DSV4_HC_POST', 'UNARY', 'GLU'
] as const;

export type AllowedOp = typeof ALLOWED_OPS[number];

const allowed = new Set<number>(ALLOWED_OPS.map((name) => GGML_OP_NAMES.indexOf(name)));

export function isAllowedOp(op: number) {
    return allowed.has(op);
}
