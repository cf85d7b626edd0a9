import {z} from 'zod';

/**
 * The value types of the node's settings (node-settings.ts). Each parses a flag's text, an environment variable's
 * text and a `config.json` value alike, so a setting reads the same from every source (README, "Configuration").
 */

/** `a, b,,c` → `['a', 'b', 'c']`: lists given as one flag or environment variable. */
export function splitCommas(text: string) {
    return text.split(',').map((item) => item.trim()).filter(Boolean);
}

export const booleanText = z.union([
    z.boolean(),
    z.enum(['true', '1', 'yes', 'on']).transform(() => true),
    z.enum(['false', '0', 'no', 'off']).transform(() => false)
]);

export const integer = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

const hostPort = z.string().regex(/^[^\s:]+:\d{1,5}$/, 'expected host:port');

/** DHT bootstrap nodes, `host:port,...`. */
export const bootstrapList = z.union([
    z.array(hostPort),
    z.string().transform(splitCommas).pipe(z.array(hostPort))
]).transform((items) => items.map((item) => {
    const index = item.lastIndexOf(':');
    return {host: item.slice(0, index), port: Number(item.slice(index + 1))};
}));

const BYTE_UNITS: Record<string, number> = {'': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40};

/** Bytes, also as `512M`, `8G`, `1.5GiB` (binary units). */
export const byteSize = z.union([
    z.number().int().nonnegative(),
    z.string().trim().regex(/^\d+(\.\d+)?\s*([kmgt](i?b)?)?$/i, 'expected bytes, e.g. 8G or 512M').transform((text) => {
        const [, amount, unit] = /^([\d.]+)\s*([kmgt]?)/i.exec(text)!;
        return Math.floor(Number(amount) * BYTE_UNITS[unit!.toLowerCase()]!);
    })
], {error: 'expected bytes, e.g. 8G or 512M'});

/** Models: a list in `config.json`, comma-separated in the environment, repeated flags. */
export const modelList = z.union([
    z.array(z.string().min(1)),
    z.string().transform(splitCommas)
]);

/** Node ids (64 hex characters), at most 16. */
export const nodeIdList = z.union([z.array(z.string()), z.string().transform(splitCommas)])
    .pipe(z.array(z.string().regex(/^[0-9a-f]{64}$/, 'expected node ids (64 hex characters)')).max(16));
