import type {JobErrorCode} from './engine-messages.js';

/** A failure of one job that the worker reports to the supervisor, leaving itself running. */
export class JobError extends Error {
    constructor(readonly code: JobErrorCode, message: string) {
        super(message);
        this.name = 'JobError';
    }
}
