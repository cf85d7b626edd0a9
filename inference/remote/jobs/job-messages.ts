import {z} from 'zod';
import {receiptSchema} from '../../../ledger/receipt.js';
import {inferenceErrorCodes} from '../../../core/inference-error.js';
import {MAX_TOP_LOGPROBS} from '../../../core/request-limits.js';
import {defineChannel} from '../../../swarm/channel/channel-spec.js';
import {jobPaymentSchema, wireVoucherSchema} from './job-payments.js';

/** The jobs channel: requests served by a peer, streamed tokens, results, receipts (docs/peer-protocol.md, "Jobs channel"). */

export const JOBS_PROTOCOL = 'strongdoge/jobs';
/** Prompts travel in these frames: bounded like the HTTP API's bodies. */
export const MAX_JOB_FRAME_BYTES = 4 * 1024 * 1024;

const jobId = z.string().regex(/^[0-9a-f]{32}$/);
const shortText = z.string().max(128);
const tokenId = z.number().int().nonnegative().max(2 ** 31);
const tokenList = z.array(tokenId).max(1_000_000);
/** Text streamed in one frame: a few tokens' worth (the provider sends each batch of tokens as it is released). */
export const MAX_TEXT_FRAME_TOKENS = 4096;
export const MAX_TEXT_FRAME_CHARS = 64 * 1024;

const tokenText = z.string().max(256);
const tokenBytes = z.array(z.number().int().min(0).max(255)).max(256);
const alternative = z.object({token: tokenText, bytes: tokenBytes, logprob: z.number().max(0)});
const tokenLogprob = alternative.extend({top: z.array(alternative).max(MAX_TOP_LOGPROBS)});

const samplingSchema = z.object({
    temperature: z.number().min(0).max(2),
    topP: z.number().min(0).max(1).optional(),
    topK: z.number().int().min(0).optional(),
    minP: z.number().min(0).max(1).optional(),
    seed: z.number().int().optional(),
    stop: z.array(z.string().min(1).max(512)).max(16),
    maxTokens: z.number().int().min(1).optional(),
    presencePenalty: z.number().min(-2).max(2).optional(),
    frequencyPenalty: z.number().min(-2).max(2).optional(),
    logitBias: z.record(z.string().regex(/^\d+$/), z.number().min(-100).max(100)).optional(),
    logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).optional(),
    responseFormat: z.discriminatedUnion('type', [
        z.object({type: z.literal('text')}),
        z.object({type: z.literal('json_object')}),
        z.object({type: z.literal('json_schema'), schema: z.record(z.string(), z.unknown()), name: z.string().optional()})
    ])
});

const continuationSchema = z.object({tokens: tokenList}).optional();
const countOnly = z.literal(true).optional();

const functionName = z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/);
/** A call's arguments: JSON text, bounded like a prompt's part. */
const toolCallSchema = z.object({name: functionName, arguments: z.string().max(MAX_TEXT_FRAME_CHARS)});
const toolsSchema = z.object({
    tools: z.array(z.object({
        name: functionName, description: z.string().max(4096).optional(), parameters: z.record(z.string(), z.unknown()).optional()
    })).min(1).max(128),
    choice: z.union([z.enum(['auto', 'none', 'required']), z.object({name: functionName})]),
    parallel: z.boolean()
}).optional();
const chatMessageSchema = z.object({
    role: z.enum(['system', 'user', 'assistant', 'tool']),
    content: z.string(),
    toolCalls: z.array(toolCallSchema.extend({id: shortText})).max(128).optional(),
    toolCallId: shortText.optional()
});

export const generationRequestSchema = z.discriminatedUnion('kind', [
    z.object({
        kind: z.literal('chat'), model: shortText, sampling: samplingSchema, continuation: continuationSchema, countOnly,
        messages: z.array(chatMessageSchema).min(1).max(10_000), tools: toolsSchema
    }),
    z.object({kind: z.literal('completion'), model: shortText, sampling: samplingSchema, continuation: continuationSchema, countOnly, prompt: z.string()})
]);

