import {mkdir, readFile, rename, writeFile} from 'node:fs/promises';
import {join} from 'node:path';
import type {Wallet} from 'ethers';
import type {NodeSettings} from './node-settings.js';
import {countedAnchors, readAnchorEvents} from '../ledger/anchor/anchor-events.js';
import type {ChainSettings} from '../ledger/anchor/chain.js';
import {type Revocation, revokeWallet, walletAddress} from '../ledger/anchor/wallet-revocation.js';
import {Anchorer, type AnchorOutcome, MINING_TIMEOUT_MS} from '../ledger/anchorer.js';
import {ContributionLog} from '../ledger/contribution-log.js';
import {LedgerError} from '../ledger/ledger-error.js';
import type {Receipt} from '../ledger/receipt.js';
import {readRedeemedEvents} from '../ledger/payments/redeem-events.js';
import {LEDGER_RECORD_VERSION, type ShardReceipt} from '../ledger/records.js';
import {readLogHeader, verifyLog, type VerifyReport} from '../ledger/verify-log.js';
import {loadWallet} from '../ledger/wallet.js';
import {WalletLock} from '../ledger/wallet-lock.js';
import {LedgerReplication} from './ledger-replication.js';
import type {NodeIdentity} from '../swarm/node-identity.js';
import type {PeerConnection} from '../swarm/peer-connection.js';
import type {PeerProtocol} from '../swarm/peer-protocol.js';

/** The ledger's files in the data dir. */
export function ledgerPaths(dataDir: string) {
    const directory = join(dataDir, 'ledger');
    return {
        directory,
        corestore: join(directory, 'corestore'),
        anchorState: join(directory, 'anchor-state.json'),
        deployedContract: join(directory, 'anchor-contract.json'),
        paymentContract: join(directory, 'payment-contract.json')
    };
}

const NO_WALLET = 'no wallet: set STRONGDOGE_WALLET_KEY, or --wallet with STRONGDOGE_WALLET_PASSWORD';

/** The version of the anchoring contract's interface: 2 added owners, expiries and revocations to authorizations. */
const CONTRACT_VERSION = 2;

/** The contract `ledger deploy` stored for a chain, if any, and the block it was deployed in; one of an older interface is not used. */
export async function storedAnchorContract(dataDir: string, chainId: number): Promise<{address: string, blockNumber: number} | undefined> {
    try {
        const stored = JSON.parse(await readFile(ledgerPaths(dataDir).deployedContract, 'utf8')) as {chainId: number, address: string, blockNumber?: number,
            version?: number};
        return stored.chainId === chainId && stored.version === CONTRACT_VERSION ? {address: stored.address, blockNumber: stored.blockNumber ?? 0} : undefined;
    } catch {
        return undefined;
    }
}

export async function storeAnchorContract(dataDir: string, chainId: number, {address, txHash, blockNumber}: {address: string, txHash: string | null,
    blockNumber: number}) {
    await mkdir(ledgerPaths(dataDir).directory, {recursive: true, mode: 0o700});
    await writeFile(ledgerPaths(dataDir).deployedContract, JSON.stringify({chainId, address, txHash, blockNumber, version: CONTRACT_VERSION}, null, 2) + '\n',
        {mode: 0o600});
}

/** The payment channel contract `ledger deploy` stored for a chain, if any (docs/architecture.md, "Payments (contract)"). */
export async function storedPaymentContract(dataDir: string, chainId: number): Promise<{address: string, blockNumber: number} | undefined> {
    try {
        const stored = JSON.parse(await readFile(ledgerPaths(dataDir).paymentContract, 'utf8')) as {chainId: number, address: string, blockNumber?: number};
        return stored.chainId === chainId ? {address: stored.address, blockNumber: stored.blockNumber ?? 0} : undefined;
    } catch {
        return undefined;
    }
}

export async function storePaymentContract(dataDir: string, chainId: number, {address, txHash, blockNumber}: {address: string, txHash: string | null,
    blockNumber: number}) {
    await mkdir(ledgerPaths(dataDir).directory, {recursive: true, mode: 0o700});
    await writeFile(ledgerPaths(dataDir).paymentContract, JSON.stringify({chainId, address, txHash, blockNumber}, null, 2) + '\n', {mode: 0o600});
}

