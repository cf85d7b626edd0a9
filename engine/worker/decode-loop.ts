/**
 * Prompt tokens evaluated per step while other requests are generating: a long prompt is taken a chunk at a time,
 * each chunk in a step with the others' tokens, so their streams pause for a chunk, not for the whole prompt
 * (docs/architecture.md, "Batched decoding").
 */
export const SHARED_PROMPT_CHUNK_TOKENS = 128;
/** Prompt tokens per step when the request is alone: bigger chunks evaluate faster (15 % on a 1,950-token prompt). */
export const ALONE_PROMPT_CHUNK_TOKENS = 512;

/** One request's generation, as the decode loop drives it. */
export interface SteppedGeneration {
    /** llama.cpp's sequence id: the loop starts the sequences' decodes in ascending order. */
    readonly sequenceId: number,
    /** True until the first token is sampled: the step evaluates (part of) the prompt, not a token. */
    readonly prefilling: boolean,
    /**
     * Starts this generation's next decode synchronously (so that every sequence of a step is queued in the same
     * tick, in order) and resolves once it is done: false when the generation has finished. One advance must
     * stay short (a token, or a bounded chunk of prompt): the whole step waits for it. `shared`: other
     * generations are in this step.
     */
    advance(shared: boolean): Promise<boolean>,
    /**
     * Work to do before the step's decodes start (drafting tokens for speculative decoding): the decodes are then
     * started together, in order, once every generation's preparation is done, so a preparation is kept short as an
     * advance is. Undefined when there is none. Its failure ends the generation.
     */
    prepare?(): Promise<void> | undefined
}

/**
 * Advances every active generation of one context together, a token each per step, in ascending sequence id, all
 * decodes started in one tick so that llama.cpp computes them in one pass (docs/architecture.md, "Batched decoding").
 * A new request's prompt is evaluated a chunk per step (Generation), so running streams pause a chunk at a time.
 */
export class DecodeLoop<T extends SteppedGeneration> {
    /** The generations running, each with how to settle its run(). */
    private readonly active = new Map<T, {resolve: () => void, reject: (error: unknown) => void}>();
    private running = false;
    private stepCount = 0;
    private decodedTokens = 0;

    /** Steps taken and tokens decoded in them (not prompts): tokens per step is the batch the loop achieved. */
    get stats() {
        return {steps: this.stepCount, tokens: this.decodedTokens};
    }

    /** Adds a generation; it joins at the next step. Resolves when it has finished, rejects with its error. */
    run(generation: T): Promise<void> {
        return new Promise<void>((resolve, reject) => {
            this.active.set(generation, {resolve, reject});
            if (!this.running) {
                this.running = true;
                // From a microtask: generations added in the same tick start together.
                queueMicrotask(() => void this.loop());
            }
        });
    }

    private async loop() {
        while (this.active.size > 0) {
            const step = [...this.active.keys()].sort((a, b) => a.sequenceId - b.sequenceId);
            const tokens = step.filter((generation) => !generation.prefilling).length;
            if (tokens > 0) {
                this.stepCount++;
                this.decodedTokens += tokens;
            }
            const preparing = step.map((generation) => [generation, generation.prepare?.()] as const).filter(([, prepared]) => prepared !== undefined);
            if (preparing.length > 0)
                await Promise.all(preparing.map(([generation, prepared]) => prepared!.catch((error: unknown) => this.end(generation)?.reject(error))));
            await Promise.all(step.filter((generation) => this.active.has(generation)).map((generation) => this.settle(generation, step.length > 1)));
        }
        this.running = false; // in the tick that saw no generation left: a later run() starts a new loop
    }

    /** One advance of one generation; its failure ends only that generation. */
    private async settle(generation: T, shared: boolean) {
        let more: boolean;
        try {
            more = await generation.advance(shared);
        } catch (error) {
            this.end(generation)?.reject(error);
            return;
        }
        if (!more)
            this.end(generation)?.resolve();
    }

    private end(generation: T) {
        const callbacks = this.active.get(generation);
        this.active.delete(generation);
        return callbacks;
    }
}
