/** Hypercore and Corestore ship no TypeScript types: the parts the ledger uses. */

declare module 'hypercore' {
    import type {EventEmitter} from 'node:events';
    import type {Readable} from 'node:stream';

    export default class Hypercore<T = unknown> extends EventEmitter {
        readonly key: Buffer | null;
        readonly discoveryKey: Buffer | null;
        readonly length: number;
        /** Blocks held locally from the start, without a gap. */
        readonly contiguousLength: number;
        readonly writable: boolean;
        readonly closed: boolean;
        ready(): Promise<void>;
        append(blocks: T | T[]): Promise<{length: number, byteLength: number}>;
        get(index: number, options?: {wait?: boolean, timeout?: number, valueEncoding?: 'json' | 'utf-8' | 'binary'}): Promise<T | null>;
        update(options?: {wait?: boolean}): Promise<boolean>;
        download(range?: {start?: number, end?: number}): {done(): Promise<void>, destroy(): void};
        treeHash(length?: number): Promise<Buffer>;
        truncate(length: number): Promise<void>;
        createReadStream(options?: {start?: number, end?: number}): Readable & AsyncIterable<T>;
        close(): Promise<void>;
    }
}

declare module 'corestore' {
    import type Hypercore from 'hypercore';

    export default class Corestore {
        constructor(storage: string, options?: {primaryKey?: Buffer});
        ready(): Promise<void>;
        get<T = unknown>(options: {name?: string, key?: Buffer, valueEncoding?: 'json' | 'utf-8' | 'binary'}): Hypercore<T>;
        /** Replicates every core this store has open over `stream`, on the stream's protomux. */
        replicate(stream: unknown): unknown;
        close(): Promise<void>;
    }
}
