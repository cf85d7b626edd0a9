/**
 * One run of `make` per key at a time: callers meanwhile share its promise. A failed run is forgotten, so the next
 * caller tries again; with `keep: false` a finished one is too (for work whose result the caller checks anew).
 */
export function sharedRun<T>(runs: Map<string, Promise<T>>, key: string, make: () => Promise<T>, {keep = true}: {keep?: boolean} = {}) {
    let pending = runs.get(key);
    if (pending === undefined) {
        const run = make();
        const forget = () => {
            if (runs.get(key) === run)
                runs.delete(key);
        };
        run.then(keep ? undefined : forget, forget);
        runs.set(key, run);
        pending = run;
    }
    return pending;
}
