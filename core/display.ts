/** How numbers and ids are shown to people: logs, the dashboard, the CLI, error messages. */

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB'];

/** Decimal units: 1.5 GB is 1.5e9 bytes, as disks and downloads are sized. */
export function formatBytes(bytes: number) {
    let value = bytes;
    let unit = 0;
    while (value >= 1000 && unit < UNITS.length - 1) {
        value /= 1000;
        unit++;
    }
    return `${value.toFixed(unit === 0 ? 0 : 1)} ${UNITS[unit]}`;
}

/** A peer's id (64 hex digits) as logs and tables show it: its first 16 digits. */
export function shortPeerId(peerId: string) {
    return peerId.slice(0, 16);
}

/** `1 model`, `2 models`: English plurals with an s. */
export function plural(count: number, noun: string) {
    return `${count} ${noun}${count === 1 ? '' : 's'}`;
}
