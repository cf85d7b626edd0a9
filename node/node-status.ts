import {z} from 'zod';
import {anchorRecordSchema, ledgerRecordSchema} from '../ledger/records.js';
import {capabilitiesSchema} from '../swarm/capabilities.js';

/**
 * The status API's documents, described once: the node builds them to these types, `strongdoge status|peers` and
 * the tests parse what the API answers with these schemas (docs/architecture.md, "Status API").
 */

const count = z.number().int().nonnegative();
const nodeId = z.string().regex(/^[0-9a-f]{64}$/);
/** An amount of DOGE in decimals (`formatEther` of wei): `12.5`, `0.0`. */
const doge = z.string().regex(/^\d+\.\d+$/);
/** An amount in wei, in decimals. */
const wei = z.string().regex(/^\d+$/);

/**
 * A model's speculative decoding since its engine started (docs/architecture.md, "Speculative decoding"): passes of
 * the target model, tokens they generated, tokens drafted and accepted; null before its first request.
 */
const speculationSchema = z.object({
    drafter: z.enum(['draft', 'lookup']),
    passes: count,
    tokens: count,
    drafted: count,
    accepted: count,
    /** accepted / drafted; null before anything was drafted. */
    acceptance: z.number().min(0).max(1).nullable(),
    /** tokens / passes: what one round trip through the model yields. Null before the first pass. */
    tokensPerPass: z.number().nonnegative().nullable()
}).nullable();

/** `GET /api/node` */
export const nodeStatusSchema = z.object({
    id: nodeId,
    shortId: z.string(),
    /** null when offline. */
    network: z.string().nullable(),
    privateNetwork: z.boolean(),
    version: z.string(),
    uptimeSeconds: count,
    proxyUrl: z.string().nullable(),
    device: z.object({
        backend: capabilitiesSchema.shape.device.shape.backend,
        gpuNames: z.array(z.string()),
        vramTotalBytes: z.number().nonnegative(),
        vramFreeBytes: z.number().nonnegative(),
        cpuThreads: count,
        build: z.enum(['prebuilt', 'local']),
        ggmlDir: z.string().nullable()
    }).nullable(),
    compute: capabilitiesSchema.shape.compute,
    engine: z.object({
        state: z.enum(['starting', 'loading', 'ready', 'restarting', 'failed', 'stopped']),
        pid: count.nullable(),
        restarts: count,
        lastError: z.string().nullable(),
        running: count,
        queued: count
    }),
    models: z.array(z.object({
        id: z.string(),
        path: z.string(),
        sizeBytes: count,
        layers: count,
        gpuLayers: count,
        contextSize: count,
        parallelSequences: count,
        trainContextSize: count,
        embeddingLength: count,
        flashAttention: z.enum(['on', 'off', 'auto']),
        /** What drafts this model's tokens (`--speculative`); `off` where nothing does. */
        speculative: z.enum(['draft', 'lookup', 'off']),
        /** The draft model (`--draft-model`), loaded whole on this node; null without one. */
        draft: z.object({path: z.string(), sizeBytes: count}).nullable(),
        speculation: speculationSchema
    })),
    peers: count,
    /** How the DHT sees this node's NAT (docs/architecture.md, "Relays"); null when offline or before joining. */
    nat: z.object({
        type: z.enum(['open', 'consistent', 'random', 'unknown']),
        reachable: z.boolean(),
        host: z.string().nullable(),
        port: count.nullable()
    }).nullable(),
    /** Relaying for peers; null when offline. */
    relay: z.object({
        mode: z.enum(['auto', 'on', 'off']),
        offering: z.boolean(),
        key: z.string().regex(/^[0-9a-f]{64}$/),
        through: z.array(nodeId),
        clients: count,
        pairs: count,
        bytesRelayed: count,
        mbps: z.number().nonnegative(),
        maxMbps: z.number().positive().nullable()
    }).nullable(),
    peerJobs: z.object({active: count, served: count}),
    receipts: count,
    /** null while the log opens. */
    ledger: z.object({core: z.string().regex(/^[0-9a-f]{64}$/), length: count, points: z.number().nonnegative(), anchoring: z.boolean()}).nullable(),
    /**
     * DOGE this node earned serving peers, is owed for work not yet redeemed, paid peers, and holds deposited in
     * channels (docs/architecture.md, "Payments"); null when payments are off.
     */
    payments: z.object({earned: doge, owed: doge, paid: doge, deposited: doge}).nullable(),
    bannedPeers: count,
    /** Requests of this node's clients; `cancelled`: the client left before the answer was complete. */
    requests: z.object({total: count, active: count, succeeded: count, failed: count, cancelled: count, completionTokens: count})
});

