/** Character graphics for panels: pure functions, so they are tested without a terminal. */

const SPARK_LEVELS = '▁▂▃▄▅▆▇█';

/** The last `width` values as a sparkline scaled to their maximum; empty positions are blank. */
export function sparkline(values: number[], width: number): string {
    const shown = values.slice(-width);
    const max = Math.max(0, ...shown);
    const line = shown.map((value) => max === 0 ? SPARK_LEVELS[0]! : SPARK_LEVELS[Math.min(SPARK_LEVELS.length - 1, Math.floor((value / max) * (SPARK_LEVELS.length - 1) + 0.5))]!).join('');
    return line.padStart(width, ' ');
}

export function progressBar(fraction: number, width: number): string {
    const clamped = Math.min(1, Math.max(0, fraction));
    const filled = Math.round(clamped * width);
    return `${'█'.repeat(filled)}${'░'.repeat(width - filled)} ${String(Math.round(clamped * 100)).padStart(3)}%`;
}

/** A stage's letter: A, B, …, as in the layer bar. */
export function stageLetter(index: number) {
    return String.fromCharCode(65 + (index % 26));
}

/** Stages' layer ranges (first, last; null for none) as one bar of `width` cells, a letter per stage. */
export function layerBar(ranges: ([number, number] | null)[], totalLayers: number, width: number): string {
    if (totalLayers <= 0)
        return '';
    const cells = Array.from({length: width}, (_, cell) => {
        const layer = Math.floor((cell / width) * totalLayers);
        const stage = ranges.findIndex((range) => range !== null && layer >= range[0] && layer <= range[1]);
        return stage < 0 ? '·' : stageLetter(stage);
    });
    return cells.join('');
}

export function formatRate(tokensPerSecond: number) {
    return tokensPerSecond >= 100 ? tokensPerSecond.toFixed(0) : tokensPerSecond.toFixed(1);
}
