import type {Request, RequestHandler, Response} from 'express';
import {z} from 'zod';
import type {InferenceService} from '../../inference/inference-service.js';
import type {ChatMessage, GenerationRequest, GenerationResult, ResponseFormat, ToolCall} from '../../core/inference-types.js';
import {ApiError} from '../api-error.js';
import {functionName, parseBody, toToolCalling} from '../request-schemas.js';
import {SseWriter} from '../stream-writers.js';
import {countingSentTokens, type ResponseLocals, startGeneration, streamFailure, toolCallId} from './route-helpers.js';

/**
 * OpenAI's Responses API (`POST /v1/responses`), which newer SDKs and agent frameworks call by default: text, JSON
 * output and function calls, streamed as its typed events or not (docs/architecture.md, "Responses API").
 * Stateless: every request carries its whole input, earlier calls and their outputs included.
 */

const inputText = z.object({type: z.enum(['input_text', 'output_text']), text: z.string()});
const inputMessage = z.object({
    type: z.literal('message').optional(),
    role: z.enum(['system', 'developer', 'user', 'assistant']),
    content: z.union([z.string(), z.array(z.object({type: z.string()}).passthrough())])
});

/** A call the model made earlier, and what the function returned: input items of a conversation with tools. */
const functionCallItem = z.object({type: z.literal('function_call'), call_id: z.string().min(1).max(128), name: functionName, arguments: z.string()});
const functionOutputItem = z.object({type: z.literal('function_call_output'), call_id: z.string().min(1).max(128), output: z.string()});

/** The Responses API's function tools: flat, where chat completions nest them under `function`. */
const functionTool = z.object({
    type: z.literal('function'),
    name: functionName,
    description: z.string().nullish(),
    parameters: z.record(z.string(), z.unknown()).nullish(),
    strict: z.boolean().nullish()
});

const textFormat = z.discriminatedUnion('type', [
    z.object({type: z.literal('text')}),
    z.object({type: z.literal('json_object')}),
    z.object({type: z.literal('json_schema'), name: z.string().optional(), schema: z.record(z.string(), z.unknown()), strict: z.boolean().nullish()})
]);

export const responsesSchema = z.object({
    model: z.string().min(1),
    input: z.union([z.string(), z.array(z.object({type: z.string().optional()}).passthrough()).min(1)]),
    instructions: z.string().nullish(),
    max_output_tokens: z.number().int().min(1).nullish(),
    temperature: z.number().min(0).max(2).nullish(),
    top_p: z.number().min(0).max(1).nullish(),
    stream: z.boolean().nullish(),
    text: z.object({format: textFormat.optional()}).nullish(),
    tools: z.array(z.object({type: z.string()}).passthrough()).nullish(),
    tool_choice: z.union([z.enum(['none', 'auto', 'required']), z.object({type: z.literal('function'), name: z.string()})]).nullish(),
    parallel_tool_calls: z.boolean().nullish(),
    previous_response_id: z.string().nullish(),
    store: z.boolean().nullish(),
    metadata: z.record(z.string(), z.string()).nullish()
});

type ResponsesBody = z.infer<typeof responsesSchema>;

function messageOf(item: Record<string, unknown>, index: number): ChatMessage {
    const parsed = inputMessage.safeParse(item);
    if (!parsed.success)
        throw ApiError.unsupported(`input.${index}`, `Input items of type '${String(item.type ?? 'unknown')}' are not supported; only messages with text are.`);
    const {role, content} = parsed.data;
    const text = typeof content === 'string' ? content : content.map((part, partIndex) => {
        const textPart = inputText.safeParse(part);
        if (!textPart.success)
            throw ApiError.unsupported(`input.${index}.content.${partIndex}`, `Content parts of type '${part.type}' are not supported; only text is.`);
        return textPart.data.text;
    }).join('');
    return {role: role === 'developer' ? 'system' : role, content: text};
}

/**
 * The input items as chat messages: consecutive function calls are one assistant turn's calls, and an output
 * answers the call with its `call_id`.
 */
