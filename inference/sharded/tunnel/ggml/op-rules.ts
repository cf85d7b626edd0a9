/**
 * Every allowed op's contract (docs/peer-protocol.md, "Graph checks"), by name: `graph-check.ts` applies the one of
 * each computed node. The type makes a new op in `op-allowlist.ts` fail to compile until it has a contract.
 */
import type {AllowedOp} from './op-allowlist.js';
import type {OpRule} from './op-rule-kit.js';
import {CORE_OP_RULES} from './op-rules-core.js';
import {GraphCheckError} from './tensor-check.js';

/** Until its contract is written, an op is refused like any op outside the list. */
const refused: OpRule = (node, what) => {
    throw new GraphCheckError('op', `${what()}: no contract for this op yet`);
};

export const OP_RULES: Record<AllowedOp, OpRule> = {
    ...CORE_OP_RULES,
    ADD_ID: refused, SQR: refused, SQRT: refused, LOG: refused, SUM: refused, SUM_ROWS: refused, CUMSUM: refused,
    MEAN: refused, ARGMAX: refused, REPEAT: refused, CONCAT: refused, NORM: refused, GROUP_NORM: refused,
    L2_NORM: refused, MUL_MAT_ID: refused, SCALE: refused, SET: refused, DIAG: refused, ROPE_BACK: refused,
    CLAMP: refused, IM2COL: refused, POOL_2D: refused, PAD: refused, ARANGE: refused, ARGSORT: refused,
    TOP_K: refused, TRI: refused, FILL: refused, SSM_CONV: refused, SSM_SCAN: refused, RWKV_WKV6: refused,
    GATED_LINEAR_ATTN: refused, RWKV_WKV7: refused, SOLVE_TRI: refused, GATED_DELTA_NET: refused,
    LIGHTNING_INDEXER: refused, DSV4_HC_COMB: refused, DSV4_HC_PRE: refused, DSV4_HC_POST: refused, UNARY: refused
};
