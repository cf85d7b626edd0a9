const UNITS = ['B', 'KB', 'MB', 'GB', 'TB'];

export function formatBytes(bytes: number) {
    let value = bytes;
    let unit = 0;
    while (value >= 1000 && unit < UNITS.length - 1) {
        value /= 1000;
        unit++;
    }
    return `${value.toFixed(unit === 0 ? 0 : 1)} ${UNITS[unit]}`;
}

/** Left-aligned columns separated by two spaces, like `docker ps`. */
export function formatTable(headers: string[], rows: string[][]) {
    const widths = headers.map((header, column) => Math.max(header.length, ...rows.map((row) => row[column]?.length ?? 0)));
    return [headers, ...rows]
        .map((row) => row.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd())
        .join('\n');
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
