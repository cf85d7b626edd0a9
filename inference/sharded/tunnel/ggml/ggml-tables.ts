/**
 * ggml's vocabulary as the rpc-server we run knows it (docs/peer-protocol.md, "Graph checks"): its tensor types,
 * ops, unary and gated-linear-unit ops, by number. Copied from the llama.cpp node-llama-cpp ships (ggml.h and
 * ggml.c's type traits); test/rpc-graph-check.test.ts reads the same figures out of the libggml-base the server
 * loads and fails when an upgrade changes one.
 */

export const GGML_MAX_DIMS = 4;
export const GGML_MAX_SRC = 10;
/** `op_params` is 64 bytes: 16 int32 words. */
export const GGML_MAX_OP_PARAMS_I32 = 16;

export interface GgmlTypeTraits {
    name: string,
    /** Elements per block: 1 for plain types, 32 or 256 for most quantized ones. */
    blockSize: number,
    /** Bytes per block. */
    typeSize: number,
    quantized: boolean
}

/** By type number (`enum ggml_type`); null where ggml removed the type (its block size is 0). */
export const GGML_TYPES: readonly (GgmlTypeTraits | null)[] = [
    {name: 'f32', blockSize: 1, typeSize: 4, quantized: false}, // 0
    {name: 'f16', blockSize: 1, typeSize: 2, quantized: false},
    {name: 'q4_0', blockSize: 32, typeSize: 18, quantized: true},
    {name: 'q4_1', blockSize: 32, typeSize: 20, quantized: true},
    null, // 4: removed from ggml
    null, // 5: removed from ggml
    {name: 'q5_0', blockSize: 32, typeSize: 22, quantized: true},
    {name: 'q5_1', blockSize: 32, typeSize: 24, quantized: true},
    {name: 'q8_0', blockSize: 32, typeSize: 34, quantized: true},
    {name: 'q8_1', blockSize: 32, typeSize: 36, quantized: true},
    {name: 'q2_K', blockSize: 256, typeSize: 84, quantized: true}, // 10
    {name: 'q3_K', blockSize: 256, typeSize: 110, quantized: true},
    {name: 'q4_K', blockSize: 256, typeSize: 144, quantized: true},
    {name: 'q5_K', blockSize: 256, typeSize: 176, quantized: true},
    {name: 'q6_K', blockSize: 256, typeSize: 210, quantized: true},
    {name: 'q8_K', blockSize: 256, typeSize: 292, quantized: true}, // 15
    {name: 'iq2_xxs', blockSize: 256, typeSize: 66, quantized: true},
    {name: 'iq2_xs', blockSize: 256, typeSize: 74, quantized: true},
    {name: 'iq3_xxs', blockSize: 256, typeSize: 98, quantized: true},
    {name: 'iq1_s', blockSize: 256, typeSize: 50, quantized: true},
    {name: 'iq4_nl', blockSize: 32, typeSize: 18, quantized: true}, // 20
    {name: 'iq3_s', blockSize: 256, typeSize: 110, quantized: true},
    {name: 'iq2_s', blockSize: 256, typeSize: 82, quantized: true},
    {name: 'iq4_xs', blockSize: 256, typeSize: 136, quantized: true},
    {name: 'i8', blockSize: 1, typeSize: 1, quantized: false},
    {name: 'i16', blockSize: 1, typeSize: 2, quantized: false}, // 25
    {name: 'i32', blockSize: 1, typeSize: 4, quantized: false},
    {name: 'i64', blockSize: 1, typeSize: 8, quantized: false},
    {name: 'f64', blockSize: 1, typeSize: 8, quantized: false},
    {name: 'iq1_m', blockSize: 256, typeSize: 56, quantized: true},
    {name: 'bf16', blockSize: 1, typeSize: 2, quantized: false}, // 30
    null, // 31: removed from ggml
    null, // 32: removed from ggml
    null, // 33: removed from ggml
    {name: 'tq1_0', blockSize: 256, typeSize: 54, quantized: true},
    {name: 'tq2_0', blockSize: 256, typeSize: 66, quantized: true}, // 35
    null, // 36: removed from ggml
    null, // 37: removed from ggml
    null, // 38: removed from ggml
    {name: 'mxfp4', blockSize: 32, typeSize: 17, quantized: true},
    {name: 'nvfp4', blockSize: 64, typeSize: 36, quantized: true}, // 40
    {name: 'q1_0', blockSize: 128, typeSize: 18, quantized: true},
    {name: 'q2_0', blockSize: 64, typeSize: 18, quantized: true},
];

