// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/**
 * @title ContributionAnchor
 * @notice Anchors a contribution ledger (a Hypercore) on chain: its key, its length and its tree hash at that length,
 *         sent by wallets the log's owner authorized for a time (docs/architecture.md, "Anchoring").
 * @dev Nothing is stored: `ledger verify` reads everything back from the events, so an event is all that is needed,
 *      and skipping storage writes keeps each call cheap. The owner is an ed25519 node key, which the EVM cannot
 *      check: verifiers check `ownerSignature` off chain, and count an anchor only from a wallet whose authorization
 *      verifies, between that authorization and its expiry or revocation. Anyone can call anything here; a call
 *      without the owner's valid signature is ignored by verifiers, and the indexed topics let them read only the
 *      events of one owner, or of one core by its authorized wallets, however many others there are.
 */
contract ContributionAnchor {
    /// @dev Not named `length`: ethers v6 results are arrays, and `Result.length` would shadow it.
    event Anchored(address indexed sender, bytes32 indexed core, uint64 logLength, bytes32 treeHash, uint256 timestamp);

    /// @dev The owner lets `sender` anchor `core` until `validUntil` (unix seconds). Indexed by owner, so that every
    ///      log one owner ever authorized is found with one filter (a second log for an identity is flagged).
    event Authorized(bytes32 indexed owner, bytes32 indexed core, address indexed sender, uint64 validUntil, bytes ownerSignature);

    /// @dev The owner withdraws its authorization of `sender` for `core` until `validUntil`, from this block on.
    event Revoked(bytes32 indexed owner, bytes32 indexed core, address indexed sender, uint64 validUntil, bytes ownerSignature);

    /// @notice Records that `core` had `logLength` entries with tree hash `treeHash`, as seen by the sender.
    function anchor(bytes32 core, uint64 logLength, bytes32 treeHash) external {
        emit Anchored(msg.sender, core, logLength, treeHash, block.timestamp);
    }

    /// @notice Publishes the owner's permission for the sender to anchor `core` until `validUntil`.
    function authorize(bytes32 owner, bytes32 core, uint64 validUntil, bytes calldata ownerSignature) external {
        emit Authorized(owner, core, msg.sender, validUntil, ownerSignature);
    }

    /// @notice Publishes the owner's revocation of `sender`'s authorization: any wallet may send it (a lost or stolen
    ///         anchoring wallet cannot be relied on to revoke itself).
    function revoke(bytes32 owner, bytes32 core, address sender, uint64 validUntil, bytes calldata ownerSignature) external {
        emit Revoked(owner, core, sender, validUntil, ownerSignature);
    }
}
