import {InferenceError} from '../core/inference-error.js';

export interface AdmissionQueueOptions {
    /** Jobs that may run at once for one key (a model's sequences). */
    slotsPerKey: number,
    /** Jobs that may wait, over all keys, before new ones are refused. */
    maxWaiting: number,
    /** Told to clients that are refused. */
    retryAfterSeconds: number
}

interface Waiter {
    key: string,
    grant: () => void
}

export type ReleaseSlot = () => void;

/**
 * Bounded admission: at most `slotsPerKey` running jobs per key, at most `maxWaiting` queued jobs in all,
 * first come first served. A waiter whose signal aborts leaves the queue without taking a slot.
 */
export class AdmissionQueue {
    private readonly running = new Map<string, number>();
    private readonly waiting: Waiter[] = [];

    constructor(private readonly options: AdmissionQueueOptions) {}

    get waitingCount() {
        return this.waiting.length;
    }

    get runningCount() {
        let total = 0;
        for (const count of this.running.values())
            total += count;
        return total;
    }

    acquire(key: string, signal?: AbortSignal): Promise<ReleaseSlot> {
        if (signal?.aborted)
            return Promise.reject(InferenceError.cancelled());
        if ((this.running.get(key) ?? 0) < this.options.slotsPerKey && !this.waiting.some((waiter) => waiter.key === key))
            return Promise.resolve(this.take(key));
        if (this.waiting.length >= this.options.maxWaiting)
            return Promise.reject(InferenceError.queueFull(
                `server busy: ${this.waiting.length} requests already waiting`, this.options.retryAfterSeconds));

        return new Promise<ReleaseSlot>((resolve, reject) => {
            const waiter: Waiter = {
                key,
                grant: () => {
                    signal?.removeEventListener('abort', onAbort);
                    resolve(this.take(key));
                }
            };
            const onAbort = () => {
                this.waiting.splice(this.waiting.indexOf(waiter), 1);
                reject(InferenceError.cancelled('request cancelled while queued'));
            };
            signal?.addEventListener('abort', onAbort, {once: true});
            this.waiting.push(waiter);
        });
    }

    private take(key: string): ReleaseSlot {
        this.running.set(key, (this.running.get(key) ?? 0) + 1);
        let released = false;
        return () => {
            if (released)
                return;
            released = true;
            this.running.set(key, this.running.get(key)! - 1);
            const next = this.waiting.findIndex((waiter) => waiter.key === key);
            if (next >= 0)
                this.waiting.splice(next, 1)[0]!.grant();
        };
    }
}
