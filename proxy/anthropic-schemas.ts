import {z} from 'zod';
import type {ChatMessage, GenerationRequest} from '../core/inference-types.js';
import {ApiError, clip} from './api-error.js';
import {functionName, parseBody, toToolCalling} from './request-schemas.js';

/**
 * Anthropic's Messages API bodies (README, "Endpoints"), translated into the same GenerationRequest as OpenAI's chat:
 * tools go through the same tool calling. Unknown fields are ignored; `cache_control` markers are accepted and
 * ignored, as there is no prompt cache to steer.
 */

const MAX_STOP_SEQUENCES = 16;

const textBlock = z.object({type: z.literal('text'), text: z.string()});
const block = z.object({type: z.string()}).passthrough();

const toolUseBlock = z.object({
    type: z.literal('tool_use'),
    id: z.string().min(1).max(128),
    name: functionName,
    input: z.record(z.string(), z.unknown())
});
const toolResultBlock = z.object({
    type: z.literal('tool_result'),
    tool_use_id: z.string().min(1).max(128),
    content: z.union([z.string(), z.array(block)]).optional(),
    is_error: z.boolean().optional()
});

const message = z.object({
    role: z.enum(['user', 'assistant']),
    content: z.union([z.string(), z.array(block)])
});

/**
 * A client's tool; `type` set to anything but 'custom' is one of Anthropic's server tools (web_search, …), which
 * has no `input_schema`: the schema is required of client tools only, so that a server tool is refused by its name.
 */
const customTool = z.object({
    type: z.string().optional(),
    name: z.string(),
    description: z.string().optional(),
    input_schema: z.record(z.string(), z.unknown()).optional()
}).passthrough();

const clientTool = customTool.extend({name: functionName, input_schema: z.record(z.string(), z.unknown())});

const toolChoice = z.discriminatedUnion('type', [
    z.object({type: z.literal('auto'), disable_parallel_tool_use: z.boolean().optional()}),
    z.object({type: z.literal('any'), disable_parallel_tool_use: z.boolean().optional()}),
    z.object({type: z.literal('tool'), name: z.string(), disable_parallel_tool_use: z.boolean().optional()}),
    z.object({type: z.literal('none')})
]);

const countFields = {
    model: z.string().min(1),
    system: z.union([z.string(), z.array(block)]).optional(),
    messages: z.array(message).min(1),
    tools: z.array(customTool).optional(),
    tool_choice: toolChoice.optional(),
    thinking: z.unknown().optional()
};

export const countTokensSchema = z.object(countFields);

export const messagesSchema = z.object({
    ...countFields,
    max_tokens: z.number().int().min(1),
    stop_sequences: z.array(z.string().min(1)).max(MAX_STOP_SEQUENCES).optional(),
    temperature: z.number().min(0).max(1).optional(),
    top_p: z.number().min(0).max(1).optional(),
    top_k: z.number().int().min(0).optional(),
    stream: z.boolean().optional(),
    metadata: z.object({user_id: z.string().nullish()}).passthrough().optional(),
    service_tier: z.string().optional()
});

export type CountTokensBody = z.infer<typeof countTokensSchema>;
export type MessagesBody = z.infer<typeof messagesSchema>;

/** Text blocks' text; any other block is a 400 naming it. */
function blocksText(blocks: z.infer<typeof block>[], param: string): string {
    return blocks.map((part, index) => {
        const parsed = textBlock.safeParse(part);
        if (!parsed.success)
            throw ApiError.unsupported(`${param}.${index}`, `Content blocks of type '${String(part.type)}' are not supported here; only 'text' blocks are.`);
        return parsed.data.text;
    }).join('');
}

/**
 * The turns as chat messages: an assistant's `tool_use` blocks are its calls, a user's `tool_result` blocks are
 * tool messages answering them (before the user's own text, as Anthropic orders them).
 */
