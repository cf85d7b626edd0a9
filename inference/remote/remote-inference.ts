import type {SwarmNode} from '../../swarm/swarm-node.js';
import {InferenceError, type InferenceErrorCode} from '../../core/inference-error.js';
import type {EmbedOptions, GenerateOptions, InferenceStrategy, ServedModel} from '../inference-service.js';
import type {EmbeddingResult, GenerationRequest, GenerationResult} from '../../core/inference-types.js';
import {ResumableAnswer} from '../resumable-answer.js';
import {DeliveryPace} from './delivery-pace.js';
import type {JobRequester, ReceiptModel, RemoteJobDeadlines} from './jobs/job-requester.js';
import {explainNoPeer, rankPeers, type PeerCandidate} from './peer-ranking.js';
import {shortPeerId} from '../../core/display.js';
import type {Capabilities} from '../../swarm/capabilities.js';
import type {RequesterPayments} from './jobs/job-payments.js';
import {embeddingTokenBound, generationTokenBound} from './jobs/receipt-claims.js';
import {ProviderFinder, type ProviderSearch} from './provider-finder.js';
import type {GossipModelView} from '../../swarm/gossip/model-gossip.js';

/**
 * The failures a serving peer may blame on the request: those its engine finds in the request itself. Any other
 * client code from a peer (a model it announced but "does not have", a budget it cannot know) is its own failure.
 */
const PEER_CLIENT_FAULTS = new Set<InferenceErrorCode>(['invalid_request', 'context_length_exceeded']);
/**
 * How long a request with no peer to serve it waits for one about to (README, "Requests served by peers"): a peer
 * whose hello is on the way, or one that announced the model and is still loading it.
 */
const PROVIDER_GRACE_MS = 10_000;
/** The most tokens a peer that announces no cap may send for a request without `max_tokens` (the cap's own limit). */
const MAX_TOKENS_WITHOUT_CAP = 2 ** 20;

export interface RoutingSettings {
    /** Default budget per million tokens; a request may lower or raise it (header). Defaults to any price. */
    maxPrice?: number,
    deadlines: RemoteJobDeadlines,
    /** Peers tried for one request before it fails. */
    maxAttempts: number
}

export interface RemoteInferenceOptions {
    swarm: SwarmNode,
    requester: JobRequester,
    routing: RoutingSettings,
    /**
     * The size of this node's own copy of the model file with that SHA-256, or 0: what receipts may weigh a peer's
     * work by (docs/architecture.md, "Receipts"); defaults to none (every model at the minimum weight).
     */
    vouchedModelBytes?: (sha256: string) => number,
    /** Who this node can pay: priced peers it cannot pay are not used (docs/architecture.md, "Payments"); defaults to free peers only. */
    payments?: RequesterPayments,
    /**
     * The network model table as gossip knows it: a model no connected peer serves is looked for among the
     * providers it names, connected to on demand (inference/remote/provider-finder.ts); defaults to none.
     */
    gossipModels?: () => readonly GossipModelView[]
}

/**
 * Whole requests served by peers: the best peer serves, and one that stalls, vanishes or fails hands the request
 * to the next with the tokens already streamed. A failure that is the request's own fault goes to the client at
 * once: no other peer is tried, none is penalised (docs/architecture.md, "The path of a request", "Errors").
 */
export class RemoteInference implements InferenceStrategy {
    private readonly swarm: SwarmNode;
    private readonly requester: JobRequester;
    private readonly routing: RoutingSettings;
    private readonly vouchedModelBytes: (sha256: string) => number;
    private readonly payments: RequesterPayments | undefined;
    private readonly finder: ProviderFinder | undefined;
    private readonly gossipModels: () => readonly GossipModelView[];

    constructor(options: RemoteInferenceOptions) {
        ({swarm: this.swarm, requester: this.requester, routing: this.routing, payments: this.payments} = options);
        this.vouchedModelBytes = options.vouchedModelBytes ?? (() => 0);
        this.gossipModels = options.gossipModels ?? (() => []);
        this.finder = options.gossipModels && new ProviderFinder({swarm: this.swarm, gossipModels: options.gossipModels});
    }

    /** The model as the receipt for `peerId`'s job names it: the hash it announced, the size only if this node can vouch for it. */
    private receiptModel(peerId: string, model: string): ReceiptModel {
        const sha256 = this.swarm.peer(peerId)?.capabilities.models.find((offer) => offer.id === model)?.sha256 ?? null;
        return {sha256, vouchedBytes: sha256 === null ? 0 : this.vouchedModelBytes(sha256)};
    }

