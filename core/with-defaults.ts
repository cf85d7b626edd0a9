/** `defaults` with `options` over them, where an option set to `undefined` keeps its default. */
export type WithDefaults<D extends object, O extends object> =
    Omit<O, keyof D> & {[K in keyof D]: K extends keyof O ? Exclude<O[K], undefined> | D[K] : D[K]};

/**
 * Fills an options object's defaults, treating an option given as `undefined` as absent: `{...defaults, ...options}`
 * lets an `undefined` override its default, which is why callers wrote `...(x !== undefined && {x})` instead of
 * `x`. Built with `Object.fromEntries`, so a key such as `__proto__` stays a plain key.
 */
export function withDefaults<D extends object, O extends object>(defaults: D, options: O | undefined): WithDefaults<D, O> {
    const given = Object.entries(options ?? {}).filter(([, value]) => value !== undefined);
    return Object.fromEntries([...Object.entries(defaults), ...given]) as WithDefaults<D, O>;
}
