import {chooseStrategy} from './choose-strategy.js';
import {InferenceError} from '../core/inference-error.js';
import {replyProblem} from '../core/json-schema/structured-output.js';
import {toolCallProblem} from '../core/tool-calls/tool-call-syntax.js';
import type {EmbedOptions, GenerateOptions, InferenceService, ServedModel} from './inference-service.js';
import type {EmbeddingResult, GenerationRequest, GenerationResult} from '../core/inference-types.js';
import type {LocalInference} from './local/local-inference.js';
import type {RemoteInference} from './remote/remote-inference.js';
import type {ShardedInference} from './sharded/sharded-inference.js';

export interface InferenceRouterOptions {
    local: LocalInference,
    /** Peers, unless the node is offline. */
    remote?: RemoteInference,
    /** `--prefer`: defaults to `local`. */
    prefer?: 'local' | 'remote',
    /** The pipelines this node coordinates; defaults to none. */
    sharded?: ShardedInference[]
}

/** The proxy's view of the network: this node's models plus its peers', each request sent to the strategy that serves it. */
export class InferenceRouter implements InferenceService {
    private readonly local: LocalInference;
    private readonly remote: RemoteInference | undefined;
    private readonly prefer: 'local' | 'remote';
    private readonly sharded: ShardedInference[];

    constructor(options: InferenceRouterOptions) {
        this.local = options.local;
        this.remote = options.remote;
        this.prefer = options.prefer ?? 'local';
        this.sharded = options.sharded ?? [];
    }

    /** This node's models first; a model peers also serve is listed once, as this node's. */
    listModels(): ServedModel[] {
        const local = [...this.local.listModels(), ...this.sharded.flatMap((pipeline) => pipeline.listModels())];
        const localIds = new Set(local.map((model) => model.id));
        return [...local, ...(this.remote?.listModels() ?? []).filter((model) => !localIds.has(model.id))];
    }

    readiness() {
        return this.local.readiness();
    }

    async generate(request: GenerationRequest, options: GenerateOptions): Promise<GenerationResult> {
        const result = await this.strategyFor(request.model).generate(request, options);
        const format = request.sampling.responseFormat;
        // The grammar writes only instances of the schema; this holds whoever served the request to it. A reply cut
        // short by max_tokens is incomplete by the client's own choice.
        if (format.type === 'json_schema' && result.finishReason === 'stop') {
            const problem = replyProblem(format.schema, result.text);
            if (problem !== undefined)
                throw InferenceError.engineError(`structured output failed: ${problem}`);
        }
        // Calls are held to their functions' schemas the same way.
        const tools = request.kind === 'chat' ? request.tools?.tools ?? [] : [];
        for (const call of result.toolCalls ?? []) {
            const problem = toolCallProblem(tools, call);
            if (problem !== undefined)
                throw InferenceError.engineError(`tool call failed: ${problem}`);
        }
        return result;
    }

    embed(model: string, inputs: string[], options: EmbedOptions): Promise<EmbeddingResult> {
        return this.strategyFor(model).embed(model, inputs, options);
    }

    private strategyFor(model: string) {
        const remote = this.remote;
        const local = this.local.listModels().some((served) => served.id === model);
        const pipeline = this.sharded.find((candidate) => candidate.serves(model));
        const strategy = chooseStrategy({
            sharded: pipeline !== undefined,
            local,
            networked: remote !== undefined,
            // Ranking peers is only worth it when the answer can change the choice.
            peerCanServe: local && this.prefer === 'remote' && remote?.canServe(model) === true,
            prefer: this.prefer
        });
        if (strategy === 'sharded' && pipeline !== undefined)
            return pipeline;
        return strategy === 'remote' && remote !== undefined ? remote : this.local;
    }
}
