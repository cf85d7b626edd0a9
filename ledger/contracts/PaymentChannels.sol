// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/**
 * @title PaymentChannels
 * @notice One-way payment channels in the chain's native coin (DOGE on Dogechain): a payer deposits into a channel to
 *         a payee, signs EIP-712 vouchers off chain, each carrying the cumulative amount owed, and the payee redeems
 *         the latest one whenever it likes (docs/architecture.md, "Payments (contract)").
 * @dev A channel's id is keccak256(abi.encode(payer, payee, salt)), the salt chosen by the payer at `open`; a channel
 *      is never deleted, so an id (and every voucher naming it) is used once. `redeemed` only grows, so no voucher is
 *      paid twice and a redeem pays only the difference. Every state change comes before the one value transfer of a
 *      call (checks-effects-interactions): a payee or payer contract that re-enters finds the channel already updated,
 *      so a storage lock, which would cost ~5k gas a call, buys nothing.
 */
contract PaymentChannels {
    /// @notice How long a payee may still redeem after the payer asks to close.
    uint64 public constant CHALLENGE_PERIOD = 24 hours;

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant VOUCHER_TYPEHASH = keccak256("Voucher(bytes32 channel,uint256 amount)");
    bytes32 private constant NAME_HASH = keccak256("StrongdogePaymentChannels");
    bytes32 private constant VERSION_HASH = keccak256("1");
    /// @dev Half the secp256k1 order: a signature with a larger s is the malleable twin of another (EIP-2).
    uint256 private constant HALF_ORDER = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    /// @dev Three slots: payer and closesAt, payee, then both amounts (uint128 holds far more than all DOGE in wei).
    struct Channel {
        address payer;
        /// @dev 0 while open; else the time from which the payer may withdraw and the payee may no longer redeem.
        uint64 closesAt;
        address payee;
        /// @dev Everything deposited; set down to `redeemed` by `withdraw`, which returns the rest.
        uint128 deposited;
        /// @dev The cumulative amount paid to the payee: the highest voucher redeemed.
        uint128 redeemed;
    }

    mapping(bytes32 => Channel) public channels;

    event Opened(bytes32 indexed channel, address indexed payer, address indexed payee, bytes32 salt);
    event Deposited(bytes32 indexed channel, address indexed payer, address indexed payee, uint256 amount, uint256 deposited);
    event Redeemed(bytes32 indexed channel, address indexed payer, address indexed payee, uint256 amount, uint256 redeemed);
    /// @dev `unredeemed`: what the channel holds beyond what was redeemed when the close was asked, the payee's to redeem until `closesAt`.
    event CloseRequested(bytes32 indexed channel, address indexed payer, address indexed payee, uint64 closesAt, uint256 unredeemed);
    event Withdrawn(bytes32 indexed channel, address indexed payer, address indexed payee, uint256 amount);

    error ChannelExists();
    error NoChannel();
    error InvalidPayee();
    error NotPayer();
    error NotPayee();
    error NothingDeposited();
    error Closing();
    error Closed();
    error NotClosing();
    error ChallengePeriod(uint64 closesAt);
    error AlreadyRedeemed(uint256 redeemed);
    error BeyondDeposit(uint256 deposited);
    error BadSignature();
    error NothingToWithdraw();
    error TransferFailed();

    /// @notice The id of the channel `payer` opens to `payee` with `salt`.
    function channelId(address payer, address payee, bytes32 salt) public pure returns (bytes32) {
        return keccak256(abi.encode(payer, payee, salt));
    }

    /// @notice The EIP-712 domain separator: name, version, this chain's id and this contract's address.
    function domainSeparator() public view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    /// @notice Opens a channel from the sender to `payee` with the value sent as its deposit.
    function open(address payee, bytes32 salt) external payable returns (bytes32 channel) {
        if (payee == address(0) || payee == msg.sender) revert InvalidPayee();
        if (msg.value == 0) revert NothingDeposited();
        channel = channelId(msg.sender, payee, salt);
        Channel storage c = channels[channel];
        if (c.payer != address(0)) revert ChannelExists();
        c.payer = msg.sender;
        c.payee = payee;
        c.deposited = uint128(msg.value);
        emit Opened(channel, msg.sender, payee, salt);
        emit Deposited(channel, msg.sender, payee, msg.value, msg.value);
    }

    /// @notice Adds the value sent to the deposit of the sender's open channel.
    function deposit(bytes32 channel) external payable {
        Channel storage c = channels[channel];
        if (c.payer == address(0)) revert NoChannel();
        if (c.payer != msg.sender) revert NotPayer();
        if (c.closesAt != 0) revert Closing();
        if (msg.value == 0) revert NothingDeposited();
        uint128 deposited = c.deposited + uint128(msg.value);
        c.deposited = deposited;
        emit Deposited(channel, msg.sender, c.payee, msg.value, deposited);
    }

    /// @notice Pays the payee what the payer's voucher for `amount` (cumulative) owes beyond what was redeemed before.
    function redeem(bytes32 channel, uint256 amount, bytes calldata signature) external {
        Channel storage c = channels[channel];
        address payer = c.payer;
        if (payer == address(0)) revert NoChannel();
        if (c.payee != msg.sender) revert NotPayee();
        uint64 closesAt = c.closesAt;
        if (closesAt != 0 && block.timestamp >= closesAt) revert Closed();
        uint128 redeemed = c.redeemed;
        if (amount <= redeemed) revert AlreadyRedeemed(redeemed);
        uint128 deposited = c.deposited;
        if (amount > deposited) revert BeyondDeposit(deposited);
        bytes32 digest = keccak256(abi.encodePacked(
            "\x19\x01", domainSeparator(), keccak256(abi.encode(VOUCHER_TYPEHASH, channel, amount))));
        if (recover(digest, signature) != payer) revert BadSignature();
        c.redeemed = uint128(amount);
        uint256 paid = amount - redeemed;
        emit Redeemed(channel, payer, msg.sender, paid, amount);
        send(msg.sender, paid);
    }

    /// @notice Starts the challenge period of the sender's channel, after which it may withdraw what was not redeemed.
    function requestClose(bytes32 channel) external {
        Channel storage c = channels[channel];
        if (c.payer == address(0)) revert NoChannel();
        if (c.payer != msg.sender) revert NotPayer();
        if (c.closesAt != 0) revert Closing();
        uint64 closesAt = uint64(block.timestamp) + CHALLENGE_PERIOD;
        c.closesAt = closesAt;
        emit CloseRequested(channel, msg.sender, c.payee, closesAt, c.deposited - c.redeemed);
    }

    /// @notice Returns to the payer what its closed channel holds beyond what was redeemed.
    function withdraw(bytes32 channel) external {
        Channel storage c = channels[channel];
        if (c.payer == address(0)) revert NoChannel();
        if (c.payer != msg.sender) revert NotPayer();
        uint64 closesAt = c.closesAt;
        if (closesAt == 0) revert NotClosing();
        if (block.timestamp < closesAt) revert ChallengePeriod(closesAt);
        uint128 redeemed = c.redeemed;
        uint256 rest = c.deposited - redeemed;
        if (rest == 0) revert NothingToWithdraw();
        c.deposited = redeemed;
        emit Withdrawn(channel, msg.sender, c.payee, rest);
        send(msg.sender, rest);
    }

    function send(address to, uint256 amount) private {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }

    /// @dev ecrecover of a 65-byte (r, s, v) signature, refusing malleable (high s) and invalid ones.
    function recover(bytes32 digest, bytes calldata signature) private pure returns (address signer) {
        if (signature.length != 65) revert BadSignature();
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := calldataload(signature.offset)
            s := calldataload(add(signature.offset, 32))
            v := byte(0, calldataload(add(signature.offset, 64)))
        }
        if (uint256(s) > HALF_ORDER || (v != 27 && v != 28)) revert BadSignature();
        signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert BadSignature();
    }
}