export const GgmlType = {F32: 0, F16: 1, Q4_0: 2, Q8_0: 8, I8: 24, I16: 25, I32: 26, I64: 27, F64: 28, BF16: 30} as const;

/** `enum ggml_op`, by number. */
export const GGML_OP_NAMES = [
    'NONE', 'DUP', 'ADD', 'ADD_ID', 'ADD1', 'ACC', 'SUB', 'MUL', 'DIV', 'SQR', 'SQRT', 'LOG', 'SIN', 'COS', 'SUM',
    'SUM_ROWS', 'CUMSUM', 'MEAN', 'ARGMAX', 'COUNT_EQUAL', 'REPEAT', 'REPEAT_BACK', 'CONCAT', 'SILU_BACK', 'NORM',
    'RMS_NORM', 'RMS_NORM_BACK', 'GROUP_NORM', 'L2_NORM', 'MUL_MAT', 'MUL_MAT_ID', 'OUT_PROD', 'SCALE', 'SET',
    'CPY', 'CONT', 'RESHAPE', 'VIEW', 'PERMUTE', 'TRANSPOSE', 'GET_ROWS', 'GET_ROWS_BACK', 'SET_ROWS', 'DIAG',
    'DIAG_MASK_INF', 'DIAG_MASK_ZERO', 'SOFT_MAX', 'SOFT_MAX_BACK', 'ROPE', 'ROPE_BACK', 'CLAMP',
    'CONV_TRANSPOSE_1D', 'IM2COL', 'IM2COL_BACK', 'IM2COL_3D', 'COL2IM_1D', 'CONV_2D', 'CONV_3D', 'CONV_2D_DW',
    'CONV_TRANSPOSE_2D', 'POOL_1D', 'POOL_2D', 'POOL_2D_BACK', 'UPSCALE', 'PAD', 'PAD_REFLECT_1D', 'ROLL',
    'ARANGE', 'TIMESTEP_EMBEDDING', 'ARGSORT', 'TOP_K', 'LEAKY_RELU', 'TRI', 'FILL', 'FLASH_ATTN_EXT',
    'FLASH_ATTN_BACK', 'SSM_CONV', 'SSM_SCAN', 'WIN_PART', 'WIN_UNPART', 'GET_REL_POS', 'ADD_REL_POS', 'RWKV_WKV6',
    'GATED_LINEAR_ATTN', 'RWKV_WKV7', 'SOLVE_TRI', 'GATED_DELTA_NET', 'LIGHTNING_INDEXER', 'DSV4_HC_COMB',
    'DSV4_HC_PRE', 'DSV4_HC_POST', 'UNARY', 'MAP_CUSTOM1', 'MAP_CUSTOM2', 'MAP_CUSTOM3', 'CUSTOM',
    'CROSS_ENTROPY_LOSS', 'CROSS_ENTROPY_LOSS_BACK', 'OPT_STEP_ADAMW', 'OPT_STEP_SGD', 'GLU'
] as const;

export type GgmlOpName = typeof GGML_OP_NAMES[number];

/** Op numbers by name. */
export const GgmlOp = Object.fromEntries(GGML_OP_NAMES.map((name, op) => [name, op])) as Record<GgmlOpName, number>;

/** `enum ggml_unary_op` (a UNARY node's op_params[0]). */
export const GGML_UNARY_OP_NAMES = [
    'ABS', 'SGN', 'NEG', 'STEP', 'TANH', 'ELU', 'RELU', 'SIGMOID', 'GELU', 'GELU_QUICK', 'SILU', 'HARDSWISH',
    'HARDSIGMOID', 'EXP', 'EXPM1', 'SOFTPLUS', 'GELU_ERF', 'XIELU', 'FLOOR', 'CEIL', 'ROUND', 'TRUNC'
] as const;

/** `enum ggml_glu_op` (a GLU node's op_params[0]). */
export const GGML_GLU_OP_NAMES = [
    'REGLU', 'GEGLU', 'SWIGLU', 'SWIGLU_OAI', 'GEGLU_ERF', 'GEGLU_QUICK', 'SWIGLU_CLAMP'
] as const;

export function typeName(type: number) {
    return GGML_TYPES[type]?.name ?? `type ${type}`;
}

export function opName(op: number) {
    return GGML_OP_NAMES[op] ?? `op ${op}`;
}
