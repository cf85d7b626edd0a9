import {mkdir, mkdtemp, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {demoModelDefaults, writeDemoModel, type DemoModelOptions} from '../engine/demo/demo-model.js';

export interface SpeculationModelOptions {
    /** Where the files go; defaults to a new temporary folder, which `cleanup` removes. */
    dir?: string,
    /** The target's shape and weights (`endsText` defaults to false: generations run to their budget). */
    model?: DemoModelOptions,
    /** The drafts' blocks: the target's first ones, its later ones quiet (`quietLayersFrom`). Defaults to 2. */
    draftLayers?: number
}

/**
 * Generated models whose drafts agree with the target as often as speculative decoding's tests and benchmarks need
 * (docs/architecture.md, "Speculative decoding"): `target`, `draft` (its own first layers: mostly agrees), `selfDraft`
 * (the target itself: always agrees) and `otherDraft` (another seed's: almost never agrees). Same vocabulary.
 */
export async function writeSpeculationModels({dir, model = {}, draftLayers = 2}: SpeculationModelOptions = {}) {
    const folder = dir ?? await mkdtemp(join(tmpdir(), 'strongdoge-speculation-'));
    await mkdir(folder, {recursive: true});
    const base: DemoModelOptions = {endsText: false, ...model};
    const seed = base.seed ?? demoModelDefaults.seed;
    const paths = {target: join(folder, 'target.gguf'), draft: join(folder, 'draft.gguf'), otherDraft: join(folder, 'other-draft.gguf')};
    await writeDemoModel(paths.target, {quietLayersFrom: draftLayers, ...base});
    await writeDemoModel(paths.draft, {...base, layers: draftLayers, name: 'strongdoge-demo-draft'});
    // Not seed + 1: the per-tensor seeds of neighbouring seeds differ in few bits, and such a draft agreed on 10%.
    await writeDemoModel(paths.otherDraft, {...base, layers: draftLayers, seed: seed ^ 0x5eed, name: 'strongdoge-demo-other-draft'});
    return {
        dir: folder, ...paths, selfDraft: paths.target,
        cleanup: () => dir === undefined ? rm(folder, {recursive: true, force: true}) : Promise.resolve()
    };
}
