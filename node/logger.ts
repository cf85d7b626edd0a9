import {Writable} from 'node:stream';
import {pino, type Logger} from 'pino';

export type {Logger};

/** Keys whose values never reach a log line. */
const REDACTED_PATHS = ['apiKey', '*.apiKey', 'authorization', '*.authorization', 'networkSecret', '*.networkSecret'];

const LEVEL_NAMES: Record<number, string> = {10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal'};
const OMITTED_KEYS = new Set(['level', 'time', 'pid', 'hostname', 'msg']);

/** One readable line per record for people at a terminal: `09:14:02 info  message key=value`. */
function humanLines(output: {write(line: string): unknown}) {
    return new Writable({
        write(chunk: Buffer, _encoding, callback) {
            for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) {
                const record = JSON.parse(line) as Record<string, unknown>;
                const time = new Date(record.time as string).toTimeString().slice(0, 8);
                const level = (LEVEL_NAMES[record.level as number] ?? 'info').padEnd(5);
                const fields = Object.entries(record)
                    .filter(([key]) => !OMITTED_KEYS.has(key))
                    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
                    .join(' ');
                output.write(`${time} ${level} ${record.msg ?? ''}${fields ? ` ${fields}` : ''}\n`);
            }
            callback();
        }
    });
}

export interface LoggerOptions {
    level: string,
    /** JSON lines (daemons, log collectors) or readable lines (a person at a terminal). */
    format: 'json' | 'human',
    output?: {write(line: string): unknown}
}

export function createLogger({level, format, output = process.stdout}: LoggerOptions): Logger {
    const destination = format === 'json' ? output : humanLines(output);
    return pino({
        level,
        base: undefined,
        redact: {paths: REDACTED_PATHS, censor: '[redacted]'},
        timestamp: pino.stdTimeFunctions.isoTime
    }, destination as pino.DestinationStream);
}
