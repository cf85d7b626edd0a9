/** Up to `count` distinct items, uniformly at random, in random order (a partial Fisher–Yates shuffle of a copy). */
export function pickRandom<T>(items: readonly T[], count = items.length): T[] {
    const pool = [...items];
    const picked = Math.min(count, pool.length);
    for (let index = 0; index < picked; index++) {
        const other = index + Math.floor(Math.random() * (pool.length - index));
        [pool[index], pool[other]] = [pool[other]!, pool[index]!];
    }
    return pool.slice(0, picked);
}
