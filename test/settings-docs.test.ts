import {readFile} from 'node:fs/promises';
import test from 'ava';
import {settingsTable} from '../cli/config/settings-table.js';
import {startCommand} from '../cli/commands/start-command.js';
import {envNameFor, nodeSettingKeys} from '../node/node-settings.js';
import {withDefaults} from '../core/with-defaults.js';

test('README\'s configuration table is the one the setting declarations render', async (t) => {
    const readme = await readFile('README.md', 'utf8');
    const table = /<!-- settings-table:start -->\n([\s\S]*?)\n<!-- settings-table:end -->/.exec(readme)?.[1];
    t.is(table, settingsTable(), 'run `node --import=tsx scripts/settings-table.ts` to write it into README.md');
});

test('start has one option per declared setting, under the setting\'s own name, with its env variable', (t) => {
    const options = startCommand().options.filter((option) => option.attributeName() !== 'dataDir');
    t.deepEqual(options.map((option) => option.attributeName()), nodeSettingKeys);
    for (const option of options)
        t.true(option.description.endsWith(`[env ${envNameFor(option.attributeName())}]`), option.flags);
});

test('withDefaults: an option given as undefined keeps its default', (t) => {
    t.deepEqual(withDefaults({port: 1, host: 'a'}, {port: undefined, host: 'b', extra: 2}), {port: 1, host: 'b', extra: 2});
    t.deepEqual(withDefaults({port: 1}, undefined), {port: 1});
    const hostile = withDefaults({}, JSON.parse('{"__proto__": {"polluted": true}}') as object);
    t.is(Object.getPrototypeOf(hostile), Object.prototype);
    t.true(Object.hasOwn(hostile, '__proto__'));
});
