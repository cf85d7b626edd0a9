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
        /** Bytes of the first `length` blocks, as the log's signed tree says (known before they are downloaded). */
        readonly byteLength: number;
        readonly closed: boolean;
        ready(): Promise<void>;
        append(blocks: T | T[]): Promise<{length: number, byteLength: number}>;
        get(index: number, options?: {wait?: boolean, timeout?: number, valueEncoding?: 'json' | 'utf-8' | 'binary'}): Promise<T | null>;
        update(options?: {wait?: boolean}): Promise<boolean>;
        download(range?: {start?: number, end?: number}): {done(): Promise<void>, destroy(): void};
        treeHash(length?: number): Promise<Buffer>;
        truncate(length: number): Promise<void>;
        createReadStream(options?: {start?: number, end?: number}): Readable & AsyncIterable<T>;
        /** Replicates this core on a connection's protomux (or a stream). */
        replicate(stream: unknown): unknown;
        /** Closes every session of the core and deletes it from storage. */
        purge(): Promise<void>;
        close(): Promise<void>;
    }
}

declare module 'corestore' {
    import type Hypercore from 'hypercore';

    export default class Corestore {
        constructor(storage: string, options?: {primaryKey?: Buffer});
        ready(): Promise<void>;
        get<T = unknown>(options: {name?: string, key?: Buffer, discoveryKey?: Buffer, valueEncoding?: 'json' | 'utf-8' | 'binary'}): Hypercore<T>;
        /** The discovery keys of every core stored. */
        list(): AsyncIterable<Buffer>;
        /** Replicates every core this store has open over `stream`, on the stream's protomux. */
        replicate(stream: unknown): unknown;
        close(): Promise<void>;
    }
}
