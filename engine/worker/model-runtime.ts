import {stat} from 'node:fs/promises';
import {
    isLlamaText, LlamaText, resolveChatWrapper, TokenBias,
    type ChatWrapper, type Llama, type LlamaContext, type LlamaContextSequence, type LlamaEmbeddingContext,
    type LlamaGrammar, type LlamaModel, type Token
} from 'node-llama-cpp';
import type {
    Drafter, EmbeddingResult, GenerationRequest, GenerationResult, LoadedModelInfo, ResponseFormat, SpeculativeSetting, TextListener
} from '../../core/inference-types.js';
import {InferenceError} from '../../core/inference-error.js';
import {schemaToGbnf} from '../../core/json-schema/schema-grammar.js';
import type {ModelLoadSpec, WorkerSettings} from '../engine-settings.js';
import {DecodeLoop} from './decode-loop.js';
import {PassCosts} from './speculation/draft-length.js';
import {keepsSeveralDrafts, Speculator} from './speculation/speculator.js';
import {Generation} from './generation.js';
import {guardOutputOrder} from './output-order-guard.js';
import {toLlamaSamplingOptions} from './sampling-options.js';
import {TokenRelease} from './token-release.js';
import {availableFunctions, toChatHistory, toolCallSetup} from './tool-calling.js';

export interface GenerateCallbacks {
    onText: TextListener,
    /** A chunk of a long prompt was evaluated (tokens evaluated of those to evaluate). */
    onPromptProgress?(evaluated: number, total: number): void,
    /** A tool call is being written (sent whole at its end): its tokens so far. */
    onWriting?(tokens: number): void,
    signal: AbortSignal
}

interface SequenceSlot {
    id: number,
    sequence: LlamaContextSequence,
    /** Drafts for the sequence; undefined where the model does not speculate. */
    speculator: Speculator | undefined
}

/** A draft model and its context, a sequence for each of the target's. */
interface DraftRuntime {
    model: LlamaModel,
    context: LlamaContext
}

/** Upper bound for the embedding context: long enough for documents, small enough for RAM. */
const MAX_EMBEDDING_CONTEXT = 2048;

/** One loaded model: its context with a pool of sequences (one per concurrent request) and an embedding context. */
export class ModelRuntime {
    /** Free sequences, lowest id first: a new request takes the lowest, so active ids stay consecutive (DecodeLoop). */
    private readonly freeSlots: SequenceSlot[];
    private readonly decodeLoop = new DecodeLoop<Generation>();
    private embeddingContext: Promise<LlamaEmbeddingContext> | undefined;
    private embeddingQueue: Promise<unknown> = Promise.resolve();
    private chatWrapper: ChatWrapper | undefined;
    private readonly tokenDescriptions = new Map<Token, {token: string, bytes: number[]}>();
    private letterToken: Token[] | undefined;

    private constructor(
        private readonly llama: Llama,
        private readonly model: LlamaModel,
        private readonly context: LlamaContext,
        private readonly settings: WorkerSettings,
        readonly info: LoadedModelInfo,
        private readonly draft: DraftRuntime | undefined,
        severalDrafts: boolean
    ) {
        const costs = new PassCosts();
        // A fresh context hands out sequence ids 0, 1, 2, … in the order its sequences are created.
        this.freeSlots = Array.from({length: settings.parallelSequences}, (_, id) => {
            const speculator = info.speculative === 'off' ? undefined
                : new Speculator({costs, ...(draft !== undefined && {draftSequence: draft.context.getSequence()}), draftTokens: {
                    ...settings.draftTokens,
                    ...(!severalDrafts && {max: Math.min(1, settings.draftTokens?.max ?? 1)})
                }});
            return {id, sequence: context.getSequence(speculator === undefined ? {} : {tokenPredictor: speculator}), speculator};
        });
    }

