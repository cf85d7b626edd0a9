import {z} from 'zod';
import type {ChatMessage, GenerationRequest, ResponseFormat, SamplingOptions} from '../../core/inference-types.js';
import {ApiError} from '../api-error.js';
import {functionName, tool, toToolCalling} from '../request-schemas.js';

/**
 * Ollama's request bodies (its API reference, /api/chat, /api/generate, /api/embed): unknown fields and options
 * are accepted and ignored, as Ollama does; known ones are checked (docs/architecture.md, "Ollama API").
 */

/** Ollama's default temperature when a Modelfile sets none. */
export const OLLAMA_DEFAULT_TEMPERATURE = 0.8;

const options = z.object({
    num_predict: z.number().int().min(-2).nullish(),
    num_ctx: z.number().int().min(1).nullish(),
    temperature: z.number().min(0).max(2).nullish(),
    top_p: z.number().min(0).max(1).nullish(),
    top_k: z.number().int().min(0).nullish(),
    min_p: z.number().min(0).max(1).nullish(),
    seed: z.number().int().nullish(),
    stop: z.union([z.string(), z.array(z.string())]).nullish(),
    presence_penalty: z.number().min(-2).max(2).nullish(),
    frequency_penalty: z.number().min(-2).max(2).nullish(),
    /** Not Ollama's: llama-server's and OpenAI's token bias, for clients that know strongdoge. */
    logit_bias: z.record(z.string().regex(/^\d+$/, 'keys must be token ids'), z.number().min(-100).max(100)).nullish()
}).passthrough();

const format = z.union([z.literal(''), z.literal('json'), z.record(z.string(), z.unknown())]).nullish();

const common = {
    model: z.string().min(1),
    stream: z.boolean().nullish(),
    format,
    options: options.nullish(),
    /** How long Ollama keeps the model loaded: strongdoge keeps its models loaded while it runs. */
    keep_alive: z.union([z.string(), z.number()]).nullish(),
    tools: z.array(tool).nullish(),
    think: z.union([z.boolean(), z.string()]).nullish()
};

const message = z.object({
    role: z.enum(['system', 'user', 'assistant', 'tool']),
    content: z.string().nullish(),
    images: z.array(z.string()).nullish(),
    /** Ollama writes a call's arguments as an object, not as JSON text. */
    tool_calls: z.array(z.object({function: z.object({name: functionName, arguments: z.record(z.string(), z.unknown())})})).nullish(),
    /** The function a tool message answers (Ollama has no call ids: results answer calls in order). */
    tool_name: z.string().nullish()
});

export const ollamaChatSchema = z.object({...common, messages: z.array(message).default([])});

export const ollamaGenerateSchema = z.object({
    ...common,
    prompt: z.string().default(''),
    system: z.string().nullish(),
    suffix: z.string().nullish(),
    template: z.string().nullish(),
    raw: z.boolean().nullish(),
    images: z.array(z.string()).nullish(),
    context: z.array(z.number()).nullish()
});

export const ollamaEmbedSchema = z.object({
    model: z.string().min(1),
    input: z.union([z.string(), z.array(z.string()).min(1).max(2048)]),
    truncate: z.boolean().nullish(),
    dimensions: z.number().int().min(1).nullish(),
    options: options.nullish(),
    keep_alive: z.union([z.string(), z.number()]).nullish()
});

/** The older single-input endpoint. */
export const ollamaEmbeddingsSchema = z.object({
    model: z.string().min(1),
    prompt: z.string(),
    options: options.nullish(),
    keep_alive: z.union([z.string(), z.number()]).nullish()
});

/** `/api/show` takes `model`; older clients send `name`. */
export const ollamaShowSchema = z.union([z.object({model: z.string().min(1)}), z.object({name: z.string().min(1)})])
    .transform((body) => 'model' in body ? body.model : body.name);

export type OllamaChatBody = z.infer<typeof ollamaChatSchema>;
export type OllamaGenerateBody = z.infer<typeof ollamaGenerateSchema>;

/** Ollama's names are `name:tag`, a missing tag meaning `latest`: `demo` and `demo:latest` are strongdoge's `demo`. */
export function modelIdOf(name: string) {
    return name.endsWith(':latest') ? name.slice(0, -':latest'.length) : name;
}

