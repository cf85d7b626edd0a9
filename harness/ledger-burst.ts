/**
 * Appends a burst of served records to a contribution log and reports progress on stdout, for a test that kills
 * this process mid-burst. Usage: node --import tsx ledger-burst.ts <corestore dir> <owner secret key hex> <count>
 */
import {ContributionLog} from '../ledger/contribution-log.js';
import {countersignedReceipt, keyPair, servedRecord} from './ledger-fixture.js';

const [directory, secretKeyHex, countText] = process.argv.slice(2) as [string, string, string];
const secretKey = Buffer.from(secretKeyHex, 'hex');
const owner = {publicKey: secretKey.subarray(32), secretKey, id: secretKey.subarray(32).toString('hex')};
const log = await ContributionLog.open({directory, identity: owner});
const requester = keyPair();
log.on('appended', () => process.stdout.write(`${log.length}\n`));
for (let index = 0; index < Number(countText); index++) {
    log.append(servedRecord(countersignedReceipt(owner, requester, {completionTokens: 1 + (index % 50)})));
    if (index % 200 === 0)
        await new Promise((resolve) => setImmediate(resolve));
}
await log.close();
process.stdout.write('done\n');
