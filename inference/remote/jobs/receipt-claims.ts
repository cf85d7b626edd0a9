import type {GenerationRequest} from '../../../core/inference-types.js';

/**
 * What a requester can bound on its own about a job it sent (docs/architecture.md, "Receipts"): it has no
 * tokenizer for a peer's model, but no tokenizer makes more tokens of a text than it has bytes, and a chat
 * template adds a bounded amount around them. A provider claiming more prompt tokens than this is lying.
 */

/**
 * Tokens a chat template may add around the messages (roles, tags, a default system prompt, the tools' preamble):
 * generous, as an honest peer over the bound is banned, while the bound only has to stop claims of millions.
 */
export const TEMPLATE_OVERHEAD_TOKENS = 4096;
/** Tokens a template may add per message (its role and separators). */
export const PER_MESSAGE_OVERHEAD_TOKENS = 32;
/** Tokens an embedding may add around each input (BOS, EOS, separators). */
export const PER_INPUT_OVERHEAD_TOKENS = 4;

const bytes = (text: string) => Buffer.byteLength(text, 'utf8');

/** The most prompt tokens the request can be, as any model tokenizes and templates it. */
export function promptTokenBound(request: GenerationRequest): number {
    const continuation = request.continuation?.tokens.length ?? 0;
    if (request.kind === 'completion')
        return bytes(request.prompt) + TEMPLATE_OVERHEAD_TOKENS + continuation;
    const messages = request.messages.reduce((sum, message) => sum + bytes(message.content) + PER_MESSAGE_OVERHEAD_TOKENS
        + (message.toolCalls ?? []).reduce((calls, call) => calls + bytes(call.name) + bytes(call.arguments) + PER_MESSAGE_OVERHEAD_TOKENS, 0), 0);
    // Twice the tools as JSON indented by 4 (Llama 3.1's templates write them so; others as declarations of similar size).
    const tools = request.tools === undefined ? 0 : 2 * bytes(JSON.stringify(request.tools.tools, null, 4));
    return messages + tools + TEMPLATE_OVERHEAD_TOKENS + continuation;
}

/**
 * The most tokens a generation can be billed for (docs/architecture.md, "Payments"): its prompt's bound and the
 * tokens it may generate, `max_tokens` or else `tokenCap` (the serving peer's cap).
 */
export function generationTokenBound(request: GenerationRequest, tokenCap: number): number {
    return promptTokenBound(request) + (request.sampling.maxTokens ?? tokenCap);
}

/** The most tokens the inputs of an embedding can be. */
export function embeddingTokenBound(inputs: readonly string[]): number {
    return inputs.reduce((sum, input) => sum + bytes(input) + PER_INPUT_OVERHEAD_TOKENS, 0);
}
