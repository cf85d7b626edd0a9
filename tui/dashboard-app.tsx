import {render, useInput, useStdout} from 'ink';
import {useEffect, useState} from 'react';
import {DashboardView, focusablePanels, type FocusablePanel} from './dashboard-view.js';
import type {DashboardStore} from './dashboard-store.js';
import {useStoreState} from './use-store-state.js';

/** Re-render at most this often: enough to look live, cheap when idle. */
export const RENDER_INTERVAL_MS = 250;

function useTerminalColumns() {
    const {stdout} = useStdout();
    const [columns, setColumns] = useState(stdout.columns || 80);
    useEffect(() => {
        const onResize = () => {
            // The terminal reflows the old frame on resize; Ink would erase too few lines: start clean.
            stdout.write('\x1b[2J\x1b[3J\x1b[H');
            setColumns(stdout.columns || 80);
        };
        stdout.on('resize', onResize);
        return () => {
            stdout.off('resize', onResize);
        };
    }, [stdout]);
    return columns;
}

export function DashboardApp({store, onQuit}: {store: DashboardStore, onQuit: () => void}) {
    const state = useStoreState(store, RENDER_INTERVAL_MS);
    const columns = useTerminalColumns();
    const [focus, setFocus] = useState<FocusablePanel>('requests');
    const [showHelp, setShowHelp] = useState(false);

    useInput((input, key) => {
        if (input === 'q' || (key.ctrl && input === 'c')) {
            onQuit();
            return;
        }
        if (input === '?') {
            setShowHelp((shown) => !shown);
            return;
        }
        const step = key.tab && !key.shift || key.rightArrow || key.downArrow ? 1 : key.shift && key.tab || key.leftArrow || key.upArrow ? -1 : 0;
        const panels = focusablePanels(state);
        if (step !== 0)
            setFocus((current) => panels[(panels.indexOf(current) + step + panels.length) % panels.length]!);
    });

    return <DashboardView state={state} columns={columns} focus={focus} showHelp={showHelp}/>;
}

/** Shows the dashboard on this terminal until `onQuit` ends the process. */
export function renderDashboard(store: DashboardStore, onQuit: () => void) {
    return render(<DashboardApp store={store} onQuit={onQuit}/>, {exitOnCtrlC: false, patchConsole: true});
}
