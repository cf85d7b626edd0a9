import {getLlama, LlamaCompletion, TokenBias, type Token} from 'node-llama-cpp';
import {StreamTimer, type StreamMeasurement} from './stream-measurement.js';

/** node-llama-cpp called in-process, as an application embedding it would: the baseline the proxy must keep up with. */
export async function openDirectLlama(modelPath: string, threads: number) {
    const llama = await getLlama({gpu: false, build: 'never', maxThreads: threads});
    const model = await llama.loadModel({modelPath});
    const context = await model.createContext({contextSize: 4096, threads});
    return {
        /** 'prebuilt' (node-llama-cpp's shipped binaries) or 'localBuild' (built here by `strongdoge engine build`). */
        buildType: llama.buildType,
        async measure(prompt: string, maxTokens: number, logitBias: Record<string, number>): Promise<StreamMeasurement> {
            const tokenBias = new TokenBias(model.tokenizer);
            for (const [token, bias] of Object.entries(logitBias))
                tokenBias.set(Number(token) as Token, bias <= -100 ? 'never' : {logit: bias});
            const sequence = context.getSequence();
            const timer = new StreamTimer();
            let completionTokens = 0;
            try {
                await new LlamaCompletion({contextSequence: sequence}).generateCompletion(prompt, {
                    maxTokens, temperature: 0, repeatPenalty: false, tokenBias,
                    onTextChunk: () => timer.textArrived(),
                    onToken: (tokens) => completionTokens += tokens.length
                });
            } finally {
                sequence.dispose();
            }
            return timer.finish(completionTokens);
        },
        dispose: () => model.dispose()
    };
}
