import {downloadModel} from '../engine/model-download.js';
import {findLocalModel, isRemoteModelRef, modelIdFromPath} from '../engine/model-files.js';
import type {ModelLoadSpec} from '../engine/engine-settings.js';
import {ConfigError} from './config/config-error.js';
import {modelsDir} from './data-dir.js';
import type {Logger} from '../node/logger.js';

/** How often download progress is logged when no progress bar is shown. */
const PROGRESS_LOG_STEP = 0.05;

/** Turns `--model` values (paths, names in the models dir, `hf:` refs, URLs) into files to load. */
export async function resolveModelRefs(refs: string[], dataDir: string, {logger, showProgressBar}: {logger: Logger, showProgressBar: boolean}) {
    const specs: ModelLoadSpec[] = [];
    for (const ref of refs) {
        let path: string | undefined;
        if (isRemoteModelRef(ref)) {
            let nextLog = 0;
            ({path} = await downloadModel(ref, {
                directory: modelsDir(dataDir),
                showProgressBar,
                onProgress: (fraction, downloadedBytes, totalBytes) => {
                    if (showProgressBar || fraction < nextLog)
                        return;
                    nextLog = fraction + PROGRESS_LOG_STEP;
                    logger.info({model: ref, progress: Number(fraction.toFixed(3)), downloadedBytes, totalBytes}, 'downloading model');
                }
            }));
        } else {
            path = await findLocalModel(ref, modelsDir(dataDir));
            if (path === undefined)
                throw new ConfigError(`model "${ref}" not found: give a path to a .gguf file, a name in ${modelsDir(dataDir)}, an hf: reference or a URL`);
        }
        const id = modelIdFromPath(path);
        if (specs.some((spec) => spec.id === id))
            throw new ConfigError(`two models are named "${id}": model ids come from file names and must be unique`);
        specs.push({id, path});
    }
    return specs;
}
