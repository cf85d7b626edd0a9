/** The folder graph (scripts/folder-layers.cjs) as dependency-cruiser's rules; `npm test` runs them (test/folder-graph.test.ts). */
const {layers} = require('./scripts/folder-layers.cjs');

const below = (index) => layers.slice(0, index).flatMap((layer) => layer.folders);
const allFolders = layers.flatMap((layer) => layer.folders);

const forbidden = [
    {
        name: 'no-circular',
        severity: 'error',
        comment: 'A cycle of imports makes load order matter and the parts inseparable.',
        from: {path: `^(${allFolders.join('|')})/`},
        to: {circular: true}
    },
    ...layers.flatMap((layer, index) => layer.folders.map((folder) => ({
        name: `${folder}-imports-below-only`,
        severity: 'error',
        comment: `${folder}/ may import ${below(index).map((name) => `${name}/`).join(', ') || 'nothing else of the repository'}`,
        from: {path: `^${folder}/`},
        to: {path: `^(${allFolders.filter((other) => other !== folder && !below(index).includes(other)).join('|')})/`}
    })))
];

module.exports = {
    forbidden,
    options: {
        doNotFollow: {path: 'node_modules'},
        exclude: {path: '^(node_modules|dist)/'},
        tsPreCompilationDeps: true,
        tsConfig: {fileName: 'tsconfig.check.json'},
        enhancedResolveOptions: {extensions: ['.ts', '.tsx', '.js', '.mjs', '.cjs']}
    }
};
