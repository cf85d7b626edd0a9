/**
 * How many tokens to draft for the next pass of the target model (docs/architecture.md, "Speculative decoding").
 * A pass verifying k drafted tokens yields 1 + (the drafts kept) tokens and costs a + b·k (a: the pass itself, with
 * its network round trips; b: each drafted token's drafting and verification). With each draft kept with
 * probability p (while the ones before it were), a pass yields (1 − p^(k+1)) / (1 − p) tokens on average; the k
 * drafted maximises tokens per millisecond, and is 0 (no speculation) where drafting does not pay.
 */

export interface DraftLengthOptions {
    /** Most tokens drafted for one pass. Defaults to 12. */
    maxTokens?: number,
    /** Fewest tokens drafted for one pass (within the limit), even where drafting does not pay. Defaults to 0. */
    minTokens?: number,
    /**
     * While speculation does not pay, every this many passes drafts `probeTokens` to measure again; doubled after each
     * probe after which it still does not pay, up to 8 times this. Defaults to 16.
     */
    probeInterval?: number,
    /** Tokens a probe drafts. Defaults to 2. */
    probeTokens?: number,
    /** Acceptance assumed before anything was measured, and its weight in drafted tokens. Defaults to one half, weighing 4. */
    prior?: {acceptance: number, weight: number}
}

export const draftLengthDefaults = {maxTokens: 12, minTokens: 0, probeInterval: 16, probeTokens: 2, prior: {acceptance: 0.5, weight: 4}};

/** Older measurements fade by this factor per new one, so the estimates follow a pipeline or a text that changes. */
const DECAY = 0.9;
/** The least a pass is taken to cost. */
const MIN_PASS_MS = 1e-3;
/** Verifying a drafted token, assumed as this share of a pass until passes of different lengths were measured. */
const PRIOR_VERIFY_SHARE = 0.25;

/**
 * What one pass costs against how many tokens it verified: a least-squares line over recent passes, shared by a
 * model's requests (a pass costs what the engine and its pipeline cost, whoever drafted).
 */
export class PassCosts {
    private weight = 0;
    private sumK = 0;
    private sumKK = 0;
    private sumMs = 0;
    private sumKMs = 0;
    /** Milliseconds drafting one token took, recently; undefined before the first draft. */
    private draftMs: number | undefined;
    /**
     * Passes between probes while drafting does not pay, for the model's requests alike: a new request does not start
     * probing often again (each probe of a draft model costs its catching up). Undefined: DraftLength's own start.
     */
    probeEvery: number | undefined;
    /** Drafts kept and trials in the model's recent requests, as DraftLength counts them; the next request's prior. */
    private keptRecently = 0;
    private trialsRecently = 0;

    /** A pass that verified `drafted` tokens took `ms` (from the decode's start to its first token). */
    recordPass(drafted: number, ms: number) {
        if (!Number.isFinite(ms) || ms < 0)
            return;
        this.weight = this.weight * DECAY + 1;
        this.sumK = this.sumK * DECAY + drafted;
        this.sumKK = this.sumKK * DECAY + drafted * drafted;
        this.sumMs = this.sumMs * DECAY + ms;
        this.sumKMs = this.sumKMs * DECAY + drafted * ms;
    }

    /** Drafting `tokens` took `ms`. */
    recordDraft(tokens: number, ms: number) {
        if (tokens <= 0 || !Number.isFinite(ms) || ms < 0)
            return;
        const perToken = ms / tokens;
        this.draftMs = this.draftMs === undefined ? perToken : this.draftMs * DECAY + perToken * (1 - DECAY);
    }

    get measured() {
        return this.weight > 0;
    }

    /** A request's pass kept `kept` of its drafts in `trials` (DraftLength's geometric count). */
    recordAcceptance(kept: number, trials: number) {
        this.keptRecently = this.keptRecently * DECAY + kept;
        this.trialsRecently = this.trialsRecently * DECAY + trials;
    }

    /** The model's recent acceptance, where drafts were tried: what a new request expects at first. */
    get acceptance(): number | undefined {
        return this.trialsRecently === 0 ? undefined : this.keptRecently / this.trialsRecently;
    }

