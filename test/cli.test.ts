import {chmod, mkdtemp, readFile, rm, stat, writeFile} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import test from 'ava';
import {runCli, startDaemon} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';

async function tempDataDir(t: {teardown(fn: () => Promise<void>): void}) {
    const dir = await mkdtemp(join(tmpdir(), 'strongdoge-cli-'));
    t.teardown(() => rm(dir, {recursive: true, force: true}));
    return dir;
}

const commands = [[], ['start'], ['models'], ['models', 'list'], ['models', 'pull'], ['models', 'make-demo'], ['peers'], ['status']];
for (const command of commands) {
    test(`--help works for: strongdoge ${command.join(' ')}`, async (t) => {
        const result = await runCli([...command, '--help']);
        t.is(result.code, 0, result.stderr);
        t.regex(result.stdout, /^Usage: strongdoge/m);
    });
}

test('--help of start documents every option with its env variable', async (t) => {
    const {stdout} = await runCli(['start', '--help']);
    for (const option of ['--model', '--port', '--host', '--data-dir', '--threads', '--daemon', '--api-key'])
        t.true(stdout.includes(option), option);
    t.regex(stdout, /default: 9337/);
    t.regex(stdout, /STRONGDOGE_PORT/);
});

test('--version prints the package version', async (t) => {
    const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8'));
    const result = await runCli(['--version']);
    t.is(result.code, 0);
    t.is(result.stdout.trim(), pkg.version);
});

test('unknown options and commands exit 2 with a message', async (t) => {
    for (const args of [['--bogus'], ['start', '--nope'], ['models', 'frobnicate'], ['start', '--port']]) {
        const result = await runCli(args);
        t.is(result.code, 2, args.join(' '));
        t.regex(result.stderr, /error/i);
    }
});

test('a bad option value exits 2 with one line naming it', async (t) => {
    const dataDir = await tempDataDir(t);
    const result = await runCli(['start', '--port', 'abc', '--data-dir', dataDir]);
    t.is(result.code, 2);
    t.regex(result.stderr, /^strongdoge: error: invalid option --port/);
    t.is(result.stderr.trim().split('\n').length, 1);
});

test('a bad env value exits 2 naming the variable', async (t) => {
    const dataDir = await tempDataDir(t);
    const result = await runCli(['start'], {STRONGDOGE_HOME: dataDir, STRONGDOGE_THREADS: '-4'});
    t.is(result.code, 2);
    t.regex(result.stderr, /STRONGDOGE_THREADS/);
});

test('a corrupt config file exits 2 naming the file and is left untouched', async (t) => {
    const dataDir = await tempDataDir(t);
    const configPath = join(dataDir, 'config.json');
    const corrupt = '{"port": 9400,, "threads": }';
    await writeFile(configPath, corrupt);
    const result = await runCli(['start', '--data-dir', dataDir]);
    t.is(result.code, 2);
    t.regex(result.stderr, /config\.json: not valid JSON/);
    t.is(await readFile(configPath, 'utf8'), corrupt);
});

test('a config value of the wrong type exits 2 naming the key', async (t) => {
    const dataDir = await tempDataDir(t);
    await writeFile(join(dataDir, 'config.json'), JSON.stringify({port: 'nine'}));
    const result = await runCli(['start', '--data-dir', dataDir]);
    t.is(result.code, 2);
    t.regex(result.stderr, /key "port"/);
});

test('a model that does not exist exits 2 with guidance', async (t) => {
    const dataDir = await tempDataDir(t);
    const result = await runCli(['start', '--data-dir', dataDir, '--model', 'nothing-here']);
    t.is(result.code, 2);
    t.regex(result.stderr, /model "nothing-here" not found/);
});

test('models make-demo then models list shows size, layers and quantization', async (t) => {
    const dataDir = await tempDataDir(t);
    const made = await runCli(['models', 'make-demo', '--data-dir', dataDir, '--layers', '4', '--width', '128', '--heads', '4', '--ff', '256']);
    t.is(made.code, 0, made.stderr);
    t.true((await stat(join(dataDir, 'models', 'demo.gguf'))).size > 0);
    const listed = await runCli(['models', 'list', '--data-dir', dataDir]);
    t.regex(listed.stdout, /demo\s+[\d.]+ MB\s+4\s+MOSTLY_F16\s+llama/);
    const json = JSON.parse((await runCli(['models', 'list', '--json', '--data-dir', dataDir])).stdout);
    t.like(json.models[0], {id: 'demo', layers: 4, quantization: 'MOSTLY_F16'});
});

