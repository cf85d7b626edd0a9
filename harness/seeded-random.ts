import {Prng} from '../engine/demo/prng.js';

/** The demo weights' PRNG with the draws property tests make: the same cases on every run. */
export class SeededRandom extends Prng {
    /** An integer in [low, high]. */
    int(low: number, high: number) {
        return low + Math.floor(this.next() * (high - low + 1));
    }

    pick<T>(items: readonly T[]): T {
        return items[Math.floor(this.next() * items.length)]!;
    }

    chance(p: number) {
        return this.next() < p;
    }

    shuffle<T>(items: T[]) {
        for (let index = items.length - 1; index > 0; index--) {
            const other = this.int(0, index);
            [items[index], items[other]] = [items[other]!, items[index]!];
        }
        return items;
    }
}
