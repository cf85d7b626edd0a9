import {downloadModel} from '../engine/model-download.js';
import {findLocalModel, isRemoteModelRef, modelIdFromPath} from '../engine/model-files.js';
import {recordModelSource} from '../engine/model-source.js';
import type {ModelLoadSpec} from '../engine/engine-settings.js';
import {ConfigError} from './config/config-error.js';
import {modelsDir} from './data-dir.js';
import type {Logger} from '../node/logger.js';
import {NO_DRAFT_MODEL} from '../node/node-settings.js';

/** How often download progress is logged when no progress bar is shown. */
const PROGRESS_LOG_STEP = 0.05;

export interface ModelRefOptions {
    logger: Logger,
    showProgressBar: boolean,
    /**
     * `--draft-model` values, the Nth for the Nth model, `none` for a model without one (cli/config/node-config.ts
     * checks there is one per model). Defaults to none: no model has a draft.
     */
    drafts?: string[]
}

/** Turns `--model` values (paths, names in the models dir, `hf:` refs, URLs), and their drafts', into files to load. */
export async function resolveModelRefs(refs: string[], dataDir: string, {logger, showProgressBar, drafts = []}: ModelRefOptions) {
    const specs: ModelLoadSpec[] = [];
    // Several models may share a draft: it is looked up or downloaded once.
    const draftPaths = new Map<string, string>();
    for (const [index, ref] of refs.entries()) {
        const path = await resolveModelRef(ref, 'model', dataDir, {logger, showProgressBar});
        const id = modelIdFromPath(path);
        if (specs.some((spec) => spec.id === id))
            throw new ConfigError(`two models are named "${id}": model ids come from file names and must be unique`);
        const draftRef = drafts[index];
        if (draftRef === undefined || draftRef === NO_DRAFT_MODEL) {
            specs.push({id, path});
            continue;
        }
        const draftPath = draftPaths.get(draftRef) ?? await resolveModelRef(draftRef, 'draft model', dataDir, {logger, showProgressBar});
        draftPaths.set(draftRef, draftPath);
        specs.push({id, path, draft: {path: draftPath}});
    }
    return specs;
}

/** One reference's file: found locally, or downloaded into the models dir. */
async function resolveModelRef(ref: string, kind: 'model' | 'draft model', dataDir: string, {logger, showProgressBar}: ModelRefOptions) {
    if (isRemoteModelRef(ref)) {
        let nextLog = 0;
        const {path} = await downloadModel(ref, {
            directory: modelsDir(dataDir),
            showProgressBar,
            onProgress: (fraction, downloadedBytes, totalBytes) => {
                if (showProgressBar || fraction < nextLog)
                    return;
                nextLog = fraction + PROGRESS_LOG_STEP;
                logger.info({model: ref, progress: Number(fraction.toFixed(3)), downloadedBytes, totalBytes}, `downloading ${kind}`);
            }
        });
        // Kept beside the file, so that hosts can fetch their layers from it (engine/model-source.ts).
        await recordModelSource(path, ref);
        return path;
    }
    const path = await findLocalModel(ref, modelsDir(dataDir));
    if (path === undefined)
        throw new ConfigError(`${kind} "${ref}" not found: give a path to a .gguf file, a name in ${modelsDir(dataDir)}, an hf: reference or a URL`);
    return path;
}
