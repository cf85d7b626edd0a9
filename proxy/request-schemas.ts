import {z} from 'zod';
import type {ChatMessage, GenerationRequest, ResponseFormat, SamplingOptions} from '../inference/inference-types.js';
import {ApiError, clip} from './api-error.js';

/** OpenAI's request bodies. Unknown fields are ignored, as OpenAI-compatible servers do; known ones are checked. */

const MAX_STOP_SEQUENCES = 16;
/** Most choices per request (`n`): each takes a sequence of the engine. */
export const MAX_CHOICES = 16;
/** OpenAI's own limit of inputs per embeddings request. */
const MAX_EMBEDDING_INPUTS = 2048;

const stop = z.union([z.string().min(1), z.array(z.string().min(1)).max(MAX_STOP_SEQUENCES)]).nullish();

const responseFormat = z.discriminatedUnion('type', [
    z.object({type: z.literal('text')}),
    z.object({type: z.literal('json_object')}),
    z.object({
        type: z.literal('json_schema'),
        json_schema: z.object({
            name: z.string().optional(),
            schema: z.record(z.string(), z.unknown()),
            strict: z.boolean().nullish()
        })
    })
]);

const samplingFields = {
    model: z.string().min(1),
    stream: z.boolean().nullish(),
    stream_options: z.object({include_usage: z.boolean().optional()}).nullish(),
    temperature: z.number().min(0).max(2).nullish(),
    top_p: z.number().min(0).max(1).nullish(),
    top_k: z.number().int().min(0).nullish(),
    min_p: z.number().min(0).max(1).nullish(),
    seed: z.number().int().nullish(),
    stop,
    max_tokens: z.number().int().min(1).nullish(),
    presence_penalty: z.number().min(-2).max(2).nullish(),
    frequency_penalty: z.number().min(-2).max(2).nullish(),
    logit_bias: z.record(z.string().regex(/^\d+$/, 'keys must be token ids'), z.number().min(-100).max(100)).nullish(),
    n: z.number().int().min(1).max(MAX_CHOICES).nullish(),
    user: z.string().nullish()
};

const textPart = z.object({type: z.literal('text'), text: z.string()});
const contentPart = z.object({type: z.string()}).passthrough();

const chatMessage = z.object({
    role: z.enum(['system', 'developer', 'user', 'assistant', 'tool', 'function']),
    content: z.union([z.string(), z.array(contentPart), z.null()]).optional(),
    name: z.string().optional()
});

export const chatCompletionSchema = z.object({
    ...samplingFields,
    messages: z.array(chatMessage).min(1),
    max_completion_tokens: z.number().int().min(1).nullish(),
    response_format: responseFormat.nullish(),
    logprobs: z.boolean().nullish(),
    tools: z.array(z.unknown()).nullish(),
    functions: z.array(z.unknown()).nullish()
});

export const completionSchema = z.object({
    ...samplingFields,
    prompt: z.union([z.string(), z.array(z.string()).min(1)]),
    echo: z.boolean().nullish(),
    suffix: z.string().nullish(),
    best_of: z.number().int().min(1).nullish(),
    logprobs: z.number().int().min(0).nullish()
});

export const embeddingSchema = z.object({
    model: z.string().min(1),
    input: z.union([z.string(), z.array(z.string()).min(1).max(MAX_EMBEDDING_INPUTS)]),
    encoding_format: z.enum(['float', 'base64']).nullish(),
    dimensions: z.number().int().min(1).nullish(),
    user: z.string().nullish()
});

export type ChatCompletionBody = z.infer<typeof chatCompletionSchema>;
export type CompletionBody = z.infer<typeof completionSchema>;
export type EmbeddingBody = z.infer<typeof embeddingSchema>;

