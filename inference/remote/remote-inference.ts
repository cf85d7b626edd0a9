import type {EmbeddingResult, GenerationRequest, GenerationResult} from '../inference-types.js';
import {EngineError} from '../../engine/engine-error.js';
import {ApiError} from '../../proxy/api-error.js';
import type {GenerateOptions, InferenceService, ServedModel} from '../inference-service.js';
import {RemoteJobError, type JobRequester, type RemoteJobDeadlines} from './jobs/job-requester.js';
import {explainNoPeer, rankPeers, type PeerCandidate} from './peer-ranking.js';
import type {SwarmNode} from '../../swarm/swarm-node.js';
import type {LocalInference} from '../local/local-inference.js';

export interface RoutingSettings {
    /** `local`: serve from this node's engine when it holds the model; `remote`: prefer peers. */
    prefer: 'local' | 'remote',
    /** Default budget per million tokens; a request may lower or raise it (header). */
    maxPrice?: number,
    deadlines: RemoteJobDeadlines,
    /** Peers tried for one request before it fails. */
    maxAttempts: number
}

/**
 * The proxy's view of the network: this node's models plus its peers'. A request for a model this node
 * cannot serve goes to the best peer; if that peer stalls or vanishes mid-generation, the request resumes
 * on another from the tokens already streamed, so the client sees one uninterrupted answer.
 */
export class NetworkInference implements InferenceService {
    constructor(
        private readonly local: LocalInference,
        private readonly swarm: SwarmNode | undefined,
        private readonly requester: JobRequester | undefined,
        private readonly settings: RoutingSettings
    ) {}

    listModels(): ServedModel[] {
        const local = this.local.listModels();
        const localIds = new Set(local.map((model) => model.id));
        const remote = new Map<string, ServedModel>();
        for (const peer of this.swarm?.peers() ?? []) {
            for (const offer of peer.capabilities.models) {
                if (localIds.has(offer.id) || remote.has(offer.id))
                    continue;
                remote.set(offer.id, {id: offer.id, created: Math.floor(peer.connectedAt / 1000), ownedBy: `peer:${peer.id.slice(0, 16)}`});
            }
        }
        return [...local, ...remote.values()];
    }

    readiness() {
        return this.local.readiness();
    }

    async generate(request: GenerationRequest, options: GenerateOptions): Promise<GenerationResult> {
        if (!this.routesRemotely(request.model))
            return this.local.generate(request, options);

        // Tokens streamed so far, over every attempt: the next peer continues after them.
        const tokens: number[] = [...request.continuation?.tokens ?? []];
        const initialTokens = tokens.length;
        let streamed = '';
        return this.withPeers(request.model, options, async (peerId) => {
            const before = streamed;
            const tokensBefore = tokens.length;
            const result = await this.requester!.generate(peerId, {...request, ...(tokens.length > 0 && {continuation: {tokens: [...tokens]}})}, {
                signal: options.signal,
                deadlines: this.settings.deadlines,
                onText: (text, chunkTokens) => {
                    streamed += text;
                    tokens.push(...chunkTokens);
                    options.onText?.(text, chunkTokens);
                }
            });
            // Tokens earlier peers streamed before failing count too.
            const completionTokens = tokensBefore - initialTokens + result.usage.completionTokens;
            return {
                ...result,
                text: before + result.text,
                usage: {promptTokens: result.usage.promptTokens, completionTokens}
            };
        });
    }

    async embed(model: string, inputs: string[], options: Parameters<InferenceService['embed']>[2]): Promise<EmbeddingResult> {
        if (!this.routesRemotely(model))
            return this.local.embed(model, inputs, options);
        return this.withPeers(model, options, (peerId) =>
            this.requester!.embed(peerId, model, inputs, {signal: options.signal, deadlines: this.settings.deadlines}));
    }

    /** Tries the best peers in turn, at most `maxAttempts`, and says clearly why none could serve. */
    private async withPeers<T>(model: string, options: Omit<GenerateOptions, 'onText'>, attempt: (peerId: string) => Promise<T>): Promise<T> {
        const maxPrice = options.maxPrice ?? this.settings.maxPrice;
        const tried = new Set<string>();
        const failures: string[] = [];
        for (let attempts = 0; attempts < this.settings.maxAttempts; attempts++) {
            const peer = rankPeers(this.candidates(), {model, ...(maxPrice !== undefined && {maxPrice}), exclude: tried})[0];
            if (peer === undefined)
                break;
            tried.add(peer.id);
            try {
                const result = await attempt(peer.id);
                this.swarm?.peer(peer.id)?.recordRequest(true);
                options.onRoute?.({peers: [...tried], failovers: tried.size - 1});
                return result;
            } catch (error) {
                if (!(error instanceof RemoteJobError))
                    throw error;
                if (error.failure.kind === 'cancelled')
                    throw new EngineError('cancelled', 'request cancelled');
                this.recordFailure(peer.id, error, failures);
            }
        }
        if (failures.length === 0)
            throw this.noPeerError(model, maxPrice);
        throw new ApiError(503, `no peer could complete the request for '${model}' after ${failures.length} attempt(s): ${failures.join('; ')}`,
            'server_error', null, 'peers_failed', 1);
    }

    /** A polite refusal says nothing about a peer's reliability; a stall or a vanished peer does. */
    private recordFailure(peerId: string, error: RemoteJobError, failures: string[]) {
        failures.push(`${peerId.slice(0, 16)}: ${error.failure.kind} (${error.message})`);
        if (error.failure.kind === 'refused')
            return;
        this.swarm?.peer(peerId)?.recordRequest(false);
        if (error.failure.kind === 'stalled')
            this.swarm?.probe(peerId, this.settings.deadlines.tokenMs);
    }

    private candidates(): PeerCandidate[] {
        return (this.swarm?.peers() ?? []).map((peer) => ({
            id: peer.id, successRate: peer.successRate, rttMs: peer.rtt.smoothedMs ?? null, capabilities: peer.capabilities
        }));
    }

    /** Local unless the model is only on peers, or peers are preferred and one can serve it. */
    private routesRemotely(model: string) {
        const local = this.local.listModels().some((served) => served.id === model);
        if (this.requester === undefined)
            return false;
        if (!local)
            return true;
        return this.settings.prefer === 'remote' && rankPeers(this.candidates(), {model}).length > 0;
    }

    private noPeerError(model: string, maxPrice: number | undefined) {
        const {code, message} = explainNoPeer(this.candidates(), {model, ...(maxPrice !== undefined && {maxPrice})});
        return code === 'over_budget'
            ? new ApiError(402, message, 'invalid_request_error', 'model', 'over_budget')
            : new ApiError(503, message, 'server_error', 'model', 'no_peer_available', 1);
    }
}
