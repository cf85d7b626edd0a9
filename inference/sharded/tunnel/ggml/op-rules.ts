/**
 * Every allowed op's contract (docs/peer-protocol.md, "Graph checks"), by name: `graph-check.ts` applies the one of
 * each computed node. The type makes a new op in `op-allowlist.ts` fail to compile until it has a contract.
 */
import type {AllowedOp} from './op-allowlist.js';
import type {OpRule} from './op-rule-kit.js';
import {CORE_OP_RULES} from './op-rules-core.js';
import {ELEMENTWISE_OP_RULES} from './op-rules-elementwise.js';
import {SEQUENCE_OP_RULES} from './op-rules-sequence.js';

export const OP_RULES: Record<AllowedOp, OpRule> = {...CORE_OP_RULES, ...ELEMENTWISE_OP_RULES, ...SEQUENCE_OP_RULES};
