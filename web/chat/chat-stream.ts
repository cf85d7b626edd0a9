import {apiFetch} from '../api-client.js';

/** A streamed `POST /v1/chat/completions` (README, "Endpoints"): SSE chunks of `delta.content`, then `[DONE]`. */

export interface ChatRequest {
    model: string,
    messages: {role: 'system' | 'user' | 'assistant', content: string}[],
    temperature: number,
    max_tokens: number
}

export interface ChatStreamEnd {
    /** `stop`, `length`, … as the node says; null when the stream ended without one. */
    finishReason: string | null,
    /** The node's llama-server-style timings of the final chunk. */
    tokensPerSecond: number | null
}

interface ChunkBody {
    choices?: {delta?: {content?: string | null}, finish_reason?: string | null}[],
    timings?: {predicted_per_second?: number},
    error?: {message?: string}
}

/**
 * Streams the answer to `request`, calling `onText` with each piece as it arrives. Aborting `signal` (the stop
 * button) closes the connection: the node cancels the generation (its request log says 499).
 */
export async function streamChat(request: ChatRequest, signal: AbortSignal, onText: (text: string) => void): Promise<ChatStreamEnd> {
    const response = await apiFetch('/v1/chat/completions', {
        method: 'POST',
        headers: {'content-type': 'application/json'},
        body: JSON.stringify({...request, stream: true}),
        signal
    });
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    const end: ChatStreamEnd = {finishReason: null, tokensPerSecond: null};
    let buffered = '';
    for (;;) {
        const {done, value} = await reader.read();
        if (done)
            return end;
        buffered += value;
        const events = buffered.split(/\r?\n\r?\n/);
        buffered = events.pop()!;
        for (const event of events) {
            const data = event.split(/\r?\n/).filter((line) => line.startsWith('data:')).map((line) => line.slice(5).trimStart()).join('\n');
            if (data === '' || data === '[DONE]')
                continue;
            const chunk = JSON.parse(data) as ChunkBody;
            // An error after the 200 travels in the stream as an error object.
            if (chunk.error !== undefined)
                throw new Error(chunk.error.message ?? 'the node reported an error');
            const choice = chunk.choices?.[0];
            if (typeof choice?.delta?.content === 'string' && choice.delta.content !== '')
                onText(choice.delta.content);
            if (typeof choice?.finish_reason === 'string')
                end.finishReason = choice.finish_reason;
            if (typeof chunk.timings?.predicted_per_second === 'number')
                end.tokensPerSecond = chunk.timings.predicted_per_second;
        }
    }
}
