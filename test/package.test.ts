import {execFile} from 'node:child_process';
import {mkdtemp, readFile, rm, stat} from 'node:fs/promises';
import {join} from 'node:path';
import {fileURLToPath} from 'node:url';
import {promisify} from 'node:util';
import test from 'ava';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));

test('npm pack gives a tarball whose strongdoge bin runs', async (t) => {
    // Unpacked inside the repo so the package's imports resolve to the repo's node_modules, as after an install.
    const dir = await mkdtemp(join(ROOT, '.pack-test-'));
    t.teardown(() => rm(dir, {recursive: true, force: true}));
    const {stdout} = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], {cwd: ROOT});
    const [packed] = JSON.parse(stdout) as [{filename: string, files: {path: string}[]}];
    const paths = packed.files.map((file) => file.path);
    t.true(paths.includes('dist/cli/main.js'));
    t.true(paths.includes('README.md'));
    t.true(paths.includes('dist/web/index.html'), 'the web page ships built');
    t.false(paths.some((path) => path.startsWith('test/') || path.startsWith('node_modules/') || path.endsWith('.ts') && !path.endsWith('.d.ts')));

    await run('tar', ['-xzf', join(dir, packed.filename), '-C', dir]);
    const bin = join(dir, 'package', 'dist', 'cli', 'main.js');
    t.truthy((await stat(bin)).mode & 0o111, 'the bin is executable');
    t.true((await readFile(bin, 'utf8')).startsWith('#!/usr/bin/env node'));
    const help = await run(bin, ['--help']);
    t.regex(help.stdout, /^Usage: strongdoge/m);
    const version = await run(bin, ['--version']);
    t.is(version.stdout.trim(), JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')).version);
});
