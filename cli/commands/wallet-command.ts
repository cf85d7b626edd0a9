import {Argument, Command, InvalidArgumentError} from 'commander';
import type {WalletActionStatus, WalletStatus} from '../../node/node-status.js';
import {dogeToWei, weiToDoge} from '../../ledger/payments/pricing.js';
import {fetchNodeStatus, NodeUnreachableError, type NodeAddressFlags} from '../node-client.js';
import {shortPeerId} from '../../core/display.js';
import {formatDuration, formatTable} from '../../tui/text-format.js';
import {addNodeAddressOptions} from './shared-options.js';

/**
 * `strongdoge wallet …`: the payment wallet of the running node (docs/architecture.md, "Payments"), through its API.
 * Unlike `ledger …` there is no offline path: channels, vouchers owed and redeeming live in the running node.
 */

type WalletFlags = NodeAddressFlags & {json?: boolean};

const PEER_ID = /^[0-9a-f]{64}$/;

function walletSubcommand(name: string, description: string) {
    return addNodeAddressOptions(new Command(name).description(description));
}

/** Asks the running node; none answering is said plainly: the wallet is the node's, there is nothing to read offline. */
async function throughNode<T>(ask: () => Promise<T>): Promise<T> {
    try {
        return await ask();
    } catch (error) {
        if (error instanceof NodeUnreachableError)
            throw new Error(`no strongdoge node answers at ${error.origin}: the wallet lives in the running node. Start it with \`strongdoge\` `
                + '(or `strongdoge start --daemon`) with the same data dir, or pass --host/--port');
        throw error;
    }
}

function print(flags: WalletFlags, value: unknown, text: string) {
    process.stdout.write(flags.json ? JSON.stringify(value, null, 2) + '\n' : text + '\n');
}

function peerArgument(name: string) {
    return new Argument(name, 'the peer\'s node id (64 hex digits; `strongdoge peers --json` lists them)').argParser((value: string) => {
        const peer = value.trim().toLowerCase();
        if (!PEER_ID.test(peer))
            throw new InvalidArgumentError('a peer is named by its whole node id: 64 hex digits.');
        return peer;
    });
}

function dogeArgument(name: string) {
    return new Argument(name, 'DOGE, in decimals (e.g. 25 or 2.5)').argParser((value: string) => {
        let wei: bigint;
        try {
            wei = dogeToWei(value);
        } catch {
            throw new InvalidArgumentError('an amount of DOGE is a decimal number with at most 18 decimals.');
        }
        if (wei <= 0n)
            throw new InvalidArgumentError('the amount must be above 0.');
        return weiToDoge(wei);
    });
}

/** `12.5 DOGE`: exact, as the node counts it (wei in decimals), without formatEther's `.0` on whole amounts. */
export function formatDoge(doge: string) {
    return `${doge.replace(/\.0$/, '')} DOGE`;
}

const channelShort = (channel: string) => `${channel.slice(0, 10)}…`;
/** The peer's short id, or the other side's wallet when no connected peer is bound to it. */
const peerCell = (peer: string | null, wallet: string) => peer === null ? `wallet ${wallet.slice(0, 10)}…` : shortPeerId(peer);

/** The payer's side of a channel: open, closing until it may withdraw, or closed. */
function payingState(closesAt: string | null, now: number) {
    if (closesAt === null)
        return 'open';
    return Date.parse(closesAt) > now ? `closing: withdraw from ${closesAt}` : 'closed: withdraw';
}

/** The payee's side: open, closing (redeem before then), or closed (too late to redeem). */
function paidByState(closesAt: string | null, now: number) {
    if (closesAt === null)
        return 'open';
    return Date.parse(closesAt) > now ? `closing: redeem before ${closesAt}` : 'closed';
}

function redeemingText(redeeming: WalletStatus['redeeming']) {
    const every = `every ${formatDuration(redeeming.intervalSeconds)}, or once ${formatDoge(redeeming.threshold)} is owed`;
    const last = redeeming.lastRedeem === null
        ? 'nothing redeemed yet'
        : `last ${formatDoge(redeeming.lastRedeem.paid)} from ${channelShort(redeeming.lastRedeem.channel)} at ${redeeming.lastRedeem.at} (tx ${redeeming.lastRedeem.txHash})`;
    return [
        `${every}; ${last}`,
        ...redeeming.pending.map((pending) => `  pending: ${formatDoge(pending.amount)} from ${channelShort(pending.channel)}, tx ${pending.txHash}`),
        ...(redeeming.nextAttemptAt === null ? [] : [`  next attempt at ${redeeming.nextAttemptAt}`]),
        ...(redeeming.lastError === null ? [] : [`  last error: ${redeeming.lastError}`])
    ];
}

