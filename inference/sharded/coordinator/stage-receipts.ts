import {randomBytes} from 'node:crypto';
import type {ShardReceipt} from '../../../ledger/records.js';
import type {ActiveStage, ClusterModel} from './pipeline-types.js';

/** A receipt's body for the tokens a remote stage's layers helped generate (a `shard` record in its host's log; ledger/points.ts). */
export function stageReceiptBody(model: ClusterModel, coordinatorId: string, stage: ActiveStage, tokens: number): ShardReceipt['body'] {
    return {
        version: 1,
        session: randomBytes(32).toString('hex'),
        model: model.id,
        modelBytes: model.sizeBytes,
        layerCount: model.shape.layerBytes.length,
        firstLayer: stage.firstLayer,
        lastLayer: stage.lastLayer,
        tokens,
        computeMs: Math.round(stage.endpoint.takeBusyMs()),
        host: stage.peerId,
        coordinator: coordinatorId,
        completedAt: new Date().toISOString()
    };
}