/** One entry of `GET /api/peers`. */
export const peerStatusSchema = z.object({
    id: nodeId,
    software: z.string(),
    rttMs: z.number().nonnegative().nullable(),
    lastSeen: z.iso.datetime(),
    connectedSeconds: count,
    bytesIn: count,
    bytesOut: count,
    requests: z.object({sent: count, succeeded: count, successRate: z.number().min(0).max(1)}),
    /** Tokens per second received from the peer's answers, over the route in use; null before the first. */
    deliveredTokensPerSecond: z.number().nonnegative().nullable(),
    capabilities: capabilitiesSchema,
    /** Direct, or through a relay: the relay's node id when a connected peer announced its key. */
    route: z.object({kind: z.enum(['direct', 'relayed']), relay: nodeId.nullable(), relayKey: z.string().nullable()}),
    /**
     * Why the connection is held (docs/architecture.md, "Swarm"): `network` (the network's topic), `relay-through`,
     * `on-demand:<why>`, what runs over it (`provider:<model>`, `requester:<model>`, `shard-host`, `shard-coordinator`),
     * `relay` while connections to other peers go through its relay.
     */
    reasons: z.array(z.string().max(300)).max(256),
    /** Something runs over it: it is neither closed as idle nor to make room. */
    inUse: z.boolean(),
    /** Seconds nothing has run over it; 0 while in use. */
    idleSeconds: count
});

/** `GET /api/peers` */
export const peersStatusSchema = z.object({
    peers: z.array(peerStatusSchema),
    /**
     * Connections held (handshakes included) and how many are in use, against `--max-peers`; the idle time after
     * which an on-demand connection closes (0 = never). Null offline.
     */
    connections: z.object({held: count, inUse: count, maxPeers: count, idleTimeoutSeconds: count}).nullable(),
    /**
     * What this node announces on the DHT, for peers beyond its connections to find it (docs/architecture.md,
     * "Finding providers and hosts"): the models it serves (file hashes), and whether it offers room for layers. Null offline.
     */
    announced: z.object({models: z.array(z.string()), host: z.boolean()}).nullable(),
    banned: z.array(z.object({peerId: nodeId, reason: z.string(), offences: count, until: z.iso.datetime()})),
    /** Peers found on the DHT whose last connection attempt failed, with HyperDHT's reason. */
    unreachable: z.array(z.object({peerId: nodeId, code: z.string(), message: z.string(), relay: nodeId.nullable(), attempts: count,
        at: z.iso.datetime()}))
});

/** `GET /api/network/models` */
export const networkModelsStatusSchema = z.object({
    models: z.array(z.object({
        id: z.string(),
        sha256: z.string().nullable(),
        sizeBytes: count,
        layers: count,
        quantization: z.string(),
        resources: z.object({wholeModelBytes: count, perLayerBytes: z.array(count)}),
        holders: z.array(z.object({
            nodeId,
            self: z.boolean(),
            whole: z.boolean(),
            loaded: z.boolean(),
            layers: z.array(z.object({first: count, last: count})),
            pricePerMillionTokens: z.number().nonnegative().nullable()
        })),
        /**
         * Providers as gossip counts them, beyond the connected peers (a lower bound when capped), a few named with
         * how long ago this node had word of them; null for a model gossip does not know. A model known by gossip
         * only has no holders and no layer sizes.
         */
        gossip: z.object({
            providerCount: count,
            providerCountCapped: z.boolean(),
            providers: z.array(z.object({nodeId, self: z.boolean(), direct: z.boolean(), ageMs: count})),
            ageMs: count
        }).nullable()
    }))
});

const tallySchema = z.object({
    points: z.number().nonnegative(), milliPoints: z.string().regex(/^\d+$/), witnessedPoints: z.number().nonnegative(),
    servedJobs: count, servedTokens: count, embeddedJobs: count, embeddedTokens: count, shardSessions: count, shardTokens: count,
    consumedJobs: count, consumedTokens: count, shardConsumed: count, shardConsumedTokens: count, anchors: count,
    ignored: z.object({selfDealt: count, duplicate: count, notOwner: count})
});

/** `GET /api/ledger` */
export const ledgerStatusSchema = z.object({
    core: z.string().regex(/^[0-9a-f]{64}$/),
    length: count,
    pendingRecords: count,
    points: z.number().nonnegative(),
    tally: tallySchema,
    recent: z.array(ledgerRecordSchema),
    anchors: z.array(anchorRecordSchema),
    anchoring: z.object({
        enabled: z.boolean(),
        offReason: z.string().nullable(),
        chainId: count,
        contract: z.string().nullable(),
        pending: z.object({logLength: count, txHash: z.string()}).nullable(),
        lastAnchor: anchorRecordSchema.nullable(),
        lastError: z.string().nullable(),
        nextAttemptAt: z.iso.datetime().nullable()
    })
});

