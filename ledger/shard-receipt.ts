import crypto from 'hypercore-crypto';
import {LedgerError} from './ledger-error.js';
import {shardReceiptSchema, type ShardReceipt} from './records.js';

/** A coordinator's statement that a host served layers of a session, signed by the coordinator. */

const SIGNING_NAMESPACE = 'strongdoge/shard-receipt/v1\n';

type ShardReceiptBody = ShardReceipt['body'];

/** The exact bytes the coordinator signs: the fields in a fixed order. */
export function shardReceiptSigningBytes(body: ShardReceiptBody): Buffer {
    const ordered = shardReceiptSchema.shape.body.keyof().options.map((key) => [key, body[key]]);
    return Buffer.from(SIGNING_NAMESPACE + JSON.stringify(ordered), 'utf8');
}

export function signShardReceipt(body: ShardReceiptBody, coordinatorSecretKey: Buffer): ShardReceipt {
    return {body, coordinatorSignature: crypto.sign(shardReceiptSigningBytes(body), coordinatorSecretKey).toString('hex')};
}

export function verifyShardReceipt(candidate: unknown): ShardReceipt {
    const parsed = shardReceiptSchema.safeParse(candidate);
    if (!parsed.success)
        throw LedgerError.invalidRecord(`malformed shard receipt at ${parsed.error.issues[0]!.path.join('.') || 'top level'}`);
    const {body, coordinatorSignature} = parsed.data;
    if (body.firstLayer > body.lastLayer || body.lastLayer >= body.layerCount)
        throw LedgerError.invalidRecord(`layers ${body.firstLayer}-${body.lastLayer} are not within the model's ${body.layerCount}`);
    if (body.host === body.coordinator)
        throw LedgerError.invalidRecord('a node cannot host layers for itself');
    if (!crypto.verify(shardReceiptSigningBytes(body), Buffer.from(coordinatorSignature, 'hex'), Buffer.from(body.coordinator, 'hex')))
        throw LedgerError.invalidRecord('the coordinator\'s signature does not match the shard receipt');
    return parsed.data;
}
