import {setTimeout as sleep} from 'node:timers/promises';
import {InferenceError} from '../../core/inference-error.js';
import type {EmbedOptions, GenerateOptions, InferenceStrategy, ServedModel} from '../inference-service.js';
import type {EmbeddingResult, GenerationRequest, GenerationResult} from '../../core/inference-types.js';
import {ResumableAnswer} from '../resumable-answer.js';
import type {ClusterCoordinator} from './cluster-coordinator.js';
import {shortPeerId} from '../../core/display.js';

export interface ShardedInferenceOptions {
    cluster: ClusterCoordinator,
    /** Attempts per request before it fails (each after a stage failure and a new plan); defaults to 3. */
    maxAttempts?: number,
    /** How long a request waits for a pipeline that cannot be formed (too few peers) before it fails; defaults to 30 s. */
    formationWaitMs?: number
}

/** How often a request waiting for a pipeline looks at its state. */
const FORMATION_POLL_MS = 100;

export const shardedInferenceDefaults = {
    maxAttempts: 3,
    formationWaitMs: 30_000
};

/**
 * Requests for a model this node runs as a pipeline of peers' layer shards; a request whose stage fails resumes
 * on the new plan from the tokens already streamed (docs/architecture.md, "Sharding", "Failover"). Failures that
 * are the request's own fault, and refusals such as a full queue, reach the client as they are.
 */
export class ShardedInference implements InferenceStrategy {
    private readonly created = Math.floor(Date.now() / 1000);
    private readonly cluster: ClusterCoordinator;
    private readonly options: Required<Omit<ShardedInferenceOptions, 'cluster'>>;

    constructor(options: ShardedInferenceOptions) {
        this.cluster = options.cluster;
        this.options = {...shardedInferenceDefaults, ...options};
    }

    serves(model: string) {
        return model === this.cluster.modelId;
    }

    listModels(): ServedModel[] {
        return [{id: this.cluster.modelId, created: this.created, ownedBy: 'strongdoge:pipeline'}];
    }

    async generate(request: GenerationRequest, options: GenerateOptions): Promise<GenerationResult> {
        const answer = new ResumableAnswer(request, options.onText);
        return this.withAttempts(options, async (signal) => {
            const attempt = answer.attempt();
            let prefilling = true;
            this.cluster.prefillStarted();
            const donePrefilling = () => {
                if (prefilling) {
                    prefilling = false;
                    this.cluster.prefillEnded();
                }
            };
            try {
                const result = await this.cluster.engine.generate(attempt.request, {
                    signal,
                    onText: (text, tokens, extras) => {
                        donePrefilling();
                        attempt.onText(text, tokens, extras);
                    },
                    onProgress: (tokens) => {
                        donePrefilling();
                        options.onProgress?.(tokens);
                    }
                });
                this.cluster.creditStages(result.usage.completionTokens);
                return attempt.finish(result);
            } finally {
                donePrefilling();
            }
        });
    }

    embed(model: string, inputs: string[], options: EmbedOptions): Promise<EmbeddingResult> {
        return this.withAttempts(options, (signal) => this.cluster.engine.embed(model, inputs, {signal}));
    }

    /**
     * Runs an attempt per pipeline, at most `maxAttempts`, and tells `onRoute` the stages of the one that served; says
     * what failed each time when none succeeds.
     */
    private async withAttempts<T>({signal, onRoute}: EmbedOptions, attempt: (signal: AbortSignal) => Promise<T>): Promise<T> {
        const failures: string[] = [];
        for (let attempts = 0; attempts < this.options.maxAttempts; attempts++) {
            const failuresBefore = this.cluster.failureCount;
            try {
                const result = await this.whileFormable(signal, attempt);
                onRoute?.({peers: this.cluster.stageRoute(), failovers: failures.length, via: 'pipeline'});
                return result;
            } catch (error) {
                if (!(error instanceof InferenceError))
                    throw error;
                if (signal?.aborted)
                    throw InferenceError.cancelled();
                if (error.fault !== 'server')
                    throw error;
                const stageFailures = this.cluster.failuresSince(failuresBefore).map((failure) => `stage ${shortPeerId(failure.peer)}: ${failure.reason}`);
                failures.push(stageFailures.length > 0 ? stageFailures.join(', ') : `${error.code} (${error.message})`);
            }
        }
        throw InferenceError.peersFailed(`the pipeline for '${this.cluster.modelId}' failed ${failures.length} time(s): ${failures.join('; ')}`);
    }

    /**
     * Runs `attempt` once a pipeline is being formed, and fails with `no_peer_available` and the planner's reason when
     * no plan can be made (too few peers with room) for `formationWaitMs` in all, before the attempt or during it: after a
     * stage fails, the attempt's engine waits for a load whose formation has no plan, which could last for ever
     * (docs/architecture.md, "Sharding", "Failover"). The attempt abandoned, its place in the engine's queue is freed.
     */
    private async whileFormable<T>(signal: AbortSignal | undefined, attempt: (signal: AbortSignal) => Promise<T>): Promise<T> {
        const abandon = new AbortController();
        const attemptSignal = signal === undefined ? abandon.signal : AbortSignal.any([signal, abandon.signal]);
        let running: Promise<T> | undefined;
        let settled = false;
        let waitedMs = 0;
        for (let last = Date.now(); ;) {
            if (running === undefined) {
                if (signal?.aborted)
                    throw InferenceError.cancelled();
                if (this.cluster.currentState !== 'waiting')
                    running = attempt(attemptSignal).finally(() => {
                        settled = true;
                    });
            }
            // A rejection is the caller's to handle, through the returned promise.
            await (running === undefined ? sleep(FORMATION_POLL_MS) : Promise.race([running, sleep(FORMATION_POLL_MS)]).catch(() => undefined));
            if (settled)
                return running!;
            const now = Date.now();
            const reason = this.cluster.reason;
            if (reason !== undefined)
                waitedMs += now - last;
            last = now;
            if (reason !== undefined && waitedMs >= this.options.formationWaitMs) {
                abandon.abort();
                await running?.catch(() => undefined);
                throw InferenceError.noPeerAvailable(`the pipeline for '${this.cluster.modelId}' cannot be formed: ${reason}`);
            }
        }
    }
}
