import type {SpeculationCounts, SpeculationSummary} from './inference-types.js';

/** A model's speculation so far with one more request's counts added (a new drafter replaces the old one's name). */
export function addSpeculation(summary: SpeculationSummary | undefined, counts: SpeculationCounts): SpeculationSummary {
    const passes = (summary?.passes ?? 0) + counts.passes;
    const tokens = (summary?.tokens ?? 0) + counts.tokens;
    const drafted = (summary?.drafted ?? 0) + counts.drafted;
    const accepted = (summary?.accepted ?? 0) + counts.accepted;
    return {
        drafter: counts.drafter,
        passes, tokens, drafted, accepted,
        acceptance: drafted === 0 ? null : accepted / drafted,
        tokensPerPass: passes === 0 ? null : tokens / passes
    };
}
