import test from 'ava';
import {faultOf, InferenceError, inferenceErrorCodes, refusalCodes} from '../core/inference-error.js';
import {jobMessageSchema} from '../inference/remote/jobs/job-messages.js';
import {toApiError} from '../proxy/api-error.js';

const jobId = 'a'.repeat(32);

for (const code of inferenceErrorCodes) {
    test(`${code}: one fault, one HTTP answer, and it crosses the wire unchanged`, (t) => {
        const error = new InferenceError(code, `failure ${code}`, {param: 'model'});
        const fault = faultOf(code);
        t.is(error.fault, fault);
        const wire = jobMessageSchema.parse(JSON.parse(JSON.stringify({type: 'failed', jobId, error})));
        t.deepEqual(wire, {type: 'failed', jobId, error: {code, message: `failure ${code}`, param: 'model'}});
        t.deepEqual(InferenceError.from(wire.type === 'failed' ? wire.error : t.fail() as never), error);
        if (code === 'cancelled')
            return;
        const http = toApiError(error);
        t.is(http.code, code);
        t.is(http.param, 'model');
        t.is(http.message, `failure ${code}`);
        // The client's mistakes are 4xx; everything else is the server side's (a full queue says when to come back).
        if (fault === 'client')
            t.true(http.status >= 400 && http.status < 500 && http.type === 'invalid_request_error', String(http.status));
        else if (code === 'payment_required') // no peer takes this node's payment: its wallet or deposit is the limit, as over_budget's
            t.deepEqual([http.status, http.type], [402, 'invalid_request_error']);
        else if (code === 'queue_full')
            t.deepEqual([http.status, http.type, http.retryAfterSeconds], [429, 'rate_limit_error', undefined]);
        else
            t.true(http.status >= 500 && http.type === 'server_error', String(http.status));
        if (http.status === 503)
            t.is(http.retryAfterSeconds, 1);
        // Anthropic's Messages API: its own type for each, and 529 for an overloaded server.
        const anthropic = http.toAnthropic();
        t.deepEqual(anthropic.body, {type: 'error', error: {type: anthropic.body.error.type, message: `failure ${code}`}});
        const expected = code === 'model_not_found' ? [404, 'not_found_error'] : fault === 'client' || code === 'payment_required' ? [400, 'invalid_request_error']
            : code === 'queue_full' ? [429, 'rate_limit_error'] : http.status === 503 ? [529, 'overloaded_error'] : [500, 'api_error'];
        t.deepEqual([anthropic.status, anthropic.body.error.type], expected);
    });
}

test('refusal codes are exactly the codes whose fault is a refusal', (t) => {
    t.deepEqual(refusalCodes, inferenceErrorCodes.filter((code) => faultOf(code) === 'refusal'));
    t.deepEqual([...refusalCodes].sort(), ['busy', 'disabled', 'limit', 'model_unavailable', 'no_peer_available', 'payment_required', 'queue_full']);
});

test('a code outside the closed set is a protocol violation on the wire', (t) => {
    for (const error of [{code: 'oops', message: 'x', param: null}, {code: 'busy', message: 'x'}, {code: 'busy', message: 'x'.repeat(1001), param: null}])
        t.false(jobMessageSchema.safeParse({type: 'failed', jobId, error}).success, JSON.stringify(error).slice(0, 60));
});

test('the factories give the codes and parameters clients see', (t) => {
    t.like(InferenceError.invalidRequest('bad', 'logit_bias'), {code: 'invalid_request', param: 'logit_bias', fault: 'client'});
    t.like(InferenceError.contextLengthExceeded('long'), {code: 'context_length_exceeded', param: null, fault: 'client'});
    t.like(InferenceError.overBudget('dear'), {code: 'over_budget', param: 'model', fault: 'client'});
    t.like(InferenceError.queueFull('full', 3), {code: 'queue_full', retryAfterSeconds: 3, fault: 'refusal'});
    t.like(InferenceError.refused('busy', 'later'), {code: 'busy', fault: 'refusal'});
    t.like(InferenceError.peerStalled('quiet'), {code: 'peer_stalled', fault: 'server'});
    t.is(toApiError(InferenceError.queueFull('full', 3)).retryAfterSeconds, 3);
    t.like(toApiError(new Error('boom')), {status: 500, code: 'internal_error'});
    t.like(toApiError(new Error('boom')).toAnthropic(), {status: 500, body: {error: {type: 'api_error'}}});
});
