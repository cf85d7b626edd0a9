import {once} from 'node:events';
import {mkdtemp, readdir, readFile, rm, writeFile} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {Writable} from 'node:stream';
import test from 'ava';
import {modelsCommand} from '../cli/commands/models-command.js';
import {resolveModelRefs} from '../cli/model-refs.js';
import {EngineSupervisor} from '../engine/engine-supervisor.js';
import {listModelFiles} from '../engine/model-files.js';
import {isModelSource, MAX_SOURCE_LENGTH, modelSourceOf, modelSourcePath, recordModelSource} from '../engine/model-source.js';
import {NodeCapabilities} from '../node/node-capabilities.js';
import {createLogger} from '../node/logger.js';
import {capabilitiesSchema} from '../swarm/capabilities.js';
import {capabilitiesFixture} from '../harness/capabilities-fixture.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {serveFile} from '../harness/file-server.js';

const logger = createLogger({level: 'warn', format: 'json', output: new Writable({write: (_chunk, _encoding, callback) => callback()})});
const HF_REF = 'hf:doge-lab/tiny-GGUF/tiny-q8.gguf';

let content: Buffer;
let hub: Awaited<ReturnType<typeof serveFile>>;
let cleanupSource: () => Promise<void>;

// One stand-in for Hugging Face for the whole file: HF_ENDPOINT is read from this process's environment.
test.before(async () => {
    const source = await createDataDirWithDemoModel({layers: 2, width: 64, headCount: 4, feedForwardLength: 64});
    cleanupSource = source.cleanup;
    content = await readFile(source.modelPath);
    hub = await serveFile('doge-lab/tiny-GGUF/resolve/main/tiny-q8.gguf', content);
    process.env.HF_ENDPOINT = hub.origin;
});

test.after.always(async () => {
    await hub?.close();
    await cleanupSource?.();
});

async function dataDir(t: {teardown(fn: () => Promise<void>): void}) {
    const dir = await mkdtemp(join(tmpdir(), 'strongdoge-source-'));
    t.teardown(() => rm(dir, {recursive: true, force: true}));
    return dir;
}

test('models pull keeps an hf: source beside the file, and the sidecar is not a model', async (t) => {
    const dir = await dataDir(t);
    await modelsCommand().parseAsync(['pull', HF_REF, '--data-dir', dir], {from: 'user'});
    const modelPath = join(dir, 'models', 'hf_doge-lab_tiny-q8.gguf'); // node-llama-cpp's name for Hugging Face files
    t.true((await readFile(modelPath)).equals(content));
    t.deepEqual(JSON.parse(await readFile(modelSourcePath(modelPath), 'utf8')), {source: HF_REF});
    t.is(await modelSourceOf(modelPath), HF_REF);
    t.deepEqual((await readdir(join(dir, 'models'))).sort(), ['hf_doge-lab_tiny-q8.gguf', 'hf_doge-lab_tiny-q8.gguf.source.json'], 'no temporary file is left');

    const {models, failures} = await listModelFiles(join(dir, 'models'));
    t.deepEqual(models.map((model) => model.id), ['hf_doge-lab_tiny-q8']);
    t.deepEqual(failures, []);
});

