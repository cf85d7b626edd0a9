import crypto from 'hypercore-crypto';
import {z} from 'zod';
import {domainProblem, futureTimeProblem, MAX_CLOCK_SKEW_MS, recordTime, type SigningDomain, signingDomainFields} from '../../../ledger/signing-domain.js';
import {jobPaymentSchema} from '../../remote/jobs/job-payments.js';

/**
 * The coordinator's signed session request, the `open` frame's `request` (docs/peer-protocol.md, "Shard channel"): what
 * a host hosts (model, layers, memory), for whom, under which id, on which network. Every receipt of the session
 * must name the same; the host checks it before it starts anything.
 */

const hex32 = z.string().regex(/^[0-9a-f]{64}$/);

/** Most sequences a coordinator's engine decodes in one pass: the `--parallel` setting's own bound. */
export const MAX_SESSION_SEQUENCES = 64;

export const sessionRequestBodySchema = z.object({
    version: z.literal(1),
    ...signingDomainFields,
    /** Random, kept for the session's whole life: receipts name it, and the logs' work keys (`shard:<session>:<sequence>`). */
    session: hex32,
    coordinator: hex32,
    host: hex32,
    /** The model the layers come from: its file's size, and its SHA-256 once the coordinator hashed it (so the host can seed its cache). */
    model: z.object({id: z.string().min(1).max(128), bytes: z.number().int().min(0).max(2 ** 50), sha256: hex32.nullable()}).strict(),
    layers: z.tuple([z.number().int().min(0), z.number().int().min(0)]),
    layerCount: z.number().int().min(1).max(65_536),
    /**
     * Sequences the coordinator's engine decodes together (`--parallel`): one pass of the stage yields at most that
     * many tokens, which bounds the tokens a receipt may claim.
     */
    sequences: z.number().int().min(1).max(MAX_SESSION_SEQUENCES),
    /** Weights and cache the stage will hold: checked against what the host offers. */
    bytes: z.number().int().min(0).max(2 ** 50),
    openedAt: recordTime,
    /**
     * For a priced host only: the channel the coordinator pays through and the price (DOGE per million tokens, the
     * host's announced one) each receipt is paid at, for the stage's share of the layers. Absent for a free host.
     */
    payment: jobPaymentSchema.optional()
}).strict();

export const signedSessionRequestSchema = z.object({
    body: sessionRequestBodySchema,
    signature: z.string().regex(/^[0-9a-f]{128}$/)
}).strict();

export type SessionRequestBody = z.infer<typeof sessionRequestBodySchema>;
export type SignedSessionRequest = z.infer<typeof signedSessionRequestSchema>;

const SIGNING_NAMESPACE = 'strongdoge/shard-session/v1\n';

function signingBytes(body: SessionRequestBody) {
    // An absent optional field is left out, so a free session's bytes are what they were before payments.
    const ordered = sessionRequestBodySchema.keyof().options.filter((key) => body[key] !== undefined).map((key) => [key, body[key]]);
    return Buffer.from(SIGNING_NAMESPACE + JSON.stringify(ordered), 'utf8');
}

export function signSessionRequest(body: SessionRequestBody, coordinatorSecretKey: Buffer): SignedSessionRequest {
    return {body, signature: crypto.sign(signingBytes(body), coordinatorSecretKey).toString('hex')};
}

/**
 * Why a host should not host a session request, or undefined when it may: signed by the peer that sent it, for this
 * host, in this host's domain, for layers within the model, opened within the clock skew of now (older is stale).
 */
export function sessionRequestProblem(request: SignedSessionRequest, {peerId, hostId, domain, now = Date.now()}:
    {peerId: string, hostId: string, domain: SigningDomain, now?: number}): string | undefined {
    const {body} = request;
    if (body.coordinator !== peerId)
        return 'it names another coordinator than the peer that sent it';
    if (body.host !== hostId)
        return 'it is for another host';
    const wrongDomain = domainProblem(body, domain);
    if (wrongDomain !== undefined)
        return wrongDomain;
    if (body.layers[0] > body.layers[1] || body.layers[1] >= body.layerCount)
        return `layers ${body.layers[0]}-${body.layers[1]} are not within the model's ${body.layerCount}`;
    const future = futureTimeProblem(body.openedAt, now);
    if (future !== undefined)
        return future;
    if (Date.parse(body.openedAt) < now - MAX_CLOCK_SKEW_MS)
        return `it is dated ${body.openedAt}: stale`;
    if (!crypto.verify(signingBytes(body), Buffer.from(request.signature, 'hex'), Buffer.from(body.coordinator, 'hex')))
        return 'its signature is not the coordinator\'s';
    return undefined;
}