/** `strongdoge wallet` as text: the wallet and its balance, the price, the totals, the channels both ways, redeeming. */
export function walletText(wallet: WalletStatus, now = Date.now()) {
    const line = (key: string, value: string) => `${key.padEnd(13)}${value}`;
    if (wallet.address === null)
        return [
            line('payments', `off: ${wallet.offReason ?? 'not configured'}`),
            line('price', priceText(wallet.price))
        ].join('\n');
    const lines = [
        line('wallet', `${wallet.address} on chain ${wallet.chainId}`),
        line('contract', wallet.contract ?? 'none'),
        line('balance', wallet.balance === null ? `unknown: ${wallet.chainError ?? 'the chain did not answer'}` : formatDoge(wallet.balance)),
        line('price', priceText(wallet.price)),
        line('earned', `${formatDoge(wallet.earned)} serving peers, ${formatDoge(wallet.owed)} of it owed (not redeemed yet)`),
        line('paid', `${formatDoge(wallet.paid)} to peers, ${formatDoge(wallet.deposited)} deposited in channels`),
        line('auto-deposit', wallet.autoDeposit.cap === '0.0' ? 'off' : `up to ${formatDoge(wallet.autoDeposit.cap)}, ${formatDoge(wallet.autoDeposit.used)} used`)
    ];
    lines.push(`paying (${wallet.paying.length} channel${wallet.paying.length === 1 ? '' : 's'})`);
    if (wallet.paying.length > 0)
        lines.push(...indent(formatTable(['PEER', 'CHANNEL', 'DEPOSITED', 'PAID', 'REDEEMED', 'STATE'], wallet.paying.map((channel) => [
            peerCell(channel.peer, channel.payee), channelShort(channel.channel), formatDoge(channel.deposited),
            formatDoge(channel.paid), formatDoge(channel.redeemed), payingState(channel.closesAt, now)
        ]))));
    lines.push(`paid by (${wallet.paidBy.length} channel${wallet.paidBy.length === 1 ? '' : 's'})`);
    if (wallet.paidBy.length > 0)
        lines.push(...indent(formatTable(['PEER', 'CHANNEL', 'DEPOSITED', 'VOUCHED', 'OWED', 'REDEEMED', 'STATE'], wallet.paidBy.map((channel) => [
            peerCell(channel.peer, channel.payer), channelShort(channel.channel), formatDoge(channel.deposited),
            formatDoge(channel.vouched), formatDoge(channel.owed), formatDoge(channel.redeemed), paidByState(channel.closesAt, now)
        ]))));
    const [first, ...rest] = redeemingText(wallet.redeeming);
    lines.push(line('redeeming', first!), ...rest.map((each) => `${' '.repeat(13)}${each.trimStart()}`));
    return lines.join('\n');
}

function priceText(price: number) {
    return price === 0 ? 'free (0 DOGE per million tokens)' : `${price} DOGE per million tokens`;
}

function indent(table: string) {
    return table.split('\n').map((row) => `  ${row}`);
}

type WalletTransaction = WalletActionStatus['transactions'][number];

const ACTION_WORDS: Record<WalletTransaction['action'], (amount: string, channel: string) => string> = {
    open: (amount, channel) => `opened channel ${channel} with ${amount}`,
    deposit: (amount, channel) => `deposited ${amount} into channel ${channel}`,
    redeem: (amount, channel) => `redeemed ${amount} from channel ${channel}`,
    close: (_amount, channel) => `asked to close channel ${channel}: the peer may still redeem for the challenge period (24 h), `
        + 'then `strongdoge wallet withdraw` returns the rest',
    withdraw: (amount, channel) => `withdrew ${amount} from channel ${channel}`
};

/** What `wallet deposit|redeem|close|withdraw` sent, one transaction a line. */
export function walletActionText({transactions}: WalletActionStatus, action: 'deposit' | 'redeem' | 'close' | 'withdraw') {
    if (transactions.length === 0)
        return action === 'redeem' ? 'nothing to redeem: no voucher held is above what was redeemed' : 'nothing was sent';
    return transactions.map(({action: done, amount, channel, txHash, gasUsed}) =>
        `${ACTION_WORDS[done](amount === null ? 'nothing' : formatDoge(amount), channel)} (tx ${txHash}${gasUsed === null ? '' : `, ${gasUsed.toLocaleString('en-US')} gas`})`).join('\n');
}

export function walletCommand() {
    const wallet = new Command('wallet').description('the running node\'s payment wallet: balance, price, channels; deposit, redeem, close, withdraw');
    wallet.addCommand(walletSubcommand('show', 'the wallet, its balance, the price, what was earned, owed, paid and deposited, the channels both ways (the default)')
        .action(async (flags: WalletFlags) => {
            const status = await throughNode(() => fetchNodeStatus(flags, '/api/wallet'));
            print(flags, status, walletText(status));
        }), {isDefault: true});
    wallet.addCommand(walletSubcommand('deposit', 'open a channel to a peer\'s wallet with this much DOGE, or top up the open one')
        .addArgument(peerArgument('<peer id>'))
        .addArgument(dogeArgument('<DOGE>'))
        .action(async (peer: string, amount: string, flags: WalletFlags) => {
            const outcome = await throughNode(() => fetchNodeStatus(flags, '/api/wallet/deposit', {peer, amount}));
            print(flags, outcome, walletActionText(outcome, 'deposit'));
        }));
    wallet.addCommand(walletSubcommand('redeem', 'redeem the vouchers peers paid with now, rather than at the next interval')
        .action(async (flags: WalletFlags) => {
            const outcome = await throughNode(() => fetchNodeStatus(flags, '/api/wallet/redeem', {}));
            print(flags, outcome, walletActionText(outcome, 'redeem'));
        }));
    wallet.addCommand(walletSubcommand('close', 'ask to close the channel to a peer: it may redeem for 24 h more, then `wallet withdraw` returns the rest')
        .addArgument(peerArgument('<peer id>'))
        .action(async (peer: string, flags: WalletFlags) => {
            const outcome = await throughNode(() => fetchNodeStatus(flags, '/api/wallet/close', {peer}));
            print(flags, outcome, walletActionText(outcome, 'close'));
        }));
    wallet.addCommand(walletSubcommand('withdraw', 'take back what a closed channel to a peer holds beyond what it redeemed')
        .addArgument(peerArgument('<peer id>'))
        .action(async (peer: string, flags: WalletFlags) => {
            const outcome = await throughNode(() => fetchNodeStatus(flags, '/api/wallet/withdraw', {peer}));
            print(flags, outcome, walletActionText(outcome, 'withdraw'));
        }));
    return wallet;
}