    /**
     * The models peers announce, the first peer to announce each naming it; then those only gossip knows a provider
     * of, as the network's: a request for one connects to its providers on demand.
     */
    listModels(): ServedModel[] {
        const models = new Map<string, ServedModel>();
        for (const peer of this.swarm.peers())
            for (const offer of peer.capabilities.models)
                if (!models.has(offer.id))
                    models.set(offer.id, {id: offer.id, created: Math.floor(peer.connectedAt / 1000), ownedBy: `peer:${shortPeerId(peer.id)}`});
        if (this.finder !== undefined)
            for (const entry of this.gossipModels())
                if (!models.has(entry.name) && entry.providers.some((provider) => !provider.self))
                    models.set(entry.name, {id: entry.name, created: Math.floor((Date.now() - entry.ageMs) / 1000), ownedBy: 'strongdoge:network'});
        return [...models.values()];
    }

    /** Whether a connected peer can take a request for the model now. */
    canServe(model: string) {
        return rankPeers(this.candidates(), {model}).length > 0;
    }

    async generate(request: GenerationRequest, options: GenerateOptions): Promise<GenerationResult> {
        const answer = new ResumableAnswer(request, options.onText);
        // The most a peer may bill: the prompt's bound and the tokens asked for, else the peer's own cap (a count is free).
        const worst = (capabilities: Capabilities) => request.countOnly === true ? 0
            : generationTokenBound(request, capabilities.maxJobTokens ?? MAX_TOKENS_WITHOUT_CAP);
        return this.withPeers(request.model, options, worst, () => answer.resumed, async (peerId) => {
            const attempt = answer.attempt();
            const announced = this.swarm.peer(peerId)?.capabilities;
            const pace = new DeliveryPace();
            const result = await this.requester.generate(peerId, attempt.request, {
                signal: options.signal,
                deadlines: this.routing.deadlines,
                model: this.receiptModel(peerId, request.model),
                // What the peer generates when the client set no limit: its announced cap, held to by the requester.
                tokenCap: announced?.maxJobTokens ?? MAX_TOKENS_WITHOUT_CAP,
                ...(announced && {capabilities: announced}),
                onText: (text, tokens, extras) => {
                    pace.received(tokens.length);
                    attempt.onText(text, tokens, extras);
                },
                ...(options.onProgress && {onProgress: options.onProgress})
            });
            const tokensPerSecond = pace.tokensPerSecond();
            if (tokensPerSecond !== null)
                this.swarm.peer(peerId)?.recordDelivery(tokensPerSecond);
            return attempt.finish(result);
        });
    }

    async embed(model: string, inputs: string[], options: EmbedOptions): Promise<EmbeddingResult> {
        const worst = embeddingTokenBound(inputs);
        return this.withPeers(model, options, () => worst, () => false, (peerId) => {
            const capabilities = this.swarm.peer(peerId)?.capabilities;
            return this.requester.embed(peerId, model, inputs, {signal: options.signal, deadlines: this.routing.deadlines, model: this.receiptModel(peerId, model),
                ...(capabilities && {capabilities})});
        });
    }

    /** Tries the best peers in turn, at most `maxAttempts`, and says clearly why none could serve. */
    private async withPeers<T>(model: string, options: EmbedOptions, worstTokens: (capabilities: Capabilities) => number, resumed: () => boolean,
        attempt: (peerId: string) => Promise<T>): Promise<T> {
        const maxPrice = options.maxPrice ?? this.routing.maxPrice;
        const tried = new Set<string>();
        const failures: string[] = [];
        let paymentRefusals = 0;
        // Providers gossip names, connected to when no connected peer serves the model: held until the request ends.
        let search: ProviderSearch | undefined;
        try {
            for (let attempts = 0; attempts < this.routing.maxAttempts; attempts++) {
                const criteria = {model, ...(maxPrice !== undefined && {maxPrice}), exclude: tried};
                let peer = rankPeers(this.candidates(worstTokens), criteria)[0];
                if (peer === undefined && tried.size === 0 && await this.providerSoon(model, options.signal))
                    peer = rankPeers(this.candidates(worstTokens), criteria)[0];
                // A failover looks here too: the search's second provider, or the next ones gossip names.
                if (peer === undefined && search === undefined)
                    search = this.finder?.search(model);
                while (peer === undefined && search !== undefined && !options.signal?.aborted && await search.next(options.signal))
                    peer = rankPeers(this.candidates(worstTokens), criteria)[0];
                if (options.signal?.aborted)
                    throw InferenceError.cancelled();
                if (peer === undefined)
                    break;
                tried.add(peer.id);
                try {
                    const result = await attempt(peer.id);
                    this.swarm.peer(peer.id)?.recordRequest(true);
                    options.onRoute?.({peers: [...tried], failovers: tried.size - 1});
                    return result;
                } catch (error) {
                    if (!(error instanceof InferenceError))
                        throw error;
                    if (options.signal?.aborted)
                        throw InferenceError.cancelled();
                    if (error.fault === 'client' && PEER_CLIENT_FAULTS.has(error.code) && !resumed())
                        throw error;
                    if (error.code === 'payment_required')
                        paymentRefusals++;
                    this.recordFailure(peer.id, error, failures);
                    search?.drop(peer.id);
                }
            }
        } finally {
            search?.release();
        }
        if (failures.length === 0)
            throw this.noPeerError(model, maxPrice, worstTokens, search);
        // Every peer tried wanted a payment this node could not make: the client's budget (or wallet) is the limit.
        if (paymentRefusals === failures.length)
            throw new InferenceError('payment_required', `no peer serving '${model}' took this node's payment: ${failures.join('; ')}`, {param: 'model'});
        throw InferenceError.peersFailed(`no peer could complete the request for '${model}' after ${failures.length} attempt(s): ${failures.join('; ')}`);
    }