const resultSchema = z.object({
    text: z.string(),
    toolCalls: z.array(toolCallSchema).max(128).optional(),
    logprobs: z.array(tokenLogprob).max(1_000_000).optional(),
    finishReason: z.enum(['stop', 'length', 'tool_calls']),
    /** Which of the request's stop strings ended it (the requester checks it is one). */
    stopSequence: z.string().min(1).max(512).optional(),
    usage: z.object({promptTokens: z.number().int().nonnegative(), completionTokens: z.number().int().nonnegative()}),
    timings: z.object({
        promptMs: z.number().nonnegative(), generationMs: z.number().nonnegative(),
        promptTokensPerSecond: z.number().nonnegative(), generationTokensPerSecond: z.number().nonnegative()
    })
});

export const jobMessageSchema = z.discriminatedUnion('type', [
    // requester → provider
    // A job for a priced peer carries its payment terms; the receipt of one it was served, the next voucher.
    z.object({type: z.literal('generate'), jobId, request: generationRequestSchema, payment: jobPaymentSchema.optional()}),
    z.object({type: z.literal('embed'), jobId, model: shortText, inputs: z.array(z.string()).min(1).max(2048), payment: jobPaymentSchema.optional()}),
    z.object({type: z.literal('cancel'), jobId}),
    z.object({type: z.literal('receipt'), jobId, receipt: receiptSchema, voucher: wireVoucherSchema.optional()}),
    // provider → requester
    // A tool call travels whole, with the tokens that wrote it (docs/peer-protocol.md, "Jobs channel").
    z.object({
        type: z.literal('text'), jobId, text: z.string().max(MAX_TEXT_FRAME_CHARS), tokens: z.array(tokenId).min(1).max(MAX_TEXT_FRAME_TOKENS),
        toolCall: toolCallSchema.optional(),
        logprobs: z.array(tokenLogprob).max(MAX_TEXT_FRAME_TOKENS).optional()
    }),
    // A tool call being written, sent whole at its end: the job is alive (`tokens` of the call so far).
    z.object({type: z.literal('progress'), jobId, tokens: z.number().int().min(1).max(MAX_TEXT_FRAME_TOKENS)}),
    z.object({type: z.literal('generated'), jobId, result: resultSchema}),
    z.object({type: z.literal('embedded'), jobId, result: z.object({vectors: z.array(z.array(z.number())).max(2048), promptTokens: z.number().int().nonnegative()})}),
    // A refusal before any work, or a failure during it: the code says whose fault it is.
    z.object({type: z.literal('failed'), jobId, error: z.object({
        code: z.enum(inferenceErrorCodes), message: z.string().max(1000), param: z.string().max(128).nullable()
    })}),
    z.object({type: z.literal('countersigned'), jobId, signature: z.string().regex(/^[0-9a-f]{128}$/)})
]);

export type JobMessage = z.infer<typeof jobMessageSchema>;

/**
 * The channel (docs/peer-protocol.md, "Jobs channel", flow control). Every frame counts as a frame and by its
 * bytes; a fast GPU streaming several jobs sends a frame per token of each. Submissions are new jobs and receipts.
 */
export const JOBS_CHANNEL = defineChannel({
    protocol: JOBS_PROTOCOL,
    rates: {
        frames: {perSecond: 20_000, burst: 40_000},
        bytes: {perSecond: 8 * 1024 * 1024, burst: 16 * 1024 * 1024, unit: 'byte'},
        submissions: {perSecond: 20, burst: 100, types: ['generate', 'embed', 'receipt'] satisfies JobMessage['type'][]}
    },
    messages: {
        job: {what: 'job message', maxBytes: MAX_JOB_FRAME_BYTES, rates: ['frames', 'bytes', 'submissions'], schema: jobMessageSchema}
    }
});
