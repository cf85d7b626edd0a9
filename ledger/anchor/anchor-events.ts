/**
 * What the chain holds for a log: its `Anchored` and `Authorized` events on the anchoring contract, decoded
 * (docs/architecture.md, "Anchoring" and "Verification").
 */
import {Contract, type EventLog, type Log} from 'ethers';
import {contributionAnchorAbi} from '../generated/contribution-anchor.js';
import {type ChainSettings, withChain} from './chain.js';

/** One anchor as the chain holds it. */
export interface AnchorEvent {
    sender: string,
    core: string,
    logLength: number,
    treeHash: string,
    blockNumber: number,
    txHash: string
}

/** A wallet the log's owner let anchor its log, as the chain holds it (the signature is checked by the verifier). */
export interface AuthorizationEvent {
    sender: string,
    ownerSignature: string,
    blockNumber: number
}

/** What the chain holds for one log on one contract. */
export interface ChainAnchors {
    chainId: number,
    contract: string,
    anchors: AnchorEvent[],
    authorizations: AuthorizationEvent[]
}

/** `Anchored(sender, core, logLength, treeHash)`; a log ethers could not decode by the ABI is skipped. */
function decodeAnchored(event: EventLog | Log): AnchorEvent[] {
    return 'args' in event ? [{
        sender: String(event.args[0]), core: String(event.args[1]).slice(2), logLength: Number(event.args[2]),
        treeHash: String(event.args[3]).slice(2), blockNumber: event.blockNumber, txHash: event.transactionHash
    }] : [];
}

/** `Authorized(sender, core, ownerSignature)`; a log ethers could not decode by the ABI is skipped. */
function decodeAuthorized(event: EventLog | Log): AuthorizationEvent[] {
    return 'args' in event ? [{sender: String(event.args[0]), ownerSignature: String(event.args[2]).slice(2), blockNumber: event.blockNumber}] : [];
}

/** The `Authorized` events of `coreKey` on `contract`, of `sender` only if given. */
export function queryAuthorized(contract: Contract, coreKey: string, sender: string | null = null) {
    return contract.queryFilter(contract.filters.Authorized!(sender, `0x${coreKey}`), 0);
}

/** Every anchor and every authorization of the log `coreKey` on the contract. */
export function readAnchorEvents(settings: ChainSettings & {contract: string}, coreKey: string): Promise<ChainAnchors> {
    return withChain(settings, 'cannot read anchors', async (provider) => {
        const contract = new Contract(settings.contract, contributionAnchorAbi, provider);
        const [anchored, authorized] = await Promise.all([
            contract.queryFilter(contract.filters.Anchored!(null, `0x${coreKey}`), 0),
            queryAuthorized(contract, coreKey)
        ]);
        return {
            chainId: settings.chainId,
            contract: settings.contract,
            anchors: anchored.flatMap(decodeAnchored),
            authorizations: authorized.flatMap(decodeAuthorized)
        };
    });
}