/** `POST /api/ledger/anchor` */
export const anchorOutcomeSchema = z.discriminatedUnion('status', [
    z.object({status: z.literal('anchored'), record: anchorRecordSchema}),
    z.object({status: z.literal('up-to-date'), logLength: count})
]);

/** `POST /api/ledger/revoke` with `{wallet}`: the authorizations of that wallet it revoked, each confirmed. */
export const revocationOutcomeSchema = z.object({
    revoked: z.array(z.object({
        wallet: z.string().regex(/^0x[0-9a-fA-F]{40}$/),
        /** Until when the revoked authorization was valid, unix seconds. */
        validUntil: count,
        txHash: z.string().regex(/^0x[0-9a-f]{64}$/),
        blockNumber: count
    })).min(1)
});

/** `POST /api/ledger/verify` */
export const verifyReportSchema = z.object({
    core: z.string(),
    owner: z.string().nullable(),
    length: count,
    domain: z.object({network: z.string(), chainId: count}).nullable(),
    tally: tallySchema.nullable(),
    anchoredLength: count,
    anchoredTally: tallySchema.nullable(),
    unanchoredTally: tallySchema.nullable(),
    anchorsChecked: count,
    anchorsIgnored: count,
    canonicalCore: z.string().nullable(),
    problems: z.array(z.string()),
    warnings: z.array(z.string()),
    /**
     * The log's vouchers received and redeems, and what the chain's `Redeemed` events to this node's wallet bear out
     * (null: not read, e.g. no wallet or payment contract, or another node's log); amounts in wei (docs/architecture.md, "Settlement").
     */
    payments: z.object({
        vouchers: count,
        channels: z.record(z.string(), wei),
        vouchedTotal: wei,
        redeems: count,
        paidTotal: wei,
        redeemsConfirmed: count.nullable(),
        chainPaidTotal: wei.nullable()
    })
});

/** One pipeline this node coordinates (docs/architecture.md, "Sharding"). */
export const pipelineStatusSchema = z.object({
    model: z.string(),
    state: z.enum(['waiting', 'forming', 'loading', 'ready', 'stopped']),
    /** Why no pipeline can be formed, while waiting. */
    reason: z.string().nullable(),
    stages: z.array(z.object({
        peer: nodeId,
        self: z.boolean(),
        /** First and last layer, 0-based, inclusive; null for a coordinator that keeps none. */
        layers: z.tuple([count, count]).nullable(),
        bytes: count,
        transferBytes: count,
        /** The stage's share of the model's layers. */
        loadRatio: z.number().min(0).max(1),
        /** Median time the stage takes to answer, ms; null before its first answer or for this node. */
        hopMs: z.number().nonnegative().nullable(),
        successRate: z.number().min(0).max(1).nullable(),
        bytesSent: count,
        bytesReceived: count,
        /**
         * Where the stage's weights come from (docs/architecture.md, "Hosts that fetch their layers"): `held` (its own
         * copy of the file), `source` (downloaded from the model's source), `coordinator` (sent by this node); with the
         * download's progress and outcome while and after the host fetches.
         */
        weights: z.object({
            from: z.enum(['held', 'source', 'coordinator']),
            fetch: z.object({state: z.enum(['fetching', 'done', 'failed']), doneBytes: count, totalBytes: count, stored: count, failed: count,
                reason: z.string().nullable()}).nullable()
        })
    })),
    plan: z.object({reason: z.string(), estimatedMsPerToken: z.number().nonnegative()}).nullable(),
    /** Whether llama.cpp's own load report put every layer where the plan did; null until loaded. */
    placementMatches: z.boolean().nullable(),
    failovers: count,
    failures: z.array(z.object({peer: z.string(), reason: z.string(), at: z.iso.datetime()})),
    /**
     * Hosts outside the plan that hold or download a stage's layers ahead (`--spare-stages`), so a failover needs no
     * transfer: the stage's host each would replace, and how far its download has come.
     */
    spares: z.array(z.object({peer: nodeId, replaces: nodeId, layers: z.tuple([count, count]), state: z.enum(['fetching', 'ready', 'failed']),
        doneBytes: count, totalBytes: count, reason: z.string().nullable()})),
    /** The coordinator's speculative decoding through the pipeline: one pass is one round trip per remote stage. */
    speculation: speculationSchema
});

/** `GET /api/cluster` */
export const clusterStatusSchema = z.object({
    pipelines: z.array(pipelineStatusSchema),
    /** Layers this node hosts for peers. */
    hosting: z.object({available: z.boolean(), reason: z.string().nullable(), sessions: count, freeBytes: count})
});

