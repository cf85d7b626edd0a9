import {useEffect, useState} from 'react';
import type {DashboardState} from './dashboard-state.js';
import type {DashboardStore} from './dashboard-store.js';

/** The store's state, re-rendered at most once per `intervalMs`: a busy node must not flood the terminal. */
export function useStoreState(store: DashboardStore, intervalMs: number): DashboardState {
    const [state, setState] = useState(store.state);
    useEffect(() => {
        let timer: NodeJS.Timeout | undefined;
        let lastRender = 0;
        const onChange = () => {
            if (timer !== undefined)
                return;
            const wait = Math.max(0, lastRender + intervalMs - Date.now());
            timer = setTimeout(() => {
                timer = undefined;
                lastRender = Date.now();
                setState(store.state);
            }, wait);
        };
        store.on('change', onChange);
        return () => {
            store.off('change', onChange);
            clearTimeout(timer);
        };
    }, [store, intervalMs]);
    return state;
}