    /** The line's intercept and slope: a pass's cost without drafts, and each verified token's. */
    line(): {passMs: number, verifyMs: number} {
        if (this.weight === 0)
            return {passMs: 1, verifyMs: PRIOR_VERIFY_SHARE};
        const spread = this.weight * this.sumKK - this.sumK * this.sumK;
        const meanK = this.sumK / this.weight;
        const meanMs = this.sumMs / this.weight;
        // Passes of one length only tell the mean: assume the prior share for each verified token.
        const fitted = spread > 1e-6 * this.weight * this.weight ? (this.weight * this.sumKMs - this.sumK * this.sumMs) / spread : undefined;
        let verifyMs = fitted === undefined ? PRIOR_VERIFY_SHARE * meanMs / (1 + PRIOR_VERIFY_SHARE * meanK) : Math.max(0, fitted);
        let passMs = meanMs - verifyMs * meanK;
        if (passMs <= 0) {
            // Noise made the line steeper than the data: keep the mean, spread over an intercept that is positive.
            passMs = meanMs / (1 + PRIOR_VERIFY_SHARE * meanK);
            verifyMs = PRIOR_VERIFY_SHARE * passMs;
        }
        return {passMs, verifyMs};
    }

    /** Milliseconds a pass that drafts and verifies `k` tokens costs, drafting included. */
    estimate(k: number) {
        const {passMs, verifyMs} = this.line();
        // Never 0: a pass timed at 0 ms (a coarse clock) would make every rate infinite.
        return Math.max(MIN_PASS_MS, passMs + k * (verifyMs + (this.draftMs ?? 0)));
    }
}

/** Tokens a pass yields on average when each of k drafts is kept with probability p while the ones before were. */
export function expectedTokens(p: number, k: number) {
    return p >= 1 ? k + 1 : (1 - p ** (k + 1)) / (1 - p);
}

/** One request's draft length: its own acceptance, the model's pass costs. */
export class DraftLength {
    private readonly options: typeof draftLengthDefaults;
    /** Drafts kept, and trials (a kept draft, or the first one refused): the geometric model's estimate. */
    private kept: number;
    private trials: number;
    private passes = 0;
    private lastBest = 0;
    /** Passes since the last probe, and how many to wait between probes now. */
    private sinceProbe = 0;
    private probing = false;

    constructor(private readonly costs: PassCosts, options: DraftLengthOptions = {}) {
        this.options = {...draftLengthDefaults, ...options};
        const {prior} = this.options;
        this.kept = prior.acceptance * prior.weight;
        this.trials = prior.weight;
    }

    private get probeEvery() {
        return this.costs.probeEvery ?? this.options.probeInterval;
    }

    private set probeEvery(passes: number) {
        this.costs.probeEvery = passes;
    }

    /** Estimated probability that a drafted token is kept. */
    get acceptance() {
        return this.trials === 0 ? 0 : this.kept / this.trials;
    }

    /** Tokens to draft for the next pass, at most `limit` (the reply's budget left). */
    next(limit = Infinity): number {
        const max = Math.max(0, Math.min(this.options.maxTokens, Math.floor(limit)));
        return Math.max(Math.min(max, this.options.minTokens), this.choose(max));
    }

    private choose(max: number): number {
        const best = this.best(max);
        this.lastBest = best;
        this.passes++;
        this.probing = false;
        if (best === 0) {
            if (++this.sinceProbe < this.probeEvery || max === 0)
                return 0;
            this.sinceProbe = 0;
            this.probing = true;
            return Math.min(max, this.options.probeTokens);
        }
        this.sinceProbe = 0;
        this.probeEvery = this.options.probeInterval;
        // Now and then longer or shorter (by a quarter), so that the cost line sees passes of different lengths: a line
        // fitted over lengths close together can come out steep with noisy timings.
        if (this.passes % 8 === 0) {
            const step = Math.max(1, Math.ceil(best / 4));
            return Math.max(1, Math.min(max, best + (this.passes % 16 === 0 ? -step : step)));
        }
        return best;
    }

    /** The length `next` would pick without exploring. */
    get preferred() {
        return this.lastBest;
    }

    /** A pass verified `drafted` tokens and kept `accepted` of them, taking `ms`. */
    record(drafted: number, accepted: number, ms: number) {
        this.costs.recordPass(drafted, ms);
        if (drafted <= 0)
            return;
        const kept = Math.min(accepted, drafted);
        const trials = kept + (kept < drafted ? 1 : 0);
        this.costs.recordAcceptance(kept, trials);
        this.kept = this.kept * DECAY + kept;
        this.trials = this.trials * DECAY + trials;
        // Probes back off while drafting still does not pay, kept drafts or not: a draft model costs its catching up
        // on the text since its last draft, and a probe that changed nothing is not worth that often.
        if (this.probing)
            this.probeEvery = this.best(this.options.maxTokens) === 0 ? Math.min(this.probeEvery * 2, this.options.probeInterval * 8) : this.options.probeInterval;
    }

    private best(max: number) {
        const p = this.acceptance;
        let best = 0;
        let bestRate = 1 / this.costs.estimate(0);
        for (let k = 1; k <= max; k++) {
            const rate = expectedTokens(p, k) / this.costs.estimate(k);
            if (rate > bestRate) {
                best = k;
                bestRate = rate;
            }
        }
        return best;
    }
}