    /** Loads `spec`'s model and its draft model; `onTargetLoaded` comes between the two (llama.cpp's log lines are then the draft's). */
    static async load(llama: Llama, spec: ModelLoadSpec, settings: WorkerSettings, onProgress: (progress: number) => void, onTargetLoaded?: () => void) {
        const model = await llama.loadModel({
            modelPath: spec.path,
            gpuLayers: settings.shard?.gpuLayers ?? (settings.gpu === false || llama.gpu === false ? 0 : 'auto'),
            // Remote stages' memory was checked by the planner; node-llama-cpp knows only local devices.
            ignoreMemorySafetyChecks: settings.shard !== undefined,
            onLoadProgress: onProgress
        });
        onTargetLoaded?.();
        const flashAttention = settings.flashAttention ?? 'auto';
        const speculative = speculativeDrafter(settings.speculative ?? 'auto', spec, model);
        let draft: DraftRuntime | undefined;
        try {
            // The target's context first: its layers were offloaded counting on room for it, which a draft could take.
            const context = await model.createContext({
                sequences: settings.parallelSequences,
                contextSize: Math.min(settings.contextSize, model.trainContextSize),
                threads: settings.threads,
                flashAttention: flashAttention === 'auto' ? 'auto' : flashAttention === 'on',
                ignoreMemorySafetyChecks: settings.shard !== undefined
            });
            guardOutputOrder(context);
            if (speculative === 'draft')
                draft = await loadDraft(llama, model, spec.draft!.path, settings);
            const info: LoadedModelInfo = {
                id: spec.id,
                path: spec.path,
                sizeBytes: (await stat(spec.path)).size,
                layers: model.fileInsights.totalLayers - 1, // totalLayers counts the output layer
                gpuLayers: model.gpuLayers,
                contextSize: context.contextSize,
                parallelSequences: settings.parallelSequences,
                trainContextSize: model.trainContextSize,
                embeddingLength: model.embeddingVectorSize,
                flashAttention,
                speculative,
                ...(draft !== undefined && {draft: {path: spec.draft!.path, sizeBytes: (await stat(spec.draft!.path)).size}})
            };
            const severalDrafts = speculative === 'off' || await keepsSeveralDrafts();
            if (!severalDrafts)
                process.stderr.write('[strongdoge] node-llama-cpp keeps one drafted token per pass here (its install step did not run): speculation drafts one\n');
            return new ModelRuntime(llama, model, context, settings, info, draft, severalDrafts);
        } catch (error) {
            await draft?.context.dispose();
            await draft?.model.dispose();
            await model.dispose();
            throw error;
        }
    }

    /**
     * One path for chat and completion: the prompt becomes tokens (chat through the model's own template), and the
     * request's Generation joins this model's DecodeLoop, which advances every active request together. A
     * continuation (tokens another node already generated for this request) is appended to the prompt, so a
     * resumed generation picks up exactly where the other stopped.
     */
    async generate(request: GenerationRequest, {onText, onPromptProgress, onWriting, signal}: GenerateCallbacks): Promise<GenerationResult> {
        const slot = this.freeSlots.shift();
        if (slot === undefined)
            throw InferenceError.engineError(`no free sequence for ${this.info.id}: the supervisor sent more jobs than sequences`);

        const startedAt = performance.now();
        const continuation = (request.continuation?.tokens ?? []) as Token[];
        try {
            // Another node's tokens: ids outside this vocabulary would reach llama.cpp unchecked.
            const foreign = continuation.find((id) => !this.inVocabulary(id));
            if (foreign !== undefined)
                throw InferenceError.invalidRequest(`continuation names token ${foreign}, which is not in the vocabulary`, 'continuation');
            const {tokens: promptTokens, stopTriggers} = this.promptFor(request);
            const bos = this.model.tokens.shouldPrependBosToken ? this.model.tokens.bos : null;
            const prompt = bos === null ? promptTokens : [bos, ...promptTokens];
            if (request.countOnly === true)
                return {text: '', finishReason: 'stop', usage: {promptTokens: prompt.length, completionTokens: 0},
                    timings: {promptMs: 0, generationMs: 0, promptTokensPerSecond: 0, generationTokensPerSecond: 0}};
            const sampling = toLlamaSamplingOptions(request.sampling);
            const remaining = sampling.maxTokens === undefined ? undefined : sampling.maxTokens - continuation.length;
            const budget = this.generationBudget(prompt.length + continuation.length, remaining);
            const {grammar, tokenBias} = await this.constraintsFor(request);
            const tools = request.kind === 'chat' ? await toolCallSetup(this.llama, this.model, this.chatWrapperFor(), request.tools, continuation) : undefined;
            const release = new TokenRelease({
                detokenize: (tokens, context) => this.model.detokenize(tokens as Token[], false, context as Token[]),
                ...this.resolveStops([...request.sampling.stop, ...(grammar?.stopGenerationTriggers ?? []), ...stopTriggers]),
                trimWhitespaceSuffix: grammar?.trimWhitespaceSuffix ?? false,
                precedingTokens: continuation,
                ...(tools !== undefined && {callTexts: tools.callTexts, callTokens: tools.callTokens})
            });
            // Penalties are computed from the text before the sampled token, which a pass of several drafts does not
            // tell node-llama-cpp: a penalised request does not speculate, so that its tokens keep their distribution.
            // A grammar's tokens are not drafted (Generation.prepare): such a request is not counted as speculating either.
            const drafts = sampling.repeatPenalty === false && grammar === undefined && tools?.rules.forced !== true;
            slot.speculator?.begin(drafts && this.info.speculative !== 'off' ? this.info.speculative : undefined);
            const generation = await Generation.start({
                sequence: slot.sequence,
                sequenceId: slot.id,
                input: [...prompt, ...continuation],
                continuation,
                sampling,
                ...(grammar !== undefined && {grammar}),
                ...(tokenBias !== undefined && {tokenBias}),
                budget,
                release,
                ...(tools !== undefined && {toolCalls: tools.rules}),
                ...(request.sampling.logprobs !== undefined && {logprobs: {top: request.sampling.logprobs, describe: (token: Token) => this.describeToken(token)}}),
                signal,
                onText,
                ...(slot.speculator !== undefined && {speculator: slot.speculator}),
                ...(onPromptProgress !== undefined && {onPromptProgress}),
                ...(onWriting !== undefined && {onWriting})
            });
            await this.decodeLoop.run(generation);

            const completionTokens = generation.generated.length;
            const {firstTokenAt} = generation;
            const finishedAt = performance.now();
            const promptMs = (firstTokenAt ?? finishedAt) - startedAt;
            const generationMs = firstTokenAt === undefined ? 0 : finishedAt - firstTokenAt;
            const called = generation.toolCalls.length > 0 || tools?.rules.resumedAfterCalls !== undefined;
            const {speculation} = generation;
            return {
                text: generation.text,
                ...(generation.toolCalls.length > 0 && {toolCalls: generation.toolCalls}),
                ...(request.sampling.logprobs !== undefined && {logprobs: generation.logprobs}),
                finishReason: generation.end === 'length' ? 'length' : called ? 'tool_calls' : 'stop',
                ...(generation.end === 'stop' && release.stoppedBy !== undefined && request.sampling.stop.includes(release.stoppedBy)
                    && {stopSequence: release.stoppedBy}),
                usage: {promptTokens: prompt.length, completionTokens},
                ...(speculation !== undefined && {speculation}),
                timings: {
                    promptMs,
                    generationMs,
                    promptTokensPerSecond: promptMs > 0 ? prompt.length / (promptMs / 1000) : 0,
                    // The first token's time belongs to prompt processing.
                    generationTokensPerSecond: generationMs > 0 ? (completionTokens - 1) / (generationMs / 1000) : 0
                }
            };
        } finally {
            this.releaseSlot(slot);
        }
    }

