import {clearInterval, setInterval} from 'node:timers';
import type {Request, RequestHandler, Response} from 'express';
import type {GenerationResult, ToolCall} from '../../core/inference-types.js';
import type {InferenceService} from '../../inference/inference-service.js';
import {countTokensSchema, messagesSchema, toMessagesRequest} from '../anthropic-schemas.js';
import {parseBody} from '../request-schemas.js';
import {NamedSseWriter} from '../stream-writers.js';
import {countingSentTokens, startGeneration, streamFailure, toolCallId, type ResponseLocals} from './route-helpers.js';

/**
 * Anthropic's Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`; README, "Endpoints"): the same
 * generation as OpenAI's chat, answered in Anthropic's shapes, streamed as its named events.
 */

/** The paths whose errors are Anthropic's `{type: "error", error}`. */
export const ANTHROPIC_PATHS = new Set(['/v1/messages', '/v1/messages/count_tokens']);

/** Until the first token, a `ping` this often keeps clients and proxies from timing a long prompt out. */
const PING_INTERVAL_MS = 5000;

type StopReason = 'end_turn' | 'max_tokens' | 'stop_sequence' | 'tool_use';

function stopReasonOf(result: GenerationResult, stopSequences: string[]): {stop_reason: StopReason, stop_sequence: string | null} {
    if (result.finishReason === 'length')
        return {stop_reason: 'max_tokens', stop_sequence: null};
    if (result.finishReason === 'tool_calls')
        return {stop_reason: 'tool_use', stop_sequence: null};
    const {stopSequence} = result;
    return stopSequence !== undefined && stopSequences.includes(stopSequence)
        ? {stop_reason: 'stop_sequence', stop_sequence: stopSequence}
        : {stop_reason: 'end_turn', stop_sequence: null};
}

/** An id for a tool call, as Anthropic writes them: the client answers the call by it. */
function toolUseId() {
    return `toolu_${toolCallId().slice('call_'.length)}`;
}

function toolUseBlock(call: ToolCall) {
    return {type: 'tool_use', id: toolUseId(), name: call.name, input: JSON.parse(call.arguments) as unknown};
}

/** The reply's blocks: its text, unless it is only whitespace before calls, then each call. */
function contentOf(result: GenerationResult) {
    const calls = result.toolCalls ?? [];
    return [
        ...(calls.length > 0 && result.text.trim() === '' ? [] : [{type: 'text', text: result.text}]),
        ...calls.map(toolUseBlock)
    ];
}

export function messagesHandler(inference: InferenceService): RequestHandler {
    return async (req: Request, res: Response<unknown, ResponseLocals>) => {
        const body = parseBody(messagesSchema, req.body);
        const request = toMessagesRequest(body);
        const options = startGeneration(inference, req, res, request, body.stream ?? false);
        const {signal} = options;
        const stopSequences = request.sampling.stop;
        const message = (content: object[], result?: GenerationResult) => ({
            id: `msg_${res.locals.requestId}`, type: 'message', role: 'assistant', model: request.model, content,
            ...(result === undefined ? {stop_reason: null, stop_sequence: null} : stopReasonOf(result, stopSequences)),
            usage: {input_tokens: result?.usage.promptTokens ?? 0, output_tokens: result?.usage.completionTokens ?? 0}
        });

        if (!body.stream) {
            const result = await inference.generate(request, options);
            res.locals.result = result;
            res.json(message(contentOf(result), result));
            return;
        }

        // message_start goes out with the first output, or the first ping, so a request refused before it (a full
        // queue) gets its real status, as on the other routes.
        const sse = new NamedSseWriter(res);
        const open = () => {
            if (!sse.isOpen)
                sse.send('message_start', {message: message([])});
        };
        const ping = setInterval(() => {
            open();
            sse.send('ping', {});
        }, PING_INTERVAL_MS);
        let blocks = 0;
        let textOpen = false;
        let blank = '';
        const closeText = () => {
            if (!textOpen)
                return;
            sse.send('content_block_stop', {index: blocks - 1});
            textOpen = false;
        };
        const sendText = (delta: string) => {
            open();
            if (!textOpen) {
                sse.send('content_block_start', {index: blocks++, content_block: {type: 'text', text: ''}});
                textOpen = true;
            }
            if (delta !== '')
                sse.send('content_block_delta', {index: blocks - 1, delta: {type: 'text_delta', text: delta}});
        };
        const sendCall = (call: ToolCall) => {
            open();
            closeText();
            const index = blocks++;
            // The input goes as its JSON text: the client parses it at content_block_stop.
            sse.send('content_block_start', {index, content_block: {type: 'tool_use', id: toolUseId(), name: call.name, input: {}}});
            sse.send('content_block_delta', {index, delta: {type: 'input_json_delta', partial_json: call.arguments}});
            sse.send('content_block_stop', {index});
        };
        try {
            const result = await inference.generate(request, {
                ...options,
                onText: countingSentTokens(res, (delta, {toolCall}) => {
                    clearInterval(ping);
                    if (toolCall !== undefined)
                        return sendCall(toolCall);
                    // Whitespace alone is held: before a call it is no block, as in the reply that is not streamed.
                    if (!textOpen && (blank + delta).trim() === '') {
                        blank += delta;
                        return;
                    }
                    sendText(textOpen ? delta : blank + delta);
                    blank = '';
                })
            });
            clearInterval(ping);
            res.locals.result = result;
            open();
            if (blocks === 0)
                sendText(blank);
            closeText();
            // The prompt's count is known only now: message_start said 0, and clients take the totals given here.
            sse.send('message_delta', {delta: stopReasonOf(result, stopSequences),
                usage: {input_tokens: result.usage.promptTokens, output_tokens: result.usage.completionTokens}});
            sse.send('message_stop', {});
            sse.done();
        } catch (error) {
            clearInterval(ping);
            if (signal.aborted)
                return;
            sse.send('error', {error: streamFailure(res, error, sse.isOpen).toAnthropic().body.error});
            sse.done();
        }
    };
}

/**
 * The prompt's tokens as the engine that would serve the request counts them (its model's template and tokenizer):
 * the request runs with `countOnly`, which decodes nothing, so a prompt too long for the context is still counted.
 */
export function countTokensHandler(inference: InferenceService): RequestHandler {
    return async (req: Request, res: Response<unknown, ResponseLocals>) => {
        const request = toMessagesRequest(parseBody(countTokensSchema, req.body));
        const options = startGeneration(inference, req, res, request, false);
        const result = await inference.generate({...request, countOnly: true}, options);
        res.locals.result = result;
        res.json({input_tokens: result.usage.promptTokens});
    };
}