/** The wallet from STRONGDOGE_WALLET_KEY, or the configured keystore opened with `password`. */
export function walletFromSettings(settings: Pick<NodeSettings, 'wallet'>, password: string | undefined, env: NodeJS.ProcessEnv = process.env) {
    return loadWallet({
        ...(env.STRONGDOGE_WALLET_KEY !== undefined && {privateKey: env.STRONGDOGE_WALLET_KEY}),
        ...(settings.wallet !== undefined && {keystorePath: settings.wallet}),
        ...(password !== undefined && {password})
    });
}

export interface NodeLedgerOptions {
    settings: NodeSettings,
    identity: NodeIdentity,
    /** The keystore's password, when `--wallet` names one; defaults to none. */
    walletPassword?: string,
    /** Told once why anchoring is off, and of every anchor and failure. */
    onNotice: (level: 'info' | 'warn', message: string, fields?: object) => void
}

/**
 * The node's side of the ledger: its contribution log (receipts of jobs served and consumed go in as they are
 * countersigned), anchoring on the chain when a wallet and a contract are configured, replication of logs to peers,
 * and verification of this node's log or a peer's.
 */
export class NodeLedger implements PeerProtocol {
    private constructor(
        readonly log: ContributionLog,
        private readonly replication: LedgerReplication,
        private readonly chain: ChainSettings & {contract: string | undefined, fromBlock: number, confirmations: number, pageBlocks: number},
        private readonly network: string,
        readonly anchorer: Anchorer | undefined,
        readonly anchoringOff: string | undefined,
        /** This node and the peers it trusts (`--trusted-peers`): work done for them is witnessed when it verifies a log. */
        private readonly witnesses: ReadonlySet<string>,
        /** The configured wallet, which pays for revocations too, or why there is none. */
        private readonly wallet: {wallet: Wallet} | {missing: string},
        private readonly maxFeeGwei: number,
        /** One lock for everything the wallet sends (ledger/wallet-lock.ts): anchors, revocations, and the payments' transactions. */
        private readonly lock: WalletLock,
        /** The payment contract (`--payment-contract`, else the one `ledger deploy` stored) and the block its events are read from. */
        private readonly paymentContract: {address: string, fromBlock: number} | undefined
    ) {}

    static async open({settings, identity, walletPassword, onNotice}: NodeLedgerOptions): Promise<NodeLedger> {
        const paths = ledgerPaths(settings.dataDir);
        await mkdir(paths.directory, {recursive: true, mode: 0o700});
        const log = await ContributionLog.open({directory: paths.corestore, identity, domain: {network: settings.network, chainId: settings.chainId},
            witnesses: new Set(settings.trustedPeers)});
        if (log.replacedLog !== null) {
            // The anchoring state belongs to the old log: its authorizations and its pending transaction.
            const stateMovedTo = paths.anchorState.replace(/\.json$/, `-v${log.replacedLog.version}-${new Date().toISOString().slice(0, 10)}.json`);
            await rename(paths.anchorState, stateMovedTo).catch(() => undefined);
            onNotice('warn', `the contribution log in this data dir was of record version ${log.replacedLog.version}: moved aside, and a new log `
                + 'started (its anchoring contract needs `strongdoge ledger deploy` again)', {movedTo: log.replacedLog.movedTo, core: log.key});
        }
        log.on('rejected', (reason) => onNotice('warn', 'a record was refused by the contribution log', {reason}));
        log.on('writeFailed', (reason) => onNotice('warn', 'cannot write to the contribution log; retrying with the next records', {reason}));
        const stored = settings.anchorContract === undefined ? await storedAnchorContract(settings.dataDir, settings.chainId) : undefined;
        const contract = settings.anchorContract ?? stored?.address;
        const chain = {rpcUrl: settings.chainRpc, chainId: settings.chainId, contract, fromBlock: settings.anchorContractBlock ?? stored?.blockNumber ?? 0,
            confirmations: settings.confirmations, pageBlocks: settings.chainLogBlocks};
        let wallet: Wallet | undefined;
        let anchoringOff: string | undefined;
        let walletMissing: string | undefined;
        try {
            wallet = await walletFromSettings(settings, walletPassword);
        } catch (error) {
            anchoringOff = walletMissing = (error as Error).message;
        }
        if (anchoringOff === undefined && wallet === undefined)
            anchoringOff = NO_WALLET;
        if (anchoringOff === undefined && contract === undefined)
            anchoringOff = `no anchoring contract for chain ${settings.chainId}: run \`strongdoge ledger deploy\` or pass --anchor-contract`;
        if (anchoringOff === undefined && (log.domain.network !== settings.network || log.domain.chainId !== settings.chainId))
            anchoringOff = `this data dir's log was started for network '${log.domain.network}' on chain ${log.domain.chainId}: use a data dir per network`;
        const walletLock = new WalletLock();
        let anchorer: Anchorer | undefined;
        if (anchoringOff === undefined) {
            anchorer = new Anchorer({
                ...chain, contract: contract!, log, wallet: wallet!, walletLock, statePath: paths.anchorState,
                maxFeeGwei: settings.maxFeeGwei, intervalMs: settings.anchorInterval * 1000, confirmations: settings.confirmations
            });
            anchorer.on('anchored', (record) => onNotice('info', 'anchored the contribution log',
                {logLength: record.logLength, block: record.blockNumber, txHash: record.txHash}));
            anchorer.on('failed', (error) => onNotice('warn', `anchoring failed; retrying: ${error.message}`, {code: error.code}));
            await anchorer.start();
            onNotice('info', 'anchoring the contribution log', {chainId: settings.chainId, contract, wallet: wallet!.address,
                everySeconds: settings.anchorInterval});
        } else {
            onNotice('info', `anchoring is off (the log still grows): ${anchoringOff}`);
        }
        // Peers' logs: only the one asked for, within these bounds (docs/peer-protocol.md, "Ledger replication").
        const replication = new LedgerReplication({log, onNotice, limits: {maxRecords: settings.peerLogMaxRecords,
            maxBytes: settings.peerLogMaxBytes, maxTotalBytes: settings.peerLogsMaxBytes, bytesPerSecond: settings.peerLogRate}});
        const storedPayment = await storedPaymentContract(settings.dataDir, settings.chainId);
        const paymentAddress = settings.paymentContract ?? storedPayment?.address;
        const paymentContract = paymentAddress === undefined ? undefined : {address: paymentAddress,
            fromBlock: storedPayment?.address.toLowerCase() === paymentAddress.toLowerCase() ? storedPayment.blockNumber : 0};
        return new NodeLedger(log, replication, chain, settings.network, anchorer, anchoringOff, new Set([identity.id, ...settings.trustedPeers]),
            wallet === undefined ? {missing: walletMissing ?? NO_WALLET} : {wallet}, settings.maxFeeGwei, walletLock, paymentContract);
    }

