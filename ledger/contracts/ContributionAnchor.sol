// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/**
 * @title ContributionAnchor
 * @notice Anchors a contribution ledger (a Hypercore) on chain: its key, its length and its tree hash at that length.
 * @dev Nothing is stored: `ledger verify` reads anchors back from the `Anchored` logs, so an event is all
 *      that is needed, and skipping storage writes keeps each anchor cheap.
 */
contract ContributionAnchor {
    /// @dev Not named `length`: ethers v6 results are arrays, and `Result.length` would shadow it.
    event Anchored(address indexed sender, bytes32 indexed core, uint64 logLength, bytes32 treeHash, uint256 timestamp);

    /// @dev The log's owner (an ed25519 node key, which the EVM cannot check) lets `sender` anchor its log: verifiers
    ///      check `ownerSignature` off chain and count only anchors from senders the owner authorized, so nobody
    ///      else's anchor can make a log look rewritten.
    event Authorized(address indexed sender, bytes32 indexed core, bytes ownerSignature);

    /// @notice Records that `core` had `logLength` entries with tree hash `treeHash`, as seen by the sender.
    function anchor(bytes32 core, uint64 logLength, bytes32 treeHash) external {
        emit Anchored(msg.sender, core, logLength, treeHash, block.timestamp);
    }

    /// @notice Publishes the log owner's permission for the sender to anchor `core`.
    function authorize(bytes32 core, bytes calldata ownerSignature) external {
        emit Authorized(msg.sender, core, ownerSignature);
    }
}