    /** Steps the decode loop took and tokens it decoded in them (tokens per step: how well requests batch). */
    get batching() {
        return this.decodeLoop.stats;
    }

    private releaseSlot(slot: SequenceSlot) {
        const index = this.freeSlots.findIndex((free) => free.id > slot.id);
        this.freeSlots.splice(index < 0 ? this.freeSlots.length : index, 0, slot);
    }

    /**
     * Plain-text triggers are matched on text; a trigger with special tokens (a template's end of turn) on tokens,
     * as the model emits them.
     */
    private resolveStops(triggers: readonly (string | LlamaText | readonly (string | Token)[])[]): {stopTexts: string[], stopTokens: Token[][]} {
        const stopTexts: string[] = [];
        const stopTokens: Token[][] = [];
        for (const trigger of triggers) {
            const values: readonly unknown[] = typeof trigger === 'string' ? [trigger] : isLlamaText(trigger) ? trigger.values : trigger;
            if (values.every((value) => typeof value === 'string'))
                stopTexts.push(values.join(''));
            else if (isLlamaText(trigger))
                stopTokens.push(trigger.tokenize(this.model.tokenizer, 'trimLeadingSpace'));
            else
                stopTokens.push((trigger as readonly (string | Token)[]).flatMap((value) =>
                    typeof value === 'string' ? this.model.tokenize(value, false, 'trimLeadingSpace') : [value]));
        }
        return {stopTexts, stopTokens};
    }

