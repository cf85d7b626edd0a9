import type {ShardReceipt} from '../ledger/records.js';
import type {SessionRequest} from '../inference/sharded/tunnel/shard-protocol.js';

export interface ShardReceiptContext {
    /** The peer the receipt came from: the session's coordinator. */
    peerId: string,
    /** This node: the host. */
    hostId: string,
    /** The session the receipt is for. */
    session: Pick<SessionRequest, 'model' | 'layers'>
}

/**
 * Why a coordinator's receipt (its signature already checked) does not fit the session this node hosted, or
 * undefined when it does: it must name its sender, this node, and the model and layers of the session
 * (docs/peer-protocol.md, "Shard channel").
 */
export function shardReceiptProblem(body: ShardReceipt['body'], {peerId, hostId, session}: ShardReceiptContext): string | undefined {
    if (body.coordinator !== peerId)
        return 'it names another coordinator';
    if (body.host !== hostId)
        return 'it names another host';
    if (body.model !== session.model.id || body.firstLayer !== session.layers[0] || body.lastLayer !== session.layers[1])
        return 'it names other layers than the session hosts';
    return undefined;
}
