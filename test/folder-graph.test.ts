import {execFile} from 'node:child_process';
import {readFile} from 'node:fs/promises';
import {createRequire} from 'node:module';
import {promisify} from 'node:util';
import test from 'ava';
// @ts-expect-error: a plain script, no types
import {folderTable} from '../scripts/folder-table.mjs';

const run = promisify(execFile);

interface CruiseReport {
    summary: {violations: {from: string, to: string, rule: {name: string}}[], totalCruised: number}
}

test('no import runs sideways or up the folder layers, and none closes a circle', async (t) => {
    const {layers} = createRequire(import.meta.url)('../scripts/folder-layers.cjs') as {layers: {folders: string[]}[]};
    const folders = layers.flatMap((layer) => layer.folders);
    const {stdout} = await run('node_modules/.bin/depcruise', [...folders, '--config', '.dependency-cruiser.cjs', '--output-type', 'json'], {maxBuffer: 256 << 20})
        .catch((error: {stdout?: string}) => ({stdout: error.stdout ?? ''}));
    const report = JSON.parse(stdout) as CruiseReport;
    t.true(report.summary.totalCruised > 250, `${report.summary.totalCruised} modules read`);
    t.deepEqual(report.summary.violations.map((violation) => `${violation.rule.name}: ${violation.from} → ${violation.to}`), []);
});

test('docs/architecture.md shows the layers the rules enforce', async (t) => {
    const page = await readFile('docs/architecture.md', 'utf8');
    const table = /<!-- folder-table:start -->\n([\s\S]*?)\n<!-- folder-table:end -->/.exec(page)?.[1];
    t.is(table, folderTable(), 'run `node scripts/folder-table.mjs` and paste its table into docs/architecture.md');
});