    /** Prompt tokens without the BOS token. */
    private promptFor(request: GenerationRequest): {tokens: Token[], stopTriggers: LlamaText[]} {
        if (request.kind === 'completion')
            // No SentencePiece space prefix after the BOS token, as llama-server tokenizes a prompt.
            return {tokens: this.model.tokenize(request.prompt, false, this.model.tokens.shouldPrependBosToken ? 'trimLeadingSpace' : undefined), stopTriggers: []};
        const functions = availableFunctions(request.tools);
        const state = this.chatWrapperFor().generateContextState({
            chatHistory: toChatHistory(request.messages),
            ...(functions !== undefined && {availableFunctions: functions, documentFunctionParams: true})
        });
        const tokens = state.contextText.tokenize(this.model.tokenizer);
        const bos = this.model.tokens.bos;
        return {
            tokens: bos !== null && tokens[0] === bos ? tokens.slice(1) : tokens,
            stopTriggers: state.stopGenerationTriggers
        };
    }

    /**
     * A token's text and UTF-8 bytes, as logprobs show it. A byte token (`<0xE2>`, part of a character) has no text
     * of its own: its bytes are the byte it stands for.
     */
    private describeToken(token: Token): {token: string, bytes: number[]} {
        let described = this.tokenDescriptions.get(token);
        if (described === undefined) {
            // After a letter, as inside a text: alone, SentencePiece would drop the space a token starts with.
            this.letterToken ??= this.model.tokenize('a', false, 'trimLeadingSpace');
            const text = this.model.detokenize([token], false, this.letterToken);
            const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(this.model.fileInfo.metadata.tokenizer?.ggml?.tokens?.[token] ?? '');
            described = {token: text, bytes: text.includes('\uFFFD') && byte !== null ? [Number.parseInt(byte[1]!, 16)] : [...Buffer.from(text)]};
            this.tokenDescriptions.set(token, described);
        }
        return described;
    }

    private chatWrapperFor() {
        this.chatWrapper ??= resolveChatWrapper(this.model);
        return this.chatWrapper;
    }

    /** Embeds each input; all of them together may hold at most `maxTokens` tokens, checked before any work. */
    async embed(inputs: string[], maxTokens: number, signal: AbortSignal): Promise<EmbeddingResult> {
        const tokenized = inputs.map((input) => this.model.tokenize(input));
        const promptTokens = tokenized.reduce((sum, tokens) => sum + tokens.length, 0);
        if (promptTokens > maxTokens)
            throw InferenceError.invalidRequest(`the inputs hold ${promptTokens} tokens in all, over the ${maxTokens} embedded per request`, 'input');
        const tooLong = tokenized.find((tokens) => tokens.length >= this.model.trainContextSize || tokens.length > MAX_EMBEDDING_CONTEXT);
        if (tooLong !== undefined)
            throw InferenceError.contextLengthExceeded(`input of ${tooLong.length} tokens exceeds the embedding context of ${MAX_EMBEDDING_CONTEXT}`);
        // One embedding context serves requests one at a time.
        const run = this.embeddingQueue.then(async () => {
            this.embeddingContext ??= this.model.createEmbeddingContext({
                contextSize: Math.min(MAX_EMBEDDING_CONTEXT, this.model.trainContextSize),
                threads: this.settings.threads
            });
            const context = await this.embeddingContext;
            const vectors: number[][] = [];
            for (const tokens of tokenized) {
                if (signal.aborted)
                    throw InferenceError.cancelled();
                const embedding = await context.getEmbeddingFor(tokens);
                vectors.push([...embedding.vector]);
            }
            return {vectors, promptTokens};
        });
        this.embeddingQueue = run.catch(() => undefined);
        return run;
    }

    async dispose() {
        await (await this.embeddingContext?.catch(() => undefined))?.dispose();
        await this.context.dispose();
        await this.model.dispose();
        await this.draft?.context.dispose();
        await this.draft?.model.dispose();
    }

    /**
     * Tokens the reply may use: what was asked, capped by the context left after the prompt. Without the cap,
     * a model that never emits end-of-generation would shift its context and generate forever.
     */
    private generationBudget(promptTokens: number, requested: number | undefined) {
        const room = this.info.contextSize - promptTokens;
        if (room <= 0)
            throw InferenceError.contextLengthExceeded(
                `prompt of ${promptTokens} tokens does not fit the context of ${this.info.contextSize} tokens`);
        return Math.min(requested ?? room, room);
    }

    private async constraintsFor(request: GenerationRequest): Promise<{grammar?: LlamaGrammar, tokenBias?: TokenBias}> {
        const grammar = await this.grammarFor(request.sampling.responseFormat);
        const logitBias = Object.entries(request.sampling.logitBias ?? {});
        if (logitBias.length === 0)
            return grammar === undefined ? {} : {grammar};

        const tokenBias = new TokenBias(this.model.tokenizer);
        for (const [token, bias] of logitBias) {
            const id = Number(token);
            if (!this.inVocabulary(id))
                throw InferenceError.invalidRequest(`logit_bias names token ${token}, which is not in the vocabulary`, 'logit_bias');
            // -100 is a ban in practice (e^-100), yet finite: where a grammar allows only tokens the client banned,
            // one of them is still sampled (with no token left, llama.cpp's grammar fails and node-llama-cpp throws
            // where nothing can catch it, ending the engine process).
            tokenBias.set(id as Token, {logit: bias});
        }
        return {...(grammar !== undefined && {grammar}), tokenBias};
    }

