#!/usr/bin/env node
// Prints docs/architecture.md's layout table from scripts/folder-layers.cjs; test/folder-graph.test.ts checks the page holds it.
import {createRequire} from 'node:module';

const {layers} = createRequire(import.meta.url)('./folder-layers.cjs');

export function folderTable() {
    const rows = layers.map((layer, index) => {
        const below = layers.slice(0, index).flatMap((lower) => lower.folders).map((folder) => `\`${folder}/\``);
        return `| ${index} | ${layer.folders.map((folder) => `\`${folder}/\``).join(', ')} | ${layer.about} | ${below.join(', ') || 'nothing of the repository'} |`;
    });
    return ['| layer | folders | what they are | may import |', '|---|---|---|---|', ...rows.reverse()].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`)
    console.log(folderTable());
