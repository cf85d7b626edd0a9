import {mkdir, readFile, writeFile} from 'node:fs/promises';
import {join} from 'node:path';
import type {Wallet} from 'ethers';
import type {NodeSettings} from './node-settings.js';
import {readAnchorEvents} from '../ledger/anchor/anchor-events.js';
import type {ChainSettings} from '../ledger/anchor/chain.js';
import {Anchorer, type AnchorOutcome} from '../ledger/anchorer.js';
import {ContributionLog} from '../ledger/contribution-log.js';
import {LedgerError} from '../ledger/ledger-error.js';
import type {Receipt} from '../ledger/receipt.js';
import {LEDGER_RECORD_VERSION, type ShardReceipt} from '../ledger/records.js';
import {verifyLog, type VerifyReport} from '../ledger/verify-log.js';
import {loadWallet} from '../ledger/wallet.js';
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
        deployedContract: join(directory, 'anchor-contract.json')
    };
}

/** The contract `ledger deploy` stored for a chain, if any. */
export async function storedAnchorContract(dataDir: string, chainId: number): Promise<string | undefined> {
    try {
        const stored = JSON.parse(await readFile(ledgerPaths(dataDir).deployedContract, 'utf8')) as {chainId: number, address: string};
        return stored.chainId === chainId ? stored.address : undefined;
    } catch {
        return undefined;
    }
}

export async function storeAnchorContract(dataDir: string, chainId: number, address: string, txHash: string | null) {
    await mkdir(ledgerPaths(dataDir).directory, {recursive: true, mode: 0o700});
    await writeFile(ledgerPaths(dataDir).deployedContract, JSON.stringify({chainId, address, txHash}, null, 2) + '\n', {mode: 0o600});
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
        private readonly chain: ChainSettings & {contract: string | undefined},
        readonly anchorer: Anchorer | undefined,
        readonly anchoringOff: string | undefined
    ) {}

    static async open({settings, identity, walletPassword, onNotice}: NodeLedgerOptions): Promise<NodeLedger> {
        const paths = ledgerPaths(settings.dataDir);
        await mkdir(paths.directory, {recursive: true, mode: 0o700});
        const log = await ContributionLog.open({directory: paths.corestore, identity});
        log.on('rejected', (reason) => onNotice('warn', 'a record was refused by the contribution log', {reason}));
        log.on('writeFailed', (reason) => onNotice('warn', 'cannot write to the contribution log; retrying with the next records', {reason}));
        const contract = settings.anchorContract ?? await storedAnchorContract(settings.dataDir, settings.chainId);
        const chain = {rpcUrl: settings.chainRpc, chainId: settings.chainId, contract};
        let wallet: Wallet | undefined;
        let anchoringOff: string | undefined;
        try {
            wallet = await walletFromSettings(settings, walletPassword);
        } catch (error) {
            anchoringOff = (error as Error).message;
        }
        if (anchoringOff === undefined && wallet === undefined)
            anchoringOff = 'no wallet: set STRONGDOGE_WALLET_KEY, or --wallet with STRONGDOGE_WALLET_PASSWORD';
        if (anchoringOff === undefined && contract === undefined)
            anchoringOff = `no anchoring contract for chain ${settings.chainId}: run \`strongdoge ledger deploy\` or pass --anchor-contract`;
        let anchorer: Anchorer | undefined;
        if (anchoringOff === undefined) {
            anchorer = new Anchorer({
                ...chain, contract: contract!, log, wallet: wallet!, statePath: paths.anchorState,
                maxFeeGwei: settings.maxFeeGwei, intervalMs: settings.anchorInterval * 1000
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
        return new NodeLedger(log, replication, chain, anchorer, anchoringOff);
    }

    /**
     * A job served for a peer, or served to this node by one. Resolves once the record is on disk, which is when the
     * receipt may be acknowledged to the peer; rejects with the LedgerError that refused it (docs/architecture.md, "The log").
     */
    recordReceipt(receipt: Receipt, role: 'served' | 'consumed'): Promise<void> {
        return this.log.append({version: LEDGER_RECORD_VERSION, type: role, at: new Date().toISOString(), receipt});
    }

    /** Layers this node hosted for a coordinator, as its signed receipt says: on disk when it resolves, as `recordReceipt`. */
    recordShard(receipt: ShardReceipt): Promise<void> {
        return this.log.append({version: LEDGER_RECORD_VERSION, type: 'shard', at: new Date().toISOString(), receipt});
    }

    /**
     * Peers may replicate this node's log over their connection's mux, read-only, at a bounded rate; a peer's log is
     * replicated only while this node verifies it.
     */
    attach(peer: PeerConnection) {
        this.replication.attach(peer);
    }

    async anchorNow(): Promise<AnchorOutcome> {
        if (this.anchorer === undefined)
            throw LedgerError.notConfigured(`anchoring is off: ${this.anchoringOff}`);
        return this.anchorer.anchorNow();
    }

    /**
     * Verifies this node's log, or the log `core` of another node: replicated from a peer that has it while the node
     * runs, or as far as it was replicated before when it does not (`online` false).
     */
    async verify(core?: string, {online = true}: {online?: boolean} = {}): Promise<VerifyReport> {
        if (this.chain.contract === undefined)
            throw LedgerError.notConfigured(`no anchoring contract for chain ${this.chain.chainId}: pass --anchor-contract`);
        await this.log.flush();
        const key = core ?? this.log.key;
        const anchors = await readAnchorEvents({...this.chain, contract: this.chain.contract}, key);
        if (key === this.log.key)
            return verifyLog(this.log.hypercore, anchors);
        const remote = await this.replication.open(key, {online});
        try {
            if (remote.length === 0 || remote.contiguousLength < remote.length)
                throw LedgerError.notConfigured(`the log ${key} is not (fully) replicated here: no connected peer has it${online ? '' : '; verify it while the node runs'}`);
            return await verifyLog(remote, anchors);
        } finally {
            await remote.close();
        }
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