    private inVocabulary(id: number) {
        const vocabularySize = this.model.fileInfo.metadata.tokenizer?.ggml?.tokens?.length ?? Infinity;
        return Number.isInteger(id) && id >= 0 && id < vocabularySize;
    }

    private async grammarFor(format: ResponseFormat): Promise<LlamaGrammar | undefined> {
        if (format.type === 'json_object')
            return this.llama.getGrammarFor('json');
        if (format.type !== 'json_schema')
            return undefined;
        try {
            // As node-llama-cpp's JSON schema grammars: whitespace after the value is dropped.
            return await this.llama.createGrammar({grammar: schemaToGbnf(format.schema), stopGenerationTriggers: [LlamaText('\n'.repeat(4))],
                trimWhitespaceSuffix: true});
        } catch (error) {
            // A schema the grammar refuses, or one llama.cpp's parser does (a reference that loops before any value).
            throw InferenceError.invalidRequest(`response_format.json_schema is not supported: ${(error as Error).message}`, 'response_format');
        }
    }
}

/**
 * What drafts a model's tokens under the `speculative` setting: `draft` needs the model's draft model. `auto` does not
 * speculate for a model whose sequences keep state checkpoints (hybrid, recurrent, sliding-window attention):
 * node-llama-cpp's speculative path takes one every pass, drafts or not, and restores one for every refused draft.
 */
function speculativeDrafter(setting: SpeculativeSetting, spec: ModelLoadSpec, model: LlamaModel): Drafter | 'off' {
    const {isHybrid, isRecurrent, swaSize} = model.fileInsights;
    if (setting === 'auto' && (isHybrid || isRecurrent || swaSize !== undefined))
        return 'off';
    switch (setting) {
        case 'off':
            return 'off';
        case 'lookup':
            return 'lookup';
        case 'draft':
            return spec.draft === undefined ? 'off' : 'draft';
        case 'auto':
            return spec.draft === undefined ? 'lookup' : 'draft';
    }
}

/**
 * Loads a draft model beside `target`, whole on this node (a sharded engine's on its CPU: its RPC devices hold the
 * target's stages), with a sequence for each of the target's. Its vocabulary must be the target's: a drafted token
 * id is verified as the target's token of that id.
 */
async function loadDraft(llama: Llama, target: LlamaModel, path: string, settings: WorkerSettings): Promise<DraftRuntime> {
    const model = await llama.loadModel({
        modelPath: path,
        gpuLayers: settings.shard !== undefined || settings.gpu === false || llama.gpu === false ? 0 : 'auto'
    });
    try {
        const mismatch = vocabularyMismatch(target, model);
        if (mismatch !== undefined)
            throw new Error(`the draft model ${path} cannot draft for ${target.filename ?? 'the model'}: ${mismatch}`);
        const context = await model.createContext({
            sequences: settings.parallelSequences,
            contextSize: Math.min(settings.contextSize, model.trainContextSize),
            threads: settings.threads
        });
        return {model, context};
    } catch (error) {
        await model.dispose();
        throw error;
    }
}

/** Why two models' vocabularies differ, in a few words; undefined where they are the same. */
function vocabularyMismatch(target: LlamaModel, draft: LlamaModel): string | undefined {
    const ours = target.fileInfo.metadata.tokenizer?.ggml;
    const theirs = draft.fileInfo.metadata.tokenizer?.ggml;
    const tokens = ours?.tokens ?? [];
    const draftTokens = theirs?.tokens ?? [];
    if (ours?.model !== theirs?.model)
        return `its tokenizer is ${theirs?.model ?? 'unknown'}, the model's ${ours?.model ?? 'unknown'}`;
    if (tokens.length !== draftTokens.length)
        return `its vocabulary has ${draftTokens.length} tokens, the model's ${tokens.length}`;
    const differs = tokens.findIndex((token, id) => token !== draftTokens[id]);
    if (differs >= 0)
        return `token ${differs} is ${JSON.stringify(draftTokens[differs])} in it, ${JSON.stringify(tokens[differs])} in the model`;
    return undefined;
}