function toMessages(body: CountTokensBody): ChatMessage[] {
    const system = typeof body.system === 'string' ? body.system : body.system === undefined ? '' : blocksText(body.system, 'system');
    const messages: ChatMessage[] = system === '' ? [] : [{role: 'system', content: system}];
    const callIds = new Set<string>();
    for (const [index, {role, content}] of body.messages.entries()) {
        if (typeof content === 'string') {
            messages.push({role, content});
            continue;
        }
        let text = '';
        const calls: NonNullable<ChatMessage['toolCalls']> = [];
        for (const [blockIndex, part] of content.entries()) {
            const param = `messages.${index}.content.${blockIndex}`;
            if (part.type === 'text')
                text += parseBody(textBlock, part, [param]).text;
            else if (part.type === 'tool_use' && role === 'assistant') {
                const use = parseBody(toolUseBlock, part, [param]);
                callIds.add(use.id);
                calls.push({id: use.id, name: use.name, arguments: JSON.stringify(use.input)});
            } else if (part.type === 'tool_result' && role === 'user') {
                const result = parseBody(toolResultBlock, part, [param]);
                if (!callIds.has(result.tool_use_id))
                    throw ApiError.invalid(`${param}: a tool_result must answer a tool_use of an earlier assistant message (tool_use_id).`, `${param}.tool_use_id`);
                const output = typeof result.content === 'string' ? result.content : blocksText(result.content ?? [], `${param}.content`);
                messages.push({role: 'tool', content: result.is_error === true ? `Error: ${output}` : output, toolCallId: result.tool_use_id});
            } else
                throw ApiError.unsupported(param, `Content blocks of type '${part.type}' are not supported in ${role} messages; `
                    + `only text${role === 'assistant' ? ' and tool_use' : ' and tool_result'} blocks are.`);
        }
        if (role === 'assistant' && calls.length > 0)
            messages.push({role, content: text, toolCalls: calls});
        else if (text !== '' || role === 'assistant')
            messages.push({role, content: text});
    }
    return messages;
}

function toTools(body: CountTokensBody) {
    const tools = (body.tools ?? []).map((tool, index) => {
        if (tool.type !== undefined && tool.type !== 'custom')
            throw ApiError.unsupported(`tools.${index}.type`, `Server tools ('${clip(tool.type)}') are not supported; only client tools with an input_schema are.`);
        const {name, description, input_schema: parameters} = parseBody(clientTool, tool, ['tools', index]);
        return {type: 'function' as const, function: {name, description, parameters}};
    });
    const choice = body.tool_choice;
    const openAiChoice = choice === undefined ? undefined : choice.type === 'auto' ? 'auto' as const : choice.type === 'any' ? 'required' as const
        : choice.type === 'none' ? 'none' as const : {type: 'function' as const, function: {name: choice.name}};
    const parallel = choice !== undefined && choice.type !== 'none' && choice.disable_parallel_tool_use === true ? false : undefined;
    return toToolCalling(tools, openAiChoice, parallel);
}

/** The request the engine runs for a Messages body; count_tokens sends the same as a `countOnly` request. */
export function toMessagesRequest(body: MessagesBody | CountTokensBody): GenerationRequest {
    if (body.thinking !== undefined && (body.thinking as {type?: unknown} | null)?.type !== 'disabled')
        throw ApiError.unsupported('thinking', 'Extended thinking is not supported.');
    const tools = toTools(body);
    const sampled = 'max_tokens' in body ? body : undefined;
    return {
        kind: 'chat',
        model: body.model,
        messages: toMessages(body),
        sampling: {
            // Anthropic's default temperature is 1.
            temperature: sampled?.temperature ?? 1,
            ...(sampled?.top_p !== undefined && {topP: sampled.top_p}),
            ...(sampled?.top_k !== undefined && {topK: sampled.top_k}),
            stop: sampled?.stop_sequences ?? [],
            maxTokens: sampled?.max_tokens ?? 1,
            responseFormat: {type: 'text'}
        },
        ...(tools !== undefined && {tools})
    };
}
