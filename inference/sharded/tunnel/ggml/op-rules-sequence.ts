/**
 * Contracts of the recurrent and state-space ops (Mamba, RWKV, gated linear and delta-net attention, DeepSeek's
 * indexer and hyper-connections; docs/peer-protocol.md, "Graph checks"), as ggml's builders (ggml.c) and the CPU
 * kernels state them.
 */
import type {OpRule} from './op-rule-kit.js';
import {refusedUntilWritten} from './op-rule-kit.js';

export const SEQUENCE_OP_RULES = {
    SSM_CONV: refusedUntilWritten, SSM_SCAN: refusedUntilWritten, RWKV_WKV6: refusedUntilWritten,
    GATED_LINEAR_ATTN: refusedUntilWritten, RWKV_WKV7: refusedUntilWritten, SOLVE_TRI: refusedUntilWritten,
    GATED_DELTA_NET: refusedUntilWritten, LIGHTNING_INDEXER: refusedUntilWritten, DSV4_HC_COMB: refusedUntilWritten,
    DSV4_HC_PRE: refusedUntilWritten, DSV4_HC_POST: refusedUntilWritten
} satisfies Record<string, OpRule>;