const address = z.string().regex(/^0x[0-9a-fA-F]{40}$/);
const channelId = z.string().regex(/^0x[0-9a-f]{64}$/);

/**
 * `GET /api/wallet`: this node's payment wallet and channels (docs/architecture.md, "Payments"). Amounts are DOGE in
 * decimals, exact to the wei. `earned`: redeemed on chain; `owed`: vouchers held and not yet redeemed, plus work
 * served that no voucher covers yet; `paid`: vouchers signed; `deposited`: in channels this node pays through.
 */
export const walletStatusSchema = z.object({
    /** Null when payments are off: `offReason` says why (no wallet, no payment contract). */
    address: address.nullable(),
    offReason: z.string().nullable(),
    chainId: count,
    contract: address.nullable(),
    /** The wallet's balance on chain; null when the chain did not answer (`chainError`). */
    balance: doge.nullable(),
    chainError: z.string().nullable(),
    /** This node's price, DOGE per million tokens (0: free). */
    price: z.number().nonnegative(),
    earned: doge,
    owed: doge,
    paid: doge,
    deposited: doge,
    /** `--auto-deposit`: what this node may deposit on its own, and what it did. */
    autoDeposit: z.object({cap: doge, used: doge}),
    /** Channels this node pays through (to a payee peer). */
    paying: z.array(z.object({
        peer: nodeId.nullable(), channel: channelId, payee: address, deposited: doge, paid: doge, redeemed: doge,
        /** When the payer asked to close: the time from which it may withdraw; null while open. */
        closesAt: z.iso.datetime().nullable()
    })),
    /** Channels peers pay this node through. */
    paidBy: z.array(z.object({
        peer: nodeId.nullable(), channel: channelId, payer: address, deposited: doge,
        /** The highest voucher held, what it is owed by work served, and what was redeemed on chain. */
        vouched: doge, owed: doge, redeemed: doge,
        closesAt: z.iso.datetime().nullable()
    })),
    redeeming: z.object({
        intervalSeconds: count, threshold: doge,
        pending: z.array(z.object({channel: channelId, txHash: z.string(), amount: doge})),
        lastRedeem: z.object({at: z.iso.datetime(), txHash: z.string(), channel: channelId, paid: doge}).nullable(),
        lastError: z.string().nullable(),
        nextAttemptAt: z.iso.datetime().nullable()
    })
});

/** `POST /api/wallet/deposit|redeem|close|withdraw`: the transactions sent, each mined. */
export const walletActionSchema = z.object({
    transactions: z.array(z.object({action: z.enum(['open', 'deposit', 'redeem', 'close', 'withdraw']), channel: channelId, txHash: z.string(),
        amount: doge.nullable(),
        /** Gas the transaction used; null for a redeem (its record keeps the transaction, not its gas). */
        gasUsed: count.nullable()}))
});

export type SpeculationStatus = z.infer<typeof speculationSchema>;
export type ClusterStatus = z.infer<typeof clusterStatusSchema>;
export type WalletStatus = z.infer<typeof walletStatusSchema>;
export type WalletActionStatus = z.infer<typeof walletActionSchema>;
export type NodeStatus = z.infer<typeof nodeStatusSchema>;
export type LedgerStatus = z.infer<typeof ledgerStatusSchema>;
export type AnchorOutcomeStatus = z.infer<typeof anchorOutcomeSchema>;
export type VerifyReportStatus = z.infer<typeof verifyReportSchema>;
export type RevocationOutcomeStatus = z.infer<typeof revocationOutcomeSchema>;
export type PeerStatus = z.infer<typeof peerStatusSchema>;
export type PeersStatus = z.infer<typeof peersStatusSchema>;
export type NetworkModelsStatus = z.infer<typeof networkModelsStatusSchema>;

/** Each status document, by its path. */
export const statusDocuments = {
    '/api/node': nodeStatusSchema,
    '/api/peers': peersStatusSchema,
    '/api/network/models': networkModelsStatusSchema,
    '/api/cluster': clusterStatusSchema,
    '/api/ledger': ledgerStatusSchema,
    '/api/ledger/anchor': anchorOutcomeSchema,
    '/api/ledger/revoke': revocationOutcomeSchema,
    '/api/ledger/verify': verifyReportSchema,
    '/api/wallet': walletStatusSchema,
    '/api/wallet/deposit': walletActionSchema,
    '/api/wallet/redeem': walletActionSchema,
    '/api/wallet/close': walletActionSchema,
    '/api/wallet/withdraw': walletActionSchema
} as const;

export type StatusPath = keyof typeof statusDocuments;
export type StatusDocument<P extends StatusPath> = z.infer<typeof statusDocuments[P]>;
