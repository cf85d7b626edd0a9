/**
 * Where a benchmark's results go: one JSON report under bench/results/ (README, "Development"), stating the
 * machine it was measured on.
 */
import {mkdir, writeFile} from 'node:fs/promises';
import {cpus} from 'node:os';

const RESULTS = new URL('../results/', import.meta.url);

/** The machine a benchmark ran on, as every report states it; `extra` adds to it (load averages, say). */
export function machine<Extra extends object = object>(extra?: Extra) {
    return {cpu: cpus()[0]?.model, cores: cpus().length, node: process.version, ...extra} as {cpu: string | undefined, cores: number, node: string} & Extra;
}

/** bench/results/`name`.json: where `writeReport(name, ...)` writes. */
export function reportFile(name: string) {
    return new URL(`${name}.json`, RESULTS);
}

/**
 * Writes the report as bench/results/`name`.json, prints `summary` to stdout (defaults to the whole report) and
 * where the report went to stderr.
 */
export async function writeReport(name: string, report: object, summary: unknown = report) {
    await mkdir(RESULTS, {recursive: true});
    const file = reportFile(name);
    await writeFile(file, JSON.stringify(report, null, 2) + '\n');
    process.stdout.write(JSON.stringify(summary, null, 2) + '\n');
    process.stderr.write(`wrote ${file.pathname}\n`);
}
