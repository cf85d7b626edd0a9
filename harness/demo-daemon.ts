import test from 'ava';
import OpenAI from 'openai';
import type {DemoModelOptions} from '../engine/demo/demo-model.js';
import {startDaemon, type DaemonHandle} from './cli-process.js';
import {createDataDirWithDemoModel} from './demo-model-fixture.js';

export interface DemoDaemon {
    daemon: DaemonHandle,
    /** The official openai client pointed at the daemon. */
    client: OpenAI,
    dataDir: string,
    modelPath: string,
    stop(): Promise<void>
}

/** An offline daemon serving a fresh demo model as `demo`, one llama.cpp thread, plus `extraArgs`. */
export async function startDemoDaemon(extraArgs: string[] = [], modelOptions: DemoModelOptions = {}): Promise<DemoDaemon> {
    const fixture = await createDataDirWithDemoModel(modelOptions);
    const daemon = await startDaemon(['--model', 'demo', '--data-dir', fixture.dataDir, '--threads', '1', ...extraArgs]);
    return {
        daemon,
        client: new OpenAI({baseURL: daemon.baseUrl, apiKey: 'unused', maxRetries: 0}),
        dataDir: fixture.dataDir,
        modelPath: fixture.modelPath,
        async stop() {
            await daemon.stop();
            await fixture.cleanup();
        }
    };
}

/**
 * A demo daemon for a whole test file: started before its tests, stopped after them. Returns a getter, since the
 * daemon exists only once `test.before` has run.
 */
export function demoDaemonForFile(extraArgs: string[] = [], modelOptions: DemoModelOptions = {}): () => DemoDaemon {
    let demo: DemoDaemon | undefined;
    test.before(async () => {
        demo = await startDemoDaemon(extraArgs, modelOptions);
    });
    test.after.always(() => demo?.stop());
    return () => demo!;
}