    /**
     * A job served for a peer, or served to this node by one. Resolves once the record is on disk, which is when the
     * receipt may be acknowledged to the peer (a provider countersigns only then); rejects with the LedgerError that
     * refused it (docs/architecture.md, "The log").
     */
    recordReceipt(receipt: Receipt, role: 'served' | 'consumed'): Promise<void> {
        return this.log.append({version: LEDGER_RECORD_VERSION, type: role, at: new Date().toISOString(), receipt});
    }

    /** Whether this node's log holds a job it served under that id: a requester may not use one twice. */
    servedJob(jobId: string) {
        return this.log.hasWork(`served:${jobId}`);
    }

    /**
     * A shard receipt both sides signed: layers this node hosted for a coordinator (`shard`), or a host's layers this
     * node's pipeline used (`shard-consumed`); on disk when it resolves, as `recordReceipt`.
     */
    recordShard(receipt: ShardReceipt, role: 'shard' | 'shard-consumed'): Promise<void> {
        return this.log.append({version: LEDGER_RECORD_VERSION, type: role, at: new Date().toISOString(), receipt});
    }

    /**
     * Peers may replicate this node's log over their connection's mux, read-only, at a bounded rate; a peer's log is
     * replicated only while this node verifies it.
     */
    attach(peer: PeerConnection) {
        this.replication.attach(peer);
    }

    /** The configured wallet (anchoring's, which payments use too), or why there is none. */
    paymentWallet() {
        return this.wallet;
    }

    /** The lock every transaction of that wallet is signed and sent under (ledger/wallet-lock.ts); the payments take it too. */
    walletLock() {
        return this.lock;
    }

    async anchorNow(): Promise<AnchorOutcome> {
        if (this.anchorer === undefined)
            throw LedgerError.notConfigured(`anchoring is off: ${this.anchoringOff}`);
        return this.anchorer.anchorNow();
    }

