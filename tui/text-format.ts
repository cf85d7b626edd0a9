import {formatBytes} from '../core/display.js';
import type {DeviceInfo, SpeculationSummary} from '../core/inference-types.js';


/** Rows of left-aligned columns separated by two spaces; a row may have fewer cells than the others. */
export function alignColumns(rows: string[][]) {
    const widths: number[] = [];
    for (const row of rows)
        row.forEach((cell, column) => {
            widths[column] = Math.max(widths[column] ?? 0, cell.length);
        });
    return rows.map((row) => row.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd());
}

/** Left-aligned columns separated by two spaces, like `docker ps`. */
export function formatTable(headers: string[], rows: string[][]) {
    return alignColumns([headers, ...rows]).join('\n');
}

/** A layer range, 0-based and inclusive, as `first-last`. */
export function formatLayers(layers: [number, number] | null) {
    return layers === null ? 'none' : `${layers[0]}-${layers[1]}`;
}

/** Weights sent to a stage while it loads, the share first (it survives truncation); the tunnel carries more than weights. */
export function formatTransfer(sentBytes: number, transferBytes: number) {
    const fraction = transferBytes === 0 ? 1 : Math.min(1, sentBytes / transferBytes);
    return `${Math.round(fraction * 100)}% (${formatBytes(Math.min(sentBytes, transferBytes))} / ${formatBytes(transferBytes)})`;
}

/** Where a stage's weights come from (`/api/cluster`'s `weights`), with a download's progress: `source 45% (…)`. */
export interface StageWeightsView {
    from: 'held' | 'source' | 'coordinator',
    fetch: {state: 'fetching' | 'done' | 'failed', doneBytes: number, totalBytes: number, stored: number, failed: number, reason: string | null} | null
}

/**
 * A remote stage's weights in a few words: held, downloading from the model's source (its progress), or sent by this
 * node (the share sent so far).
 */
export function formatWeights(weights: StageWeightsView | undefined, sentBytes: number, transferBytes: number) {
    if (weights?.from === 'held' || (weights === undefined && transferBytes === 0))
        return 'held';
    const fetch = weights?.fetch ?? null;
    if (weights?.from === 'source' && fetch !== null)
        return fetch.state === 'fetching' ? `source ${formatTransfer(fetch.doneBytes, fetch.totalBytes)}`
            : `source ${fetch.stored} tensors${fetch.failed > 0 ? `, ${fetch.failed} sent` : ''}`;
    return `sent ${formatTransfer(sentBytes, transferBytes)}`;
}

/** Layers this node hosts for peers, in a few words. */
export function formatHosting(hosting: {available: boolean, reason: string | null, sessions: number, freeBytes: number}) {
    const sessions = `${hosting.sessions} session${hosting.sessions === 1 ? '' : 's'}`;
    if (hosting.available)
        return `${sessions}, ${formatBytes(hosting.freeBytes)} offered`;
    return `not offered${hosting.reason === null ? '' : ` (${hosting.reason})`}${hosting.sessions > 0 ? `, ${sessions}` : ''}`;
}

export function formatDuration(seconds: number) {
    const days = Math.floor(seconds / 86_400);
    const hours = Math.floor((seconds % 86_400) / 3_600);
    const minutes = Math.floor((seconds % 3_600) / 60);
    if (days > 0)
        return `${days}d ${hours}h`;
    if (hours > 0)
        return `${hours}h ${minutes}m`;
    return minutes > 0 ? `${minutes}m ${seconds % 60}s` : `${seconds}s`;
}

/** `consistent at 203.0.113.7:40123`: the NAT type and the public address the DHT saw, when it saw one. */
export function formatNatAddress(nat: {type: string, host: string | null, port: number | null}) {
    return nat.host === null ? nat.type : `${nat.type} at ${nat.host}${nat.port === null ? '' : `:${nat.port}`}`;
}

/** `random, unreachable` / `open, reachable, relaying 2 pairs`: how peers can reach this node. */
export function formatNat(nat: {type: string, reachable: boolean}, relayPairs: number | null) {
    const relaying = relayPairs === null ? '' : `, relaying ${relayPairs} pair${relayPairs === 1 ? '' : 's'}`;
    return `${nat.type}, ${nat.reachable ? 'reachable' : 'unreachable'}${relaying}`;
}

/**
 * `spec lookup 62% · 2.4 tok/pass`: what drafts a model's tokens, the share of drafted tokens the model kept, and the
 * tokens one pass yields (one round trip per remote stage in a pipeline).
 */
export function formatSpeculation({drafter, acceptance, tokensPerPass}: Pick<SpeculationSummary, 'drafter' | 'acceptance' | 'tokensPerPass'>) {
    return `spec ${drafter} ${acceptance === null ? 'none drafted' : `${Math.round(acceptance * 100)}%`} · ${tokensPerPass === null ? '-' : tokensPerPass.toFixed(1)} tok/pass`;
}

/** Which llama.cpp binaries the engine runs (`strongdoge engine build`). */
export function formatEngineBuild(build: DeviceInfo['build']) {
    return build === 'local' ? 'built for this machine' : 'node-llama-cpp\'s prebuilt binaries';
}

/**
 * DOGE (a decimal string, exact) in a few characters for the dashboard: two decimals from 1 up, three significant
 * digits below (a job's cost is often a millionth), never an exponent. The CLI prints amounts exactly.
 */
export function formatDogeShort(doge: string) {
    const value = Number(doge);
    if (value === 0)
        return '0';
    return value >= 1
        ? value.toLocaleString('en-US', {useGrouping: false, maximumFractionDigits: 2})
        : value.toLocaleString('en-US', {useGrouping: false, maximumSignificantDigits: 3});
}
