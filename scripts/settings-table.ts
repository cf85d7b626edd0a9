// Writes README's "Configuration" table from node/node-settings.ts: `node --import=tsx scripts/settings-table.ts`.
// test/settings-docs.test.ts checks README holds what this writes.
import {readFile, writeFile} from 'node:fs/promises';
import {settingsTable} from '../cli/config/settings-table.js';

const readme = new URL('../README.md', import.meta.url);
const text = await readFile(readme, 'utf8');
const marked = /(<!-- settings-table:start -->\n)[\s\S]*?(\n<!-- settings-table:end -->)/;
if (!marked.test(text))
    throw new Error('README.md has no <!-- settings-table:start --> ... <!-- settings-table:end --> markers');
await writeFile(readme, text.replace(marked, (_match, start: string, end: string) => `${start}${settingsTable()}${end}`));