test('models make-demo rejects an impossible shape with exit 2', async (t) => {
    const dataDir = await tempDataDir(t);
    const result = await runCli(['models', 'make-demo', join(dataDir, 'x.gguf'), '--width', '100', '--heads', '8']);
    t.is(result.code, 2);
    t.regex(result.stderr, /divisible/);
});

test('models list warns about unreadable files without failing', async (t) => {
    const dataDir = await tempDataDir(t);
    await runCli(['models', 'make-demo', '--data-dir', dataDir]);
    await writeFile(join(dataDir, 'models', 'broken.gguf'), 'not a gguf');
    const result = await runCli(['models', 'list', '--data-dir', dataDir]);
    t.is(result.code, 0);
    t.regex(result.stdout, /^demo/m);
    t.regex(result.stderr, /broken\.gguf: not a readable GGUF/);
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    test(`the daemon shuts down gracefully on ${signal} with exit code 0`, async (t) => {
        const fixture = await createDataDirWithDemoModel({layers: 1, width: 64, headCount: 4, feedForwardLength: 64});
        t.teardown(fixture.cleanup);
        const daemon = await startDaemon(['--model', 'demo', '--data-dir', fixture.dataDir, '--threads', '1']);
        const node = await (await fetch(`${daemon.origin}/api/node`)).json() as {engine: {pid: number}};
        t.is(await daemon.stop(signal), 0);
        t.true(daemon.logs.some((record) => record.msg === 'stopped'));
        t.throws(() => process.kill(node.engine.pid, 0), undefined, 'the engine process is gone too');
    });
}

test('a node with no model starts, lists none and says how to get one', async (t) => {
    const dataDir = await tempDataDir(t);
    const daemon = await startDaemon(['--data-dir', dataDir]);
    t.teardown(() => daemon.stop().then(() => undefined));
    const models = await (await fetch(`${daemon.baseUrl}/models`)).json() as {data: unknown[]};
    t.deepEqual(models.data, []);
    t.true(daemon.logs.some((record) => String(record.msg).includes('make-demo')));
});

test('the node identity is created once, kept 0600, and reused', async (t) => {
    const dataDir = await tempDataDir(t);
    const idOf = async () => {
        const daemon = await startDaemon(['--data-dir', dataDir]);
        const node = await (await fetch(`${daemon.origin}/api/node`)).json() as {id: string};
        await daemon.stop();
        return node.id;
    };
    const first = await idOf();
    const identityPath = join(dataDir, 'identity.json');
    t.is((await stat(identityPath)).mode & 0o777, 0o600);
    const stored = JSON.parse(await readFile(identityPath, 'utf8'));
    t.is(stored.publicKey, first);
    await chmod(identityPath, 0o644);
    t.is(await idOf(), first);
    t.is((await stat(identityPath)).mode & 0o777, 0o600, 'loose permissions are tightened');
});

test('a damaged identity file stops the node with exit 2 and is not replaced', async (t) => {
    const dataDir = await tempDataDir(t);
    const identityPath = join(dataDir, 'identity.json');
    await writeFile(identityPath, '{"publicKey": "abc"}', {mode: 0o600});
    const result = await runCli(['start', '--offline', '--data-dir', dataDir]);
    t.is(result.code, 2);
    t.regex(result.stderr, /identity\.json: missing or malformed keys/);
    t.is(await readFile(identityPath, 'utf8'), '{"publicKey": "abc"}');
});

test('peers and status without a running node say so and exit 1', async (t) => {
    const dataDir = await tempDataDir(t);
    for (const command of ['peers', 'status']) {
        const result = await runCli([command, '--port', '9', '--data-dir', dataDir]);
        t.is(result.code, 1);
        t.regex(result.stderr, /no strongdoge node answers at http:\/\/127\.0\.0\.1:9/);
    }
});
