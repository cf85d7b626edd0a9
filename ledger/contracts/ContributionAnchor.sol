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

    /// @notice Records that `core` had `logLength` entries with tree hash `treeHash`, as seen by the sender.
    function anchor(bytes32 core, uint64 logLength, bytes32 treeHash) external {
        emit Anchored(msg.sender, core, logLength, treeHash, block.timestamp);
    }
}