    /**
     * Revokes the owner's authorizations of `wallet` to anchor this log that are still valid, paid by the configured
     * wallet (any wallet may send a revocation) and awaited to the confirmation depth (docs/architecture.md,
     * "Anchoring"). When it is this node's own anchoring wallet, its anchorer stops at its next attempt.
     */
    async revoke(wallet: string): Promise<{revoked: Revocation[]}> {
        const {contract} = this.chain;
        walletAddress(wallet);
        if ('missing' in this.wallet)
            throw LedgerError.notConfigured(`no wallet to pay for the revocation: ${this.wallet.missing}`);
        if (contract === undefined)
            throw LedgerError.notConfigured(`no anchoring contract for chain ${this.chain.chainId}: nothing can have been authorized; pass --anchor-contract`);
        const revoked = await revokeWallet({...this.chain, contract, maxFeeGwei: this.maxFeeGwei, miningTimeoutMs: MINING_TIMEOUT_MS, walletLock: this.lock},
            this.log, this.wallet.wallet, wallet);
        // This node's own wallet: its anchorer stops now rather than at its next attempt (`ledger show` says why).
        if (this.anchorer !== undefined && revoked[0]!.wallet === this.wallet.wallet.address)
            void this.anchorer.anchorNow().catch(() => undefined);
        return {revoked};
    }

    /**
     * Verifies this node's log, or the log `core` of another node: replicated from a peer that has it while the node
     * runs, or as far as it was replicated before when it does not (`online` false). A copy behind its latest anchor
     * is updated once more before it is reported as behind (docs/architecture.md, "Verification"). This node's own log
     * is checked against the payment contract's `Redeemed` events paid to its wallet too (its `payments` part,
     * "Settlement"), when both are configured.
     */
    async verify(core?: string, {online = true}: {online?: boolean} = {}): Promise<VerifyReport> {
        const {contract} = this.chain;
        if (contract === undefined)
            throw LedgerError.notConfigured(`no anchoring contract for chain ${this.chain.chainId}: pass --anchor-contract`);
        await this.log.flush();
        const key = core ?? this.log.key;
        const domain = {network: this.network, chainId: this.chain.chainId};
        const readChain = async (hypercore: typeof this.log.hypercore) => {
            const {header} = await readLogHeader(hypercore);
            return header === null ? {anchors: [], authorizations: []}
                : readAnchorEvents({...this.chain, contract}, {core: key, owner: header.owner, network: header.network});
        };
        if (key === this.log.key) {
            const redeems = await this.ownRedeems();
            return verifyLog(this.log.hypercore, await readChain(this.log.hypercore), {domain, witnesses: this.witnesses, ...(redeems !== undefined && {redeems})});
        }
        const remote = await this.replication.open(key, {online});
        try {
            if (remote.length === 0 || remote.contiguousLength < remote.length)
                throw LedgerError.notConfigured(`the log ${key} is not (fully) replicated here: no connected peer has it${online ? '' : '; verify it while the node runs'}`);
            const chain = await readChain(remote);
            const anchored = Math.max(0, ...countedAnchors(chain).map((anchor) => anchor.logLength));
            if (online && anchored > remote.length)
                await this.replication.refresh(key, remote);
            return await verifyLog(remote, chain, {replicated: true, domain, witnesses: this.witnesses});
        } finally {
            await remote.close();
        }
    }

    /**
     * The payment contract's `Redeemed` events paid to this node's wallet, up to the confirmation depth; undefined
     * (not checked) without a wallet or a payment contract. Read by payee: a redeem recorded while the node had
     * another wallet is not among them.
     */
    private async ownRedeems() {
        if ('missing' in this.wallet || this.paymentContract === undefined)
            return undefined;
        const {rpcUrl, chainId, confirmations, pageBlocks} = this.chain;
        return readRedeemedEvents({rpcUrl, chainId, confirmations, pageBlocks, contract: this.paymentContract.address, fromBlock: this.paymentContract.fromBlock},
            {payee: this.wallet.wallet.address});
    }

    describe() {
        const tally = this.log.tally;
        return {
            core: this.log.key,
            length: this.log.length,
            pendingRecords: this.log.pending,
            points: tally.points,
            tally,
            recent: this.log.recent().slice(0, 20),
            anchors: this.log.anchors.slice(-20),
            anchoring: {
                enabled: this.anchorer !== undefined,
                offReason: this.anchoringOff ?? null,
                chainId: this.chain.chainId,
                contract: this.chain.contract ?? null,
                ...(this.anchorer?.status() ?? {pending: null, lastAnchor: this.log.anchors.at(-1) ?? null, lastError: null, nextAttemptAt: null})
            }
        };
    }

    async close() {
        this.anchorer?.stop();
        await this.log.close();
    }
}
