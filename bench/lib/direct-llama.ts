import {getLlama, LlamaCompletion, TokenBias, type Token} from 'node-llama-cpp';
import type {StreamMeasurement} from './stream-measurement.js';

/** node-llama-cpp called in-process, as an application embedding it would: the baseline the proxy must keep up with. */
export async function openDirectLlama(modelPath: string, threads: number) {
    const llama = await getLlama({gpu: false, build: 'never', maxThreads: threads});
    const model = await llama.loadModel({modelPath});
    const context = await model.createContext({contextSize: 4096, threads});
    return {
        async measure(prompt: string, maxTokens: number, logitBias: Record<string, number>): Promise<StreamMeasurement> {
            const tokenBias = new TokenBias(model.tokenizer);
            for (const [token, bias] of Object.entries(logitBias))
                tokenBias.set(Number(token) as Token, bias <= -100 ? 'never' : {logit: bias});
            const sequence = context.getSequence();
            const startedAt = performance.now();
            let firstAt: number | undefined;
            let lastAt = startedAt;
            let completionTokens = 0;
            try {
                await new LlamaCompletion({contextSequence: sequence}).generateCompletion(prompt, {
                    maxTokens, temperature: 0, repeatPenalty: false, tokenBias,
                    onTextChunk: () => {
                        firstAt ??= performance.now();
                        lastAt = performance.now();
                    },
                    onToken: (tokens) => completionTokens += tokens.length
                });
            } finally {
                sequence.dispose();
            }
            const first = firstAt ?? lastAt;
            return {
                ttftMs: first - startedAt,
                completionTokens,
                generationTokensPerSecond: lastAt > first ? (completionTokens - 1) / ((lastAt - first) / 1000) : 0,
                wallMs: performance.now() - startedAt
            };
        },
        dispose: () => model.dispose()
    };
}
