/**
 * Appends served records one at a time to a contribution log and prints each job id on stdout once `append` says it
 * is written, as a node would before it acknowledges a receipt to a peer; for a test that kills this process right
 * after. Records wait up to `flushMs` to be batched (long, so a record only queued is plainly not on disk).
 * Usage: node --import tsx ledger-acknowledged.ts <corestore dir> <owner secret key hex> <count> <flushMs>
 */
import {ContributionLog} from '../ledger/contribution-log.js';
import {countersignedReceipt, keyPair, servedRecord} from './ledger-fixture.js';

const [directory, secretKeyHex, countText, flushText] = process.argv.slice(2) as [string, string, string, string];
const secretKey = Buffer.from(secretKeyHex, 'hex');
const owner = {publicKey: secretKey.subarray(32), secretKey, id: secretKey.subarray(32).toString('hex')};
const log = await ContributionLog.open({directory, identity: owner, flushIntervalMs: Number(flushText)});
const requester = keyPair();
for (let index = 0; index < Number(countText); index++) {
    const record = servedRecord(countersignedReceipt(owner, requester));
    await log.append(record);
    process.stdout.write(`${record.type === 'served' ? record.receipt.body.jobId : ''}\n`);
    // The next one is queued, not written, when the test kills this process.
}
await log.close();
process.stdout.write('done\n');
