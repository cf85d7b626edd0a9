import {copyFile, readFile} from 'node:fs/promises';
import {join} from 'node:path';
import {Writable} from 'node:stream';
import test from 'ava';
import {ConfigError} from '../cli/config/config-error.js';
import {resolveNodeSettings} from '../cli/config/node-config.js';
import {resolveModelRefs} from '../cli/model-refs.js';
import {createLogger} from '../node/logger.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {serveFile} from '../harness/file-server.js';

const file = (values: Record<string, unknown>) => ({path: '/data/config.json', values});
const logger = createLogger({level: 'warn', format: 'json', output: new Writable({write: (_chunk, _encoding, callback) => callback()})});

test('defaults: no draft models, speculation auto', (t) => {
    const settings = resolveNodeSettings('/data', {flags: {}, env: {}});
    t.deepEqual(settings.draftModel, []);
    t.is(settings.speculative, 'auto');
    t.like(settings, {draftMin: 0, draftMax: 12});
    t.like(resolveNodeSettings('/data', {flags: {draftMin: '3'}, env: {STRONGDOGE_DRAFT_MAX: '5'}}), {draftMin: 3, draftMax: 5});
});

test('draft models pair with models by position from flags, env and config.json alike; none skips one', (t) => {
    const fromFlags = resolveNodeSettings('/data', {flags: {model: ['big', 'other'], draftModel: ['small', 'none'], speculative: 'draft'}, env: {}});
    t.deepEqual(fromFlags.draftModel, ['small', 'none']);
    t.is(fromFlags.speculative, 'draft');
    const fromEnv = resolveNodeSettings('/data', {flags: {}, env: {
        STRONGDOGE_MODEL: 'big.gguf, other.gguf', STRONGDOGE_DRAFT_MODEL: 'none, hf:x/y/small.gguf', STRONGDOGE_SPECULATIVE: 'lookup'
    }});
    t.deepEqual(fromEnv.draftModel, ['none', 'hf:x/y/small.gguf']);
    t.is(fromEnv.speculative, 'lookup');
    const fromFile = resolveNodeSettings('/data', {flags: {}, env: {}, file: file({model: ['big'], draftModel: ['small'], speculative: 'off'})});
    t.deepEqual(fromFile.draftModel, ['small']);
    t.is(fromFile.speculative, 'off');
    // One draft alone serves the only model; a flag beats the file as for any setting.
    t.deepEqual(resolveNodeSettings('/data', {flags: {draftModel: ['tiny']}, env: {}, file: file({model: ['big'], draftModel: ['small']})}).draftModel, ['tiny']);
});

const badSettings: [string, Parameters<typeof resolveNodeSettings>[1], RegExp][] = [
    ['more drafts than models', {flags: {model: ['big'], draftModel: ['a', 'b']}, env: {}}, /one per model.*got 2 for 1 models/],
    ['one draft for several models', {flags: {model: ['big', 'other']}, env: {STRONGDOGE_DRAFT_MODEL: 'small'}}, /pairs with --model by position.*`none`.*got 1 for 2/],
    ['a draft without a model', {flags: {}, env: {}, file: file({draftModel: ['small']})}, /--draft-model drafts for a --model/],
    ['draft speculation without a draft model', {flags: {model: ['big'], speculative: 'draft'}, env: {}}, /--speculative draft needs a --draft-model/],
    ['draft speculation where every model has none', {flags: {model: ['big'], draftModel: ['none']}, env: {STRONGDOGE_SPECULATIVE: 'draft'}},
        /--speculative draft needs a --draft-model/],
    ['an unknown speculation', {flags: {speculative: 'always'}, env: {}}, /invalid option --speculative/],
    ['fewest drafts over the most', {flags: {draftMin: '6', draftMax: '4'}, env: {}}, /--draft-min \(6\) is more than --draft-max \(4\)/],
    ['no drafts at most', {flags: {draftMax: '0'}, env: {}}, /--draft-max/],
    ['a draft model list of the wrong type', {flags: {}, env: {}, file: file({draftModel: 3})}, /key "draftModel"/]
];

for (const [name, sources, message] of badSettings) {
    test(`a config error before start: ${name}`, (t) => {
        const error = t.throws(() => resolveNodeSettings('/data', sources), {instanceOf: ConfigError, message});
        t.is(error?.exitCode, 2);
        t.false(error!.message.includes('\n'), 'one line');
    });
}

test('draft references resolve as model references do: names, paths, none, one file shared, downloads', async (t) => {
    const fixture = await createDataDirWithDemoModel({layers: 1, width: 64, headCount: 4, feedForwardLength: 64});
    t.teardown(fixture.cleanup);
    const modelsDirectory = join(fixture.dataDir, 'models');
    for (const name of ['big', 'other', 'third'])
        await copyFile(fixture.modelPath, join(modelsDirectory, `${name}.gguf`));
    const server = await serveFile('remote-draft.gguf', await readFile(fixture.modelPath));
    t.teardown(server.close);

    const specs = await resolveModelRefs(['big', join(modelsDirectory, 'other.gguf'), 'third', 'demo'], fixture.dataDir,
        {logger, showProgressBar: false, drafts: ['demo', fixture.modelPath, 'none', server.url]});
    t.deepEqual(specs, [
        {id: 'big', path: join(modelsDirectory, 'big.gguf'), draft: {path: fixture.modelPath}},
        {id: 'other', path: join(modelsDirectory, 'other.gguf'), draft: {path: fixture.modelPath}},
        {id: 'third', path: join(modelsDirectory, 'third.gguf')},
        {id: 'demo', path: fixture.modelPath, draft: {path: join(modelsDirectory, 'remote-draft.gguf')}}
    ]);
    t.deepEqual(await readFile(join(modelsDirectory, 'remote-draft.gguf')), await readFile(fixture.modelPath), 'downloaded into the models dir');

    t.deepEqual(await resolveModelRefs(['big'], fixture.dataDir, {logger, showProgressBar: false}), [{id: 'big', path: join(modelsDirectory, 'big.gguf')}],
        'no drafts: none');
    const missing = await t.throwsAsync(resolveModelRefs(['big'], fixture.dataDir, {logger, showProgressBar: false, drafts: ['no-such-draft']}),
        {instanceOf: ConfigError});
    t.regex(missing!.message, /^draft model "no-such-draft" not found: give a path to a \.gguf file, a name in .*models, an hf: reference or a URL$/);
});
