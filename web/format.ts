/**
 * How the page shows numbers: the terminal dashboard's own formatters (pure functions, no Node API) where they
 * exist, so both say the same thing, and the few the page adds.
 */
import {plural} from '../core/display.js';
import {formatDuration} from '../tui/text-format.js';

export {formatBytes, plural, shortPeerId} from '../core/display.js';
export {formatDuration, formatHosting, formatLayers, formatTransfer} from '../tui/text-format.js';

/** 0..1 as a whole percentage; `-` for none yet. */
export function formatPercent(fraction: number | null) {
    return fraction === null ? '-' : `${Math.round(fraction * 100)}%`;
}

/** Milliseconds, one decimal below 10; `-` for none yet. */
export function formatMs(ms: number | null) {
    return ms === null ? '-' : `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
}

/** A time of day from an ISO date or a timestamp, as the browser's locale writes it. */
export function formatTime(at: string | number) {
    return new Date(at).toLocaleTimeString();
}

/** How long ago, from an age in milliseconds (gossip's ages, say), in the dashboard's duration units: `12s ago`. */
export function formatAge(ms: number) {
    return ms < 1_000 ? 'just now' : `${formatDuration(Math.round(ms / 1_000))} ago`;
}

/** Gossip's count of a model's providers: a lower bound once capped, so `≥ 16 providers` (docs/architecture.md, "Network model table"). */
export function formatProviderCount(count: number, capped: boolean) {
    return capped ? `≥ ${count} providers` : plural(count, 'provider');
}
