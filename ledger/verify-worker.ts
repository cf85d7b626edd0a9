import {parentPort} from 'node:worker_threads';
import {checkChunk, type VerifyChunk} from './verify-workers.js';

/** One thread of `verify`'s pool (ledger/verify-workers.ts): checks the chunks of records it is sent, one at a time. */
parentPort!.on('message', ({id, owner, coreKey, domain, attestedByLog, firstIndex, bytes, lengths}: VerifyChunk) => {
    parentPort!.postMessage({id, verdicts: checkChunk({owner, coreKey, domain, attestedByLog, firstIndex}, Buffer.from(bytes), lengths)});
});
