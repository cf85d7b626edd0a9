import type {FlashAttentionSetting} from './engine-messages.js';

/**
 * The `flashAttention` a model's context is created with. On a CPU, llama.cpp's flash attention kernel slows as the
 * context fills, and in a build for this machine (`strongdoge engine build`) by far: measured on the ~86M benchmark
 * model, 2,000 tokens into a context it gave 9 tokens/s against 23 without (docs/architecture.md, "Engine"). So
 * 'auto' turns it off for a model wholly on this CPU; with layers on a GPU or on a pipeline's remote devices,
 * llama.cpp decides (it enables it where the device supports it).
 */
export function contextFlashAttention(setting: FlashAttentionSetting, placement: {gpuLayers: number, sharded: boolean}): boolean | 'auto' {
    if (setting !== 'auto')
        return setting === 'on';
    return placement.gpuLayers === 0 && !placement.sharded ? false : 'auto';
}
