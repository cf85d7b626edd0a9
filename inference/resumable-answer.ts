import type {GenerateOptions} from './inference-service.js';
import type {ChunkExtras, GenerationRequest, GenerationResult, TokenLogprob, ToolCall} from '../core/inference-types.js';

/**
 * One answer over several attempts (another peer, a new pipeline): what has streamed so far, the request that
 * continues after it, and the attempt's result merged with what came before, so the client sees one answer
 * (docs/architecture.md, "The path of a request").
 */
export class ResumableAnswer {
    private readonly tokens: number[];
    private readonly initialTokens: number;
    private streamed = '';
    private readonly toolCalls: ToolCall[] = [];
    private readonly logprobs: TokenLogprob[] = [];

    constructor(private readonly request: GenerationRequest, private readonly onText: GenerateOptions['onText']) {
        this.tokens = [...request.continuation?.tokens ?? []];
        this.initialTokens = this.tokens.length;
    }

    /** Tokens streamed by an earlier attempt of this answer: a failure now may come from them, not from the client. */
    get resumed() {
        return this.tokens.length > this.initialTokens;
    }

    /** Starts an attempt: the request to send, its text listener, and how to merge its result. */
    attempt() {
        const before = this.streamed;
        const tokensBefore = this.tokens.length;
        const callsBefore = [...this.toolCalls];
        const logprobsBefore = [...this.logprobs];
        return {
            request: {...this.request, ...(this.tokens.length > 0 && {continuation: {tokens: [...this.tokens]}})},
            onText: (text: string, tokens: number[], extras?: ChunkExtras) => {
                this.streamed += text;
                this.tokens.push(...tokens);
                if (extras?.toolCall !== undefined)
                    this.toolCalls.push(extras.toolCall);
                this.logprobs.push(...extras?.logprobs ?? []);
                this.onText?.(text, tokens, extras);
            },
            /** The whole answer: earlier attempts' text and tokens count too. */
            finish: (result: GenerationResult): GenerationResult => ({
                ...result,
                text: before + result.text,
                ...(callsBefore.length + (result.toolCalls?.length ?? 0) > 0 && {toolCalls: [...callsBefore, ...result.toolCalls ?? []]}),
                ...(result.logprobs !== undefined && {logprobs: [...logprobsBefore, ...result.logprobs]}),
                usage: {promptTokens: result.usage.promptTokens, completionTokens: tokensBefore - this.initialTokens + result.usage.completionTokens}
            })
        };
    }
}
