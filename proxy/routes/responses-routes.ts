import type {Request, RequestHandler, Response} from 'express';
import {z} from 'zod';
import type {InferenceService} from '../../inference/inference-service.js';
import type {ChatMessage, GenerationRequest, GenerationResult, ResponseFormat} from '../../inference/inference-types.js';
import {ApiError} from '../api-error.js';
import {parseBody} from '../request-schemas.js';
import {SseWriter} from '../stream-writers.js';
import {assertModelServed, assertWithinLimits, cancelOnClientClose, countingSentTokens, routingFor, streamFailure, type ResponseLocals} from './route-helpers.js';

/**
 * OpenAI's Responses API (`POST /v1/responses`), which newer SDKs and agent frameworks call by default: text and
 * JSON output, streamed as its typed events or not (docs/architecture.md, "Responses API"). Stateless: every request
 * carries its whole input.
 */

const inputText = z.object({type: z.enum(['input_text', 'output_text']), text: z.string()});
const inputMessage = z.object({
    type: z.literal('message').optional(),
    role: z.enum(['system', 'developer', 'user', 'assistant']),
    content: z.union([z.string(), z.array(z.object({type: z.string()}).passthrough())])
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
    tools: z.array(z.unknown()).nullish(),
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

export function toResponsesRequest(body: ResponsesBody): GenerationRequest {
    if (body.tools != null && body.tools.length > 0)
        throw ApiError.unsupported('tools', 'Tool calling is not supported yet.');
    if (body.previous_response_id != null)
        throw ApiError.unsupported('previous_response_id', 'Responses are not stored: send the whole conversation as input.');
    const messages: ChatMessage[] = [
        ...(body.instructions ? [{role: 'system' as const, content: body.instructions}] : []),
        ...(typeof body.input === 'string' ? [{role: 'user' as const, content: body.input}] : body.input.map((item, index) => messageOf(item, index)))
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
        }
    };
}

export function responsesHandler(inference: InferenceService): RequestHandler {
    return async (req: Request, res: Response<unknown, ResponseLocals>) => {
        const body = parseBody(responsesSchema, req.body);
        const request = toResponsesRequest(body);
        assertWithinLimits(request);
        res.locals.model = request.model;
        res.locals.stream = body.stream ?? false;
        assertModelServed(inference, request.model);
        const signal = cancelOnClientClose(res);
        const routing = routingFor(req, res);
        const id = `resp_${res.locals.requestId}`;
        const messageId = `msg_${res.locals.requestId}`;
        const createdAt = Math.floor(Date.now() / 1000);
        const message = (text: string, status: 'in_progress' | 'completed' | 'incomplete') =>
            ({type: 'message', id: messageId, status, role: 'assistant', content: text === '' && status === 'in_progress' ? [] : [{type: 'output_text', text, annotations: []}]});
        const responseObject = (status: 'in_progress' | 'completed' | 'incomplete', result?: GenerationResult) => ({
            id, object: 'response', created_at: createdAt, status, model: request.model,
            output: result === undefined ? [] : [message(result.text, status)],
            error: null,
            incomplete_details: status === 'incomplete' ? {reason: 'max_output_tokens'} : null,
            instructions: body.instructions ?? null, max_output_tokens: body.max_output_tokens ?? null,
            temperature: request.sampling.temperature, top_p: body.top_p ?? null,
            text: {format: body.text?.format ?? {type: 'text'}},
            tools: [], tool_choice: 'auto', parallel_tool_calls: true, previous_response_id: null, store: false,
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

        // The typed events of a streamed response, each numbered, as the Responses API sends them.
        const sse = new SseWriter(res);
        let sequence = 0;
        const send = (type: string, fields: object) => sse.send({type, sequence_number: sequence++, ...fields});
        const part = {item_id: messageId, output_index: 0, content_index: 0};
        let text = '';
        // The opening events go out with the first text, so a request refused before it (a full queue) gets its
        // real status, as on the other routes.
        const open = () => {
            if (sse.isOpen)
                return;
            send('response.created', {response: responseObject('in_progress')});
            send('response.in_progress', {response: responseObject('in_progress')});
            send('response.output_item.added', {output_index: 0, item: message('', 'in_progress')});
            send('response.content_part.added', {...part, part: {type: 'output_text', text: '', annotations: []}});
        };
        try {
            const result = await inference.generate(request, {
                signal, ...routing,
                onText: countingSentTokens(res, (delta) => {
                    open();
                    text += delta;
                    send('response.output_text.delta', {...part, delta});
                })
            });
            res.locals.result = result;
            open();
            const status = statusOf(result);
            send('response.output_text.done', {...part, text});
            send('response.content_part.done', {...part, part: {type: 'output_text', text, annotations: []}});
            send('response.output_item.done', {output_index: 0, item: message(text, status)});
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
