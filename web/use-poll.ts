import {useEffect, useState} from 'preact/hooks';
import {onApiKeyChange} from './api-client.js';

/** Whether the tab is shown: a hidden tab polls nothing, so a forgotten tab costs the node nothing. */
export function usePageVisible() {
    const [visible, setVisible] = useState(!document.hidden);
    useEffect(() => {
        const onChange = () => setVisible(!document.hidden);
        document.addEventListener('visibilitychange', onChange);
        return () => document.removeEventListener('visibilitychange', onChange);
    }, []);
    return visible;
}

export interface Polled<T> {
    data: T | null,
    /** The last attempt's error; `data` keeps the last good answer meanwhile. */
    error: string | null
}

export function errorMessage(error: unknown) {
    return error instanceof Error ? error.message : String(error);
}

/**
 * `load` every `intervalMs` while `active` and the tab is shown: the next call is timed from the end of the last,
 * so a slow node is never asked twice at once; a new API key asks again at once. `load` must be the same function
 * on every render (a module's function).
 */
export function usePoll<T>(load: (signal: AbortSignal) => Promise<T>, intervalMs: number, active = true): Polled<T> {
    const [state, setState] = useState<Polled<T>>({data: null, error: null});
    const visible = usePageVisible();
    useEffect(() => {
        if (!active || !visible)
            return;
        const controller = new AbortController();
        let timer: ReturnType<typeof setTimeout> | undefined;
        let running = false;
        const tick = async () => {
            clearTimeout(timer);
            if (running)
                return;
            running = true;
            try {
                const data = await load(controller.signal);
                setState({data, error: null});
            } catch (error) {
                if (!controller.signal.aborted)
                    setState((previous) => ({data: previous.data, error: errorMessage(error)}));
            }
            running = false;
            if (!controller.signal.aborted)
                timer = setTimeout(tick, intervalMs);
        };
        void tick();
        const unsubscribe = onApiKeyChange(() => void tick());
        return () => {
            controller.abort();
            clearTimeout(timer);
            unsubscribe();
        };
    }, [load, intervalMs, active, visible]);
    return state;
}
