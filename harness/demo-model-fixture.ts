import {mkdir, mkdtemp, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {writeDemoModel, type DemoModelOptions} from '../engine/demo/demo-model.js';

/**
 * A fresh data dir holding `models/demo.gguf`, as `strongdoge models make-demo` would leave it except that the
 * model also writes byte tokens (unless `writesBytes: false`): the suite's UTF-8 and seam checks need them.
 */
export async function createDataDirWithDemoModel(options: DemoModelOptions = {}) {
    const dataDir = await mkdtemp(join(tmpdir(), 'strongdoge-test-'));
    const modelPath = join(dataDir, 'models', 'demo.gguf');
    await mkdir(join(dataDir, 'models'), {recursive: true});
    await writeDemoModel(modelPath, {writesBytes: true, ...options});
    return {dataDir, modelPath, cleanup: () => rm(dataDir, {recursive: true, force: true})};
}