test('--model hf: and URL references keep their source; a local file has none, and its offer announces none', async (t) => {
    const dir = await dataDir(t);
    const server = await serveFile('other.gguf', content);
    t.teardown(server.close);
    const specs = await resolveModelRefs([HF_REF, server.url], dir, {logger, showProgressBar: false});
    t.deepEqual(specs.map((spec) => spec.id), ['hf_doge-lab_tiny-q8', 'other']);
    t.is(await modelSourceOf(specs[0]!.path), HF_REF);
    t.is(await modelSourceOf(specs[1]!.path), server.url);

    const local = join(dir, 'local.gguf');
    await writeFile(local, content);
    const capabilities = new NodeCapabilities({
        engine: new EngineSupervisor({models: [], threads: 1, parallelSequences: 1, contextSize: 256, gpu: false}),
        models: [...specs, {id: 'local', path: local}], dataDir: dir, maxJobTokens: 100
    });
    const errors: string[] = [];
    await capabilities.prepare((model, error) => errors.push(`${model}: ${error.message}`));
    // The files are hashed in the background: let that end before the data dir goes.
    while (capabilities.current().models.some((offer) => offer.sha256 === null))
        await once(capabilities, 'changed');
    t.deepEqual(errors, []);
    const announced = capabilitiesSchema.parse(capabilities.current());
    t.deepEqual(announced.models.map((offer) => [offer.id, offer.source]), [['hf_doge-lab_tiny-q8', HF_REF], ['other', server.url], ['local', undefined]]);
    t.false('source' in announced.models[2]!, 'no source key at all for a file without one');
});

test('tag forms, credentials and queries record nothing and keep an earlier record', async (t) => {
    const dir = await dataDir(t);
    const model = join(dir, 'm.gguf');
    await writeFile(model, content);
    for (const ref of ['hf:doge-lab/tiny-GGUF:Q4_K_M', 'hf:doge-lab/tiny-GGUF', 'https://user:secret@example.com/m.gguf',
        'https://example.com/m.gguf?X-Amz-Signature=abc', 'file:///etc/passwd', '/models/m.gguf', ''])
        t.false(await recordModelSource(model, ref), ref);
    t.deepEqual(await readdir(dir), ['m.gguf']);

    t.true(await recordModelSource(model, 'hf:doge-lab/tiny-GGUF/m.gguf#v2'));
    t.false(await recordModelSource(model, 'hf:doge-lab/tiny-GGUF:Q8_0'));
    t.is(await modelSourceOf(model), 'hf:doge-lab/tiny-GGUF/m.gguf#v2');
    t.true(await recordModelSource(model, 'https://example.com/models/m.gguf'));
    t.is(await modelSourceOf(model), 'https://example.com/models/m.gguf', 'a new download replaces the record');
});

test('a damaged, edited or overlong sidecar is no source', async (t) => {
    const dir = await dataDir(t);
    const model = join(dir, 'm.gguf');
    t.is(await modelSourceOf(model), undefined, 'none recorded');
    const long = `https://example.com/${'a'.repeat(MAX_SOURCE_LENGTH)}.gguf`;
    for (const text of ['{"source": "https://exa', 'null', '[]', '{}', '{"source": 42}', '{"source": ""}', '{"source": "hf:user/repo:Q4_K_M"}',
        '{"source": "file:///etc/passwd"}', '{"source": "https://u:p@example.com/m.gguf"}', JSON.stringify({source: long}),
        JSON.stringify({source: 'https://example.com/m.gguf', padding: 'x'.repeat(4096)})]) {
        await writeFile(modelSourcePath(model), text);
        t.is(await modelSourceOf(model), undefined, text.slice(0, 80));
    }
    await writeFile(modelSourcePath(model), JSON.stringify({source: 'http://127.0.0.1:8080/m.gguf'}));
    t.is(await modelSourceOf(model), 'http://127.0.0.1:8080/m.gguf');
    t.false(isModelSource(long));
});

test('peers may announce a source of at most 1024 characters, or none', (t) => {
    const offer = {id: 'm', sha256: null, sizeBytes: 1, quantization: 'F16', layers: 1, layerBytes: [1], loaded: false};
    const parse = (models: unknown[]) => capabilitiesSchema.safeParse({...capabilitiesFixture(), models}).success;
    t.true(parse([offer]));
    t.true(parse([{...offer, source: 'hf:a/b/c.gguf'}]));
    t.false(parse([{...offer, source: `https://example.com/${'a'.repeat(1024)}`}]));
    t.false(parse([{...offer, source: 7}]));
    t.false(parse([{...offer, source: ''}]));
});