function messagesOf(input: ResponsesBody['input']): ChatMessage[] {
    if (typeof input === 'string')
        return [{role: 'user', content: input}];
    const messages: ChatMessage[] = [];
    const calls = new Set<string>();
    for (const [index, item] of input.entries()) {
        if (item.type === 'function_call') {
            const call = parseBody(functionCallItem, item);
            calls.add(call.call_id);
            const last = messages.at(-1);
            const toolCall = {id: call.call_id, name: call.name, arguments: call.arguments};
            if (last?.role === 'assistant' && last.toolCalls !== undefined)
                last.toolCalls.push(toolCall);
            else
                messages.push({role: 'assistant', content: '', toolCalls: [toolCall]});
        } else if (item.type === 'function_call_output') {
            const output = parseBody(functionOutputItem, item);
            if (!calls.has(output.call_id))
                throw ApiError.invalid(`input.${index}: a function_call_output must answer an earlier function_call (call_id).`, `input.${index}.call_id`);
            messages.push({role: 'tool', content: output.output, toolCallId: output.call_id});
        } else
            messages.push(messageOf(item, index));
    }
    return messages;
}

export function toResponsesRequest(body: ResponsesBody): GenerationRequest {
    if (body.previous_response_id != null)
        throw ApiError.unsupported('previous_response_id', 'Responses are not stored: send the whole conversation as input.');
    const tools = (body.tools ?? []).map((tool, index) => {
        if (tool.type !== 'function')
            throw ApiError.unsupported(`tools.${index}.type`, `Tools of type '${tool.type}' are not supported; only functions are.`);
        const parsed = parseBody(functionTool, tool);
        return {type: 'function' as const, function: {name: parsed.name, description: parsed.description, parameters: parsed.parameters}};
    });
    const choice = body.tool_choice;
    const calling = toToolCalling(tools, typeof choice === 'object' && choice !== null ? {type: 'function', function: {name: choice.name}} : choice,
        body.parallel_tool_calls);
    const messages: ChatMessage[] = [
        ...(body.instructions ? [{role: 'system' as const, content: body.instructions}] : []),
        ...messagesOf(body.input)
    ];
    const format = body.text?.format;
    const responseFormat: ResponseFormat = format === undefined || format.type === 'text' ? {type: 'text'}
        : format.type === 'json_object' ? {type: 'json_object'}
            : {type: 'json_schema', schema: format.schema, ...(format.name && {name: format.name})};
    return {
        kind: 'chat',
        model: body.model,
        messages,
        sampling: {
            // OpenAI's default temperature is 1.
            temperature: body.temperature ?? 1,
            ...(body.top_p != null && {topP: body.top_p}),
            stop: [],
            ...(body.max_output_tokens != null && {maxTokens: body.max_output_tokens}),
            responseFormat
        },
        ...(calling !== undefined && {tools: calling})
    };
}

/** A call as an output item: `call_id` is what the client answers it by. */
function functionCallOutput(call: ToolCall, status: 'in_progress' | 'completed') {
    return {type: 'function_call', id: `fc_${toolCallId().slice('call_'.length)}`, call_id: toolCallId(), name: call.name,
        arguments: status === 'completed' ? call.arguments : '', status};
}

