/**
 * A small JSON file a chain client keeps across restarts, such as the transactions it signed and has not seen
 * confirmed yet (docs/architecture.md, "Anchoring" and "Settlement"): written whole or not at all, readable by its
 * owner only, checked against a schema when read.
 */
import {mkdir, readFile, rename, writeFile} from 'node:fs/promises';
import {dirname} from 'node:path';
import type {z} from 'zod';
import {LedgerError} from './ledger-error.js';

export interface JsonStateFileOptions<T> {
    /** What the file holds when there is none yet. */
    empty: () => T,
    /** What to do about a damaged file, for its error message ("if no … is pending, remove it"). */
    damagedHint: string
}

export class JsonStateFile<S extends z.ZodType> {
    constructor(readonly path: string, private readonly schema: S, private readonly options: JsonStateFileOptions<z.output<S>>) {}

    /**
     * What a previous run left; `empty()` when there is no file. A damaged file is a STORAGE error, never a reset: a
     * transaction it names may be on its way, and losing track of it could send a second one.
     */
    async load(): Promise<z.output<S>> {
        let text: string;
        try {
            text = await readFile(this.path, 'utf8');
        } catch (error) {
            if ((error as NodeJS.ErrnoException).code === 'ENOENT')
                return this.options.empty();
            throw LedgerError.storage(`cannot read ${this.path}: ${(error as Error).message}`);
        }
        let json: unknown;
        try {
            json = JSON.parse(text);
        } catch {
            throw this.damaged('not JSON');
        }
        const parsed = this.schema.safeParse(json);
        if (!parsed.success) {
            const issue = parsed.error.issues[0]!;
            throw this.damaged(`${issue.path.join('.') || 'top level'}: ${issue.message}`);
        }
        return parsed.data;
    }

    /** Written whole or not at all (a rename), mode 0600 in a 0700 folder, flushed: before the transaction it names can reach the chain. */
    async save(state: z.input<S>) {
        await mkdir(dirname(this.path), {recursive: true, mode: 0o700});
        const temporary = `${this.path}.tmp`;
        await writeFile(temporary, JSON.stringify(state) + '\n', {mode: 0o600, flush: true});
        await rename(temporary, this.path);
    }

    private damaged(reason: string) {
        return LedgerError.storage(`${this.path} is damaged (${reason}); ${this.options.damagedHint}`);
    }
}
