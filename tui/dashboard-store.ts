import {EventEmitter} from 'node:events';
import {emptyDashboardState, RECENT_ERRORS_KEPT, RECENT_REQUESTS_SHOWN, THROUGHPUT_SAMPLES, type DashboardState, type RequestView} from './dashboard-state.js';

/** The one store the dashboard renders: updates replace slices immutably and emit `change`. */
export class DashboardStore extends EventEmitter<{change: []}> {
    private current: DashboardState = emptyDashboardState();
    private pendingTokens = {local: 0, forPeers: 0};

    get state(): DashboardState {
        return this.current;
    }

    set<K extends keyof DashboardState>(key: K, value: DashboardState[K]) {
        this.current = {...this.current, [key]: value};
        this.emit('change');
    }

    addRequest(request: RequestView) {
        this.set('requests', [request, ...this.current.requests].slice(0, RECENT_REQUESTS_SHOWN));
    }

    addError(message: string, at = Date.now()) {
        this.set('errors', [...this.current.errors, {at, message}].slice(-RECENT_ERRORS_KEPT));
    }

    /** Tokens generated, counted into the current one-second sample. */
    countTokens(kind: 'local' | 'forPeers', tokens: number) {
        this.pendingTokens[kind] += tokens;
    }

    /** Closes the current sample; called once a second. */
    tickThroughput() {
        const {local, forPeers} = this.current.throughput;
        this.set('throughput', {
            local: [...local, this.pendingTokens.local].slice(-THROUGHPUT_SAMPLES),
            forPeers: [...forPeers, this.pendingTokens.forPeers].slice(-THROUGHPUT_SAMPLES)
        });
        this.pendingTokens = {local: 0, forPeers: 0};
    }
}
