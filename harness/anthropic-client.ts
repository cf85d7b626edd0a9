import Anthropic from '@anthropic-ai/sdk';
import type {MessageStream} from '@anthropic-ai/sdk/lib/MessageStream';

/** The official @anthropic-ai/sdk pointed at a daemon's Messages API (README, "Endpoints"), and what tests read from it. */

export type AnthropicApiError = InstanceType<typeof Anthropic.APIError>;

/** A client for the daemon at `origin` (the SDK adds `/v1/messages` itself); no retries, so a test sees each answer. */
export function anthropicClient(origin: string, apiKey = 'unused') {
    return new Anthropic({baseURL: origin, apiKey, maxRetries: 0});
}

/**
 * Greedy sampling, so that replies are deterministic: the API takes `temperature`, which @anthropic-ai/sdk 1.10's
 * types no longer list; the client sends the params as they are.
 */
export function greedy<T extends object>(params: T): T {
    return {...params, temperature: 0};
}

export function textOf(message: Anthropic.Message) {
    return message.content.map((block) => block.type === 'text' ? block.text : '').join('');
}

/** Reads a stream to its end: the events' types in order (pings left out), the text its deltas spell, and the final message. */
export async function readMessageStream(stream: MessageStream<unknown>): Promise<{types: string[], text: string, final: Anthropic.Message}> {
    const types: string[] = [];
    let text = '';
    for await (const event of stream) {
        if (event.type !== ('ping' as string))
            types.push(event.type);
        if (event.type === 'content_block_delta' && event.delta.type === 'text_delta')
            text += event.delta.text;
    }
    return {types, text, final: await stream.finalMessage()};
}
