/**
 * Contracts of the element-wise, reduction, shape and indexing ops beyond a transformer layer's own
 * (docs/peer-protocol.md, "Graph checks"), as ggml's builders (ggml.c) and the CPU kernels state them.
 */
import type {OpRule} from './op-rule-kit.js';
import {refusedUntilWritten} from './op-rule-kit.js';

export const ELEMENTWISE_OP_RULES = {
    ADD_ID: refusedUntilWritten, SQR: refusedUntilWritten, SQRT: refusedUntilWritten, LOG: refusedUntilWritten,
    SUM: refusedUntilWritten, SUM_ROWS: refusedUntilWritten, CUMSUM: refusedUntilWritten, MEAN: refusedUntilWritten,
    ARGMAX: refusedUntilWritten, REPEAT: refusedUntilWritten, CONCAT: refusedUntilWritten, NORM: refusedUntilWritten,
    GROUP_NORM: refusedUntilWritten, L2_NORM: refusedUntilWritten, MUL_MAT_ID: refusedUntilWritten, SCALE: refusedUntilWritten,
    SET: refusedUntilWritten, DIAG: refusedUntilWritten, ROPE_BACK: refusedUntilWritten, CLAMP: refusedUntilWritten,
    IM2COL: refusedUntilWritten, POOL_2D: refusedUntilWritten, PAD: refusedUntilWritten, ARANGE: refusedUntilWritten,
    ARGSORT: refusedUntilWritten, TOP_K: refusedUntilWritten, TRI: refusedUntilWritten, FILL: refusedUntilWritten,
    UNARY: refusedUntilWritten
} satisfies Record<string, OpRule>;