/** How Ollama clients see a strongdoge model id. */
export function ollamaNameOf(id: string) {
    return id.includes(':') ? id : `${id}:latest`;
}

function responseFormat(value: OllamaChatBody['format']): ResponseFormat {
    if (value == null || value === '')
        return {type: 'text'};
    return value === 'json' ? {type: 'json_object'} : {type: 'json_schema', schema: value};
}

function sampling(body: OllamaChatBody | OllamaGenerateBody): SamplingOptions {
    const given = body.options ?? {};
    const stop = given.stop == null ? [] : typeof given.stop === 'string' ? [given.stop] : given.stop;
    // num_predict: -1 is "no limit", -2 "fill the context"; either leaves the budget to the context left.
    const maxTokens = given.num_predict != null && given.num_predict > 0 ? given.num_predict : undefined;
    return {
        temperature: given.temperature ?? OLLAMA_DEFAULT_TEMPERATURE,
        ...(given.top_p != null && {topP: given.top_p}),
        ...(given.top_k != null && {topK: given.top_k}),
        ...(given.min_p != null && {minP: given.min_p}),
        ...(given.seed != null && {seed: given.seed}),
        stop: stop.filter((sequence) => sequence.length > 0),
        ...(maxTokens !== undefined && {maxTokens}),
        ...(given.presence_penalty != null && {presencePenalty: given.presence_penalty}),
        ...(given.frequency_penalty != null && {frequencyPenalty: given.frequency_penalty}),
        ...(given.logit_bias != null && {logitBias: given.logit_bias}),
        responseFormat: responseFormat(body.format)
    };
}

function refuseImages(body: {images?: string[] | null}) {
    if (body.images != null && body.images.length > 0)
        throw ApiError.unsupported('images', 'Images are not supported: the models served are text-only.');
}

/**
 * Ollama's chat as strongdoge's: calls get ids, and each tool message answers the earliest unanswered call (of its
 * `tool_name` when it names one), as Ollama pairs them.
 */
function chatMessages(body: OllamaChatBody): ChatMessage[] {
    const unanswered: {id: string, name: string}[] = [];
    return body.messages.map((item, index): ChatMessage => {
        refuseImages(item);
        const content = item.content ?? '';
        if (item.role === 'tool') {
            const answered = unanswered.findIndex((call) => item.tool_name == null || call.name === item.tool_name);
            if (answered < 0)
                throw ApiError.invalid(`messages.${index}: a 'tool' message must answer a tool call of an earlier assistant message.`, `messages.${index}`);
            const [call] = unanswered.splice(answered, 1);
            return {role: 'tool', content, toolCallId: call!.id};
        }
        if (item.role === 'assistant' && item.tool_calls != null && item.tool_calls.length > 0) {
            const toolCalls = item.tool_calls.map((call, callIndex) => ({
                id: `${index}-${callIndex}`, name: call.function.name, arguments: JSON.stringify(call.function.arguments)
            }));
            unanswered.push(...toolCalls);
            return {role: 'assistant', content, toolCalls};
        }
        return {role: item.role, content};
    });
}

export function chatRequestOf(body: OllamaChatBody): GenerationRequest {
    const tools = toToolCalling(body.tools, 'auto', true);
    return {kind: 'chat', model: modelIdOf(body.model), messages: chatMessages(body), sampling: sampling(body), ...(tools !== undefined && {tools})};
}

/** `/api/generate` applies the model's chat template to the prompt, as Ollama does, unless `raw`. */
export function generateRequestOf(body: OllamaGenerateBody): GenerationRequest {
    refuseImages(body);
    if (body.tools != null && body.tools.length > 0)
        throw ApiError.unsupported('tools', 'Tools are for /api/chat, as in Ollama.');
    if (body.suffix != null && body.suffix !== '')
        throw ApiError.unsupported('suffix', 'suffix (fill-in-the-middle) is not supported.');
    if (body.template != null && body.template !== '')
        throw ApiError.unsupported('template', 'Custom templates are not supported: the model\'s own chat template is used.');
    const model = modelIdOf(body.model);
    if (body.raw)
        return {kind: 'completion', model, prompt: body.prompt, sampling: sampling(body)};
    const messages: ChatMessage[] = [...(body.system ? [{role: 'system' as const, content: body.system}] : []), {role: 'user', content: body.prompt}];
    return {kind: 'chat', model, messages, sampling: sampling(body)};
}