/** Parses a body against a schema, turning the first problem into an OpenAI error that names the parameter. */
export function parseBody<T extends z.ZodType>(schema: T, body: unknown): z.infer<T> {
    if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body))
        throw ApiError.invalid('The request body must be a JSON object.');
    const result = schema.safeParse(body);
    if (result.success)
        return result.data;
    const issue = result.error.issues[0]!;
    const param = clip(issue.path.map(String).join('.')) || null;
    throw ApiError.invalid(`Invalid value for '${param ?? 'body'}': ${issue.message}`, param, 'invalid_value');
}

type SamplingBody = Pick<ChatCompletionBody, keyof typeof samplingFields>;

function toSampling(body: SamplingBody, maxTokens: number | null | undefined, format: ResponseFormat): SamplingOptions {
    const stopSequences = body.stop == null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop;
    return {
        // OpenAI's default temperature is 1.
        temperature: body.temperature ?? 1,
        ...(body.top_p != null && {topP: body.top_p}),
        ...(body.top_k != null && {topK: body.top_k}),
        ...(body.min_p != null && {minP: body.min_p}),
        ...(body.seed != null && {seed: body.seed}),
        stop: stopSequences,
        ...(maxTokens != null && {maxTokens}),
        ...(body.presence_penalty != null && {presencePenalty: body.presence_penalty}),
        ...(body.frequency_penalty != null && {frequencyPenalty: body.frequency_penalty}),
        ...(body.logit_bias != null && {logitBias: body.logit_bias}),
        responseFormat: format
    };
}

function messageText(message: z.infer<typeof chatMessage>, index: number): string {
    if (message.content == null)
        return '';
    if (typeof message.content === 'string')
        return message.content;
    return message.content.map((part, partIndex) => {
        const parsed = textPart.safeParse(part);
        if (!parsed.success)
            throw ApiError.unsupported(`messages.${index}.content.${partIndex}`,
                `Content parts of type '${part.type}' are not supported; only 'text' parts are.`);
        return parsed.data.text;
    }).join('');
}

export function toChatRequest(body: ChatCompletionBody): GenerationRequest {
    if (body.tools != null && body.tools.length > 0)
        throw ApiError.unsupported('tools', 'Tool calling is not supported yet.');
    if (body.functions != null && body.functions.length > 0)
        throw ApiError.unsupported('functions', 'Function calling is not supported yet.');
    if (body.logprobs)
        throw ApiError.unsupported('logprobs', 'logprobs are not supported.');

    const messages: ChatMessage[] = body.messages.map((message, index) => {
        if (message.role === 'tool' || message.role === 'function')
            throw ApiError.unsupported(`messages.${index}.role`, `Messages with role '${message.role}' need tool calling, which is not supported yet.`);
        const role = message.role === 'developer' ? 'system' : message.role;
        return {role, content: messageText(message, index)};
    });

    const format = body.response_format;
    const responseFormat: ResponseFormat = format == null || format.type === 'text'
        ? {type: 'text'}
        : format.type === 'json_object'
            ? {type: 'json_object'}
            : {type: 'json_schema', schema: format.json_schema.schema, ...(format.json_schema.name && {name: format.json_schema.name})};

    return {
        kind: 'chat',
        model: body.model,
        messages,
        sampling: toSampling(body, body.max_completion_tokens ?? body.max_tokens, responseFormat)
    };
}

export function toCompletionRequest(body: CompletionBody): GenerationRequest {
    if (Array.isArray(body.prompt) && body.prompt.length > 1)
        throw ApiError.unsupported('prompt', 'Only one prompt per request is supported.');
    if (body.echo)
        throw ApiError.unsupported('echo', 'echo is not supported.');
    if (body.suffix != null)
        throw ApiError.unsupported('suffix', 'suffix (fill-in-the-middle) is not supported.');
    if ((body.best_of ?? 1) > 1)
        throw ApiError.unsupported('best_of', 'best_of > 1 is not supported.');
    if (body.logprobs != null)
        throw ApiError.unsupported('logprobs', 'logprobs are not supported.');
    const prompt = Array.isArray(body.prompt) ? body.prompt[0]! : body.prompt;
    return {kind: 'completion', model: body.model, prompt, sampling: toSampling(body, body.max_tokens, {type: 'text'})};
}
