import {z} from 'zod';
import type {ChatMessage, GenerationRequest, ResponseFormat, SamplingOptions, ToolCalling} from '../core/inference-types.js';
import {MAX_TOP_LOGPROBS} from '../core/request-limits.js';
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

/** Function names as OpenAI allows them. */
export const FUNCTION_NAME = /^[a-zA-Z0-9_-]{1,64}$/;
export const functionName = z.string().regex(FUNCTION_NAME, 'function names are 1 to 64 letters, digits, underscores and dashes');

const chatMessage = z.object({
    role: z.enum(['system', 'developer', 'user', 'assistant', 'tool', 'function']),
    content: z.union([z.string(), z.array(contentPart), z.null()]).optional(),
    name: z.string().optional(),
    tool_calls: z.array(z.object({
        id: z.string().min(1).max(128),
        type: z.literal('function'),
        function: z.object({name: functionName, arguments: z.string()})
    })).nullish(),
    tool_call_id: z.string().max(128).optional()
});

export const tool = z.object({
    type: z.literal('function'),
    function: z.object({
        name: functionName,
        description: z.string().nullish(),
        parameters: z.record(z.string(), z.unknown()).nullish(),
        strict: z.boolean().nullish()
    })
});

const toolChoice = z.union([
    z.enum(['none', 'auto', 'required']),
    z.object({type: z.literal('function'), function: z.object({name: z.string()})})
]);

export const chatCompletionSchema = z.object({
    ...samplingFields,
    messages: z.array(chatMessage).min(1),
    max_completion_tokens: z.number().int().min(1).nullish(),
    response_format: responseFormat.nullish(),
    logprobs: z.boolean().nullish(),
    top_logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).nullish(),
    tools: z.array(tool).nullish(),
    tool_choice: toolChoice.nullish(),
    parallel_tool_calls: z.boolean().nullish(),
    functions: z.array(z.unknown()).nullish()
});

export const completionSchema = z.object({
    ...samplingFields,
    prompt: z.union([z.string(), z.array(z.string()).min(1)]),
    echo: z.boolean().nullish(),
    suffix: z.string().nullish(),
    best_of: z.number().int().min(1).nullish(),
    logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).nullish()
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

/** Parses a body (or the part of one at `at`) against a schema, turning the first problem into an error that names the parameter. */
export function parseBody<T extends z.ZodType>(schema: T, body: unknown, at: (string | number)[] = []): z.infer<T> {
    if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body))
        throw ApiError.invalid('The request body must be a JSON object.');
    const result = schema.safeParse(body);
    if (result.success)
        return result.data;
    const issue = result.error.issues[0]!;
    const param = clip([...at, ...issue.path].map(String).join('.')) || null;
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

/** The tools offered, as the engine takes them; undefined when none are. */
export function toToolCalling(tools: z.infer<typeof tool>[] | null | undefined, choice: z.infer<typeof toolChoice> | null | undefined,
    parallel: boolean | null | undefined): ToolCalling | undefined {
    if (tools == null || tools.length === 0) {
        if (choice === 'required' || typeof choice === 'object')
            throw ApiError.invalid('tool_choice asks for a tool call, but no tools were given.', 'tool_choice');
        return undefined;
    }
    return {
        tools: tools.map(({function: definition}) => ({
            name: definition.name,
            ...(definition.description != null && {description: definition.description}),
            ...(definition.parameters != null && {parameters: definition.parameters})
        })),
        choice: typeof choice === 'object' && choice !== null ? {name: choice.function.name} : choice ?? 'auto',
        parallel: parallel ?? true
    };
}

/** A chat's messages; a tool message must answer a call an assistant message made before it. */
function toMessages(body: ChatCompletionBody): ChatMessage[] {
    const callIds = new Set<string>();
    return body.messages.map((message, index): ChatMessage => {
        if (message.role === 'function')
            throw ApiError.unsupported(`messages.${index}.role`, "Messages with role 'function' are not supported; use tools and 'tool' messages.");
        const content = messageText(message, index);
        if (message.role === 'tool') {
            if (message.tool_call_id === undefined || !callIds.has(message.tool_call_id))
                throw ApiError.invalid(`messages.${index}: a 'tool' message must answer a tool call of an earlier assistant message (tool_call_id).`,
                    `messages.${index}.tool_call_id`);
            return {role: 'tool', content, toolCallId: message.tool_call_id};
        }
        if (message.role === 'assistant' && message.tool_calls != null && message.tool_calls.length > 0) {
            const toolCalls = message.tool_calls.map((call, callIndex) => {
                try {
                    JSON.parse(call.function.arguments);
                } catch {
                    throw ApiError.invalid(`messages.${index}.tool_calls.${callIndex}.function.arguments is not JSON.`,
                        `messages.${index}.tool_calls.${callIndex}.function.arguments`);
                }
                callIds.add(call.id);
                return {id: call.id, name: call.function.name, arguments: call.function.arguments};
            });
            return {role: 'assistant', content, toolCalls};
        }
        return {role: message.role === 'developer' ? 'system' : message.role, content};
    });
}

export function toChatRequest(body: ChatCompletionBody): GenerationRequest {
    if (body.functions != null && body.functions.length > 0)
        throw ApiError.unsupported('functions', "'functions' is deprecated and not supported; use 'tools'.");
    if (body.top_logprobs != null && body.logprobs !== true)
        throw ApiError.invalid('top_logprobs needs logprobs: true.', 'top_logprobs');

    const messages = toMessages(body);
    const tools = toToolCalling(body.tools, body.tool_choice, body.parallel_tool_calls);

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
        sampling: {
            ...toSampling(body, body.max_completion_tokens ?? body.max_tokens, responseFormat),
            ...(body.logprobs === true && {logprobs: body.top_logprobs ?? 0})
        },
        ...(tools !== undefined && {tools})
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
    const prompt = Array.isArray(body.prompt) ? body.prompt[0]! : body.prompt;
    const sampling = toSampling(body, body.max_tokens, {type: 'text'});
    return {kind: 'completion', model: body.model, prompt, sampling: {...sampling, ...(body.logprobs != null && {logprobs: body.logprobs})}};
}
