/**
 * When an anchor counts (docs/architecture.md, "Anchoring"): sent by a wallet the log's owner authorized, after that
 * authorization, before its expiry (`validUntil`, against the anchor's block time) and before its revocation, all of
 * it at the confirmation depth (events past it are never read). Pure: the chain's events in, the windows out.
 */
import {verifyAnchorAuthorization, verifyAnchorRevocation} from '../record-check.js';
import type {SigningDomain} from '../signing-domain.js';

/** Where an event is on the chain: events are ordered by block, then by their index in the block. */
export interface ChainPosition {
    blockNumber: number,
    logIndex: number
}

/** `authorize()` or `revoke()` as the chain holds it; the signature is checked here, not by the EVM. */
export interface OwnerEvent extends ChainPosition {
    kind: 'authorized' | 'revoked',
    owner: string,
    core: string,
    sender: string,
    validUntil: number,
    ownerSignature: string,
    txHash: string
}

/** One anchor as the chain holds it. */
export interface AnchorEvent extends ChainPosition {
    sender: string,
    core: string,
    logLength: number,
    treeHash: string,
    /** The block's time, unix seconds. */
    timestamp: number,
    txHash: string
}

/** A wallet's valid authorization for a core: from its event until its revocation (null: none) and `validUntil`. */
export interface AuthorizationWindow {
    core: string,
    sender: string,
    validUntil: number,
    from: ChainPosition,
    until: ChainPosition | null,
    txHash: string
}

export function before(a: ChainPosition, b: ChainPosition) {
    return a.blockNumber < b.blockNumber || (a.blockNumber === b.blockNumber && a.logIndex < b.logIndex);
}

/**
 * The authorizations among `events` that `owner` signed for this domain and contract, each ended by the first
 * revocation the owner signed for it, in chain order. Anyone can publish anything on the contract: an event whose
 * signature does not verify is ignored.
 */
export function authorizationWindows(events: readonly OwnerEvent[], owner: string, domain: SigningDomain & {contract: string}): AuthorizationWindow[] {
    const signed = (event: OwnerEvent) => {
        const fields = {...domain, core: event.core, sender: event.sender, validUntil: event.validUntil};
        return event.owner === owner && (event.kind === 'authorized'
            ? verifyAnchorAuthorization(fields, owner, event.ownerSignature)
            : verifyAnchorRevocation(fields, owner, event.ownerSignature));
    };
    const valid = events.filter(signed).sort((a, b) => before(a, b) ? -1 : 1);
    const sameAuthorization = (a: OwnerEvent, b: OwnerEvent) =>
        a.core === b.core && a.sender.toLowerCase() === b.sender.toLowerCase() && a.validUntil === b.validUntil;
    return valid.filter((event) => event.kind === 'authorized').map((authorization) => {
        const revocation = valid.find((event) => event.kind === 'revoked' && sameAuthorization(event, authorization));
        return {
            core: authorization.core, sender: authorization.sender, validUntil: authorization.validUntil,
            from: {blockNumber: authorization.blockNumber, logIndex: authorization.logIndex},
            until: revocation === undefined ? null : {blockNumber: revocation.blockNumber, logIndex: revocation.logIndex},
            txHash: authorization.txHash
        };
    });
}

/** Whether `anchor` falls in one of `windows`: its sender authorized for its core at its position and time. */
export function anchorCounts(anchor: AnchorEvent, windows: readonly AuthorizationWindow[]) {
    return windows.some((window) => window.core === anchor.core && window.sender.toLowerCase() === anchor.sender.toLowerCase()
        && before(window.from, anchor) && (window.until === null || before(anchor, window.until)) && anchor.timestamp <= window.validUntil);
}
