/** One request's generation, as the decode loop drives it. */
export interface SteppedGeneration {
    /** llama.cpp's sequence id: the loop starts the sequences' decodes in ascending order. */
    readonly sequenceId: number,
    /** True until the prompt has been evaluated: prompt processing does not hold back the other sequences' steps. */
    readonly prefilling: boolean,
    /**
     * Starts this generation's next decode synchronously (so that every sequence of a step is queued in the same
     * tick, in order) and resolves once its token is handled: false when the generation has finished.
     */
    advance(): Promise<boolean>
}

/**
 * Advances every active generation of one context together, a token each per step, in ascending sequence id.
 *
 * Why (docs/architecture.md, "Batched decoding"): node-llama-cpp's contexts keep a KV cache per sequence, and
 * llama.cpp then computes a batch in one pass only when its tokens come from consecutive sequence ids in
 * ascending order; otherwise it splits the batch and reads every weight again per pass. node-llama-cpp decodes
 * whatever sequences have queued when the previous batch ends, in the order their sampling finished: mostly not
 * all of them, in no particular order. A step starts all decodes in one tick, in order, so they share one pass.
 */
export class DecodeLoop<T extends SteppedGeneration> {
    private readonly active = new Set<T>();
    private readonly prefilling = new Set<T>();
    private readonly finished = new Map<T, {resolve: () => void, reject: (error: unknown) => void}>();
    private running = false;
    private wake: (() => void) | undefined;
    private signalled = false;
    private stepCount = 0;
    private decodedTokens = 0;

    /** Steps taken and tokens decoded in them (not prompts): tokens per step is the batch the loop achieved. */
    get stats() {
        return {steps: this.stepCount, tokens: this.decodedTokens};
    }

    /** Adds a generation; it joins at the next step. Resolves when it has finished, rejects with its error. */
    run(generation: T): Promise<void> {
        return new Promise<void>((resolve, reject) => {
            this.finished.set(generation, {resolve, reject});
            this.active.add(generation);
            this.notify();
            if (!this.running) {
                this.running = true;
                // From a microtask: generations added in the same tick start together.
                queueMicrotask(() => void this.loop().finally(() => this.running = false));
            }
        });
    }

    private async loop() {
        while (this.active.size > 0) {
            this.signalled = false;
            const ready = [...this.active].filter((generation) => !this.prefilling.has(generation))
                .sort((a, b) => a.sequenceId - b.sequenceId);
            if (ready.length === 0) {
                // Only prompts are being evaluated: wait until one ends or a generation arrives.
                if (!this.signalled)
                    await new Promise<void>((resolve) => this.wake = resolve);
                this.wake = undefined;
                continue;
            }
            const stepped: Promise<void>[] = [];
            for (const generation of ready) {
                if (generation.prefilling) {
                    this.prefilling.add(generation);
                    void this.settle(generation).then(() => {
                        this.prefilling.delete(generation);
                        this.notify();
                    });
                } else {
                    stepped.push(this.settle(generation));
                }
            }
            if (stepped.length > 0) {
                this.stepCount++;
                this.decodedTokens += stepped.length;
            }
            await Promise.all(stepped);
        }
    }

    private notify() {
        this.signalled = true;
        this.wake?.();
    }

    /** One advance of one generation; its failure ends only that generation. */
    private async settle(generation: T) {
        let more: boolean;
        try {
            more = await generation.advance();
        } catch (error) {
            this.end(generation)?.reject(error);
            return;
        }
        if (!more)
            this.end(generation)?.resolve();
    }

    private end(generation: T) {
        const callbacks = this.finished.get(generation);
        this.finished.delete(generation);
        this.active.delete(generation);
        return callbacks;
    }
}