    /** Waits, at most PROVIDER_GRACE_MS, for a peer about to serve the model; false at once when no peer is about to. */
    private async providerSoon(model: string, signal: AbortSignal | undefined): Promise<boolean> {
        const loading = () => this.swarm.peers().some((peer) => peer.capabilities.models.some((offer) => offer.id === model && offer.loading === true));
        const serving = () => this.swarm.peers().some((peer) => peer.capabilities.models.some((offer) => offer.id === model && offer.loaded));
        const worthWaiting = () => this.swarm.handshaking() > 0 || loading();
        if (!worthWaiting() || signal?.aborted)
            return false;
        // Every way a peer arrives, changes or goes, a handshake's failure included.
        const events = ['peerJoined', 'peerLeft', 'capabilities', 'connectionFailed', 'peerIncompatible', 'peerBanned'] as const;
        let check = () => {};
        let abort = () => {};
        let timer: NodeJS.Timeout | undefined;
        try {
            return await new Promise<boolean>((resolve) => {
                check = () => {
                    if (serving())
                        resolve(true);
                    else if (!worthWaiting())
                        resolve(false);
                };
                abort = () => resolve(false);
                for (const event of events)
                    this.swarm.on(event, check);
                signal?.addEventListener('abort', abort, {once: true});
                timer = setTimeout(() => resolve(serving()), PROVIDER_GRACE_MS);
            });
        } finally {
            clearTimeout(timer);
            signal?.removeEventListener('abort', abort);
            for (const event of events)
                this.swarm.off(event, check);
        }
    }

    /** A refusal says nothing about a peer's reliability; a failure, a stall or a vanished peer does. */
    private recordFailure(peerId: string, error: InferenceError, failures: string[]) {
        const refused = error.fault === 'refusal';
        failures.push(`${shortPeerId(peerId)}: ${refused ? 'refused' : error.code} (${error.message})`);
        if (refused)
            return;
        this.swarm.peer(peerId)?.recordRequest(false);
        if (error.code === 'peer_stalled')
            this.swarm.probe(peerId, this.routing.deadlines.tokenMs);
    }

    /**
     * The connected peers; with `worstTokens`, only those this node can pay for a job that large (free ones, and
     * priced ones it holds or may open a channel to).
     */
    private candidates(worstTokens?: (capabilities: Capabilities) => number): PeerCandidate[] {
        const payable = (peer: {id: string, capabilities: Capabilities}) => worstTokens === undefined || worstTokens(peer.capabilities) === 0
            || (peer.capabilities.pricePerMillionTokens ?? 0) === 0
            || (this.payments !== undefined && this.payments.cannotPay(peer.id, peer.capabilities, worstTokens(peer.capabilities)) === undefined);
        return this.swarm.peers().filter(payable).map((peer) => ({
            id: peer.id, successRate: peer.successRate, rttMs: peer.rtt.smoothedMs ?? null,
            deliveredTokensPerSecond: peer.deliveredTokensPerSecond, capabilities: peer.capabilities
        }));
    }

    private noPeerError(model: string, maxPrice: number | undefined, worstTokens: (capabilities: Capabilities) => number, search?: ProviderSearch) {
        const explained = explainNoPeer(this.candidates(), {model, ...(maxPrice !== undefined && {maxPrice})});
        const {code} = explained;
        // Why the providers gossip named could not serve, when there were some.
        const message = search === undefined || search.providersTried === 0 ? explained.message
            : `${explained.message}; ${search.providersTried} provider(s) known by gossip or announced on the DHT could not serve it: ${search.why()}`;
        if (code === 'over_budget')
            return InferenceError.overBudget(message);
        // Peers serve it within the budget, but none this node can pay: say why, as a 402.
        const unpaid = rankPeers(this.candidates(), {model, ...(maxPrice !== undefined && {maxPrice})})
            .map((peer) => [peer.id, this.payments?.cannotPay(peer.id, peer.capabilities, worstTokens(peer.capabilities)) ?? 'this node has no payment wallet'] as const);
        if (unpaid.length > 0)
            return new InferenceError('payment_required', `model '${model}' is served by ${unpaid.length} priced peer(s) this node cannot pay: `
                + unpaid.map(([id, reason]) => `${shortPeerId(id)}: ${reason}`).join('; '), {param: 'model'});
        return InferenceError.noPeerAvailable(message);
    }
}