export function responsesHandler(inference: InferenceService): RequestHandler {
    return async (req: Request, res: Response<unknown, ResponseLocals>) => {
        const body = parseBody(responsesSchema, req.body);
        const request = toResponsesRequest(body);
        const {signal, ...routing} = startGeneration(inference, req, res, request, body.stream ?? false);
        const id = `resp_${res.locals.requestId}`;
        const messageId = `msg_${res.locals.requestId}`;
        const createdAt = Math.floor(Date.now() / 1000);
        const message = (text: string, status: 'in_progress' | 'completed' | 'incomplete') =>
            ({type: 'message', id: messageId, status, role: 'assistant', content: text === '' && status === 'in_progress' ? [] : [{type: 'output_text', text, annotations: []}]});
        const responseObject = (status: 'in_progress' | 'completed' | 'incomplete', result?: GenerationResult) => ({
            id, object: 'response', created_at: createdAt, status, model: request.model,
            output: result === undefined ? [] : [
                // A reply that is only calls has no message, as OpenAI writes it.
                ...(result.toolCalls?.length && result.text.trim() === '' ? [] : [message(result.text, status)]),
                ...(result.toolCalls ?? []).map((call) => functionCallOutput(call, 'completed'))
            ],
            error: null,
            incomplete_details: status === 'incomplete' ? {reason: 'max_output_tokens'} : null,
            instructions: body.instructions ?? null, max_output_tokens: body.max_output_tokens ?? null,
            temperature: request.sampling.temperature, top_p: body.top_p ?? null,
            text: {format: body.text?.format ?? {type: 'text'}},
            tools: body.tools ?? [], tool_choice: body.tool_choice ?? 'auto', parallel_tool_calls: body.parallel_tool_calls ?? true,
            previous_response_id: null, store: false,
            metadata: body.metadata ?? {},
            usage: result === undefined ? null : {
                input_tokens: result.usage.promptTokens, input_tokens_details: {cached_tokens: 0},
                output_tokens: result.usage.completionTokens, output_tokens_details: {reasoning_tokens: 0},
                total_tokens: result.usage.promptTokens + result.usage.completionTokens
            }
        });
        const statusOf = (result: GenerationResult) => result.finishReason === 'length' ? 'incomplete' : 'completed';

        if (!body.stream) {
            const result = await inference.generate(request, {signal, ...routing});
            res.locals.result = result;
            res.json(responseObject(statusOf(result), result));
            return;
        }

        // The typed events of a streamed response, each numbered, as the Responses API sends them: the message's
        // text as it comes, each call as an item of its own once whole.
        const sse = new SseWriter(res);
        let sequence = 0;
        const send = (type: string, fields: object) => sse.send({type, sequence_number: sequence++, ...fields});
        let outputs = 0;
        let text: string | undefined;
        const part = () => ({item_id: messageId, output_index: outputs - 1, content_index: 0});
        // The opening events go out with the first output, so a request refused before it (a full queue) gets its
        // real status, as on the other routes.
        const open = () => {
            if (sse.isOpen)
                return;
            send('response.created', {response: responseObject('in_progress')});
            send('response.in_progress', {response: responseObject('in_progress')});
        };
        const openMessage = () => {
            open();
            if (text !== undefined)
                return;
            text = '';
            outputs++;
            send('response.output_item.added', {output_index: outputs - 1, item: message('', 'in_progress')});
            send('response.content_part.added', {...part(), part: {type: 'output_text', text: '', annotations: []}});
        };
        const closeMessage = (status: 'completed' | 'incomplete') => {
            if (text === undefined)
                return;
            send('response.output_text.done', {...part(), text});
            send('response.content_part.done', {...part(), part: {type: 'output_text', text, annotations: []}});
            send('response.output_item.done', {output_index: outputs - 1, item: message(text, status)});
        };
        const sendCall = (call: ToolCall) => {
            open();
            // Text before a call is its own item, finished before the call's.
            closeMessage('completed');
            const item = functionCallOutput(call, 'in_progress');
            const outputIndex = outputs++;
            send('response.output_item.added', {output_index: outputIndex, item});
            send('response.function_call_arguments.delta', {item_id: item.id, output_index: outputIndex, delta: call.arguments});
            send('response.function_call_arguments.done', {item_id: item.id, output_index: outputIndex, arguments: call.arguments});
            send('response.output_item.done', {output_index: outputIndex, item: {...item, arguments: call.arguments, status: 'completed'}});
        };
        let blank = '';
        const sendText = (delta: string) => {
            openMessage();
            const held = text === '' ? blank : '';
            text += held + delta;
            if (held + delta !== '')
                send('response.output_text.delta', {...part(), delta: held + delta});
        };
        try {
            const result = await inference.generate(request, {
                signal, ...routing,
                onText: countingSentTokens(res, (delta, {toolCall}) => {
                    if (toolCall !== undefined)
                        return sendCall(toolCall);
                    // Whitespace alone is held: before a call it is no message, as in the reply that is not streamed.
                    if (text === undefined && (blank + delta).trim() === '') {
                        blank += delta;
                        return;
                    }
                    sendText(delta);
                })
            });
            res.locals.result = result;
            open();
            const status = statusOf(result);
            if (outputs === 0)
                sendText('');
            closeMessage(status);
            send(status === 'completed' ? 'response.completed' : 'response.incomplete', {response: responseObject(status, result)});
            sse.done();
        } catch (error) {
            if (signal.aborted)
                return;
            const apiError = streamFailure(res, error, sse.isOpen);
            send('error', {code: apiError.code, message: apiError.message, param: apiError.param});
            sse.done();
        }
    };
}
