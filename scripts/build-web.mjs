/**
 * Builds the web page (web/, docs/architecture.md "Web page") into dist/web/: esbuild bundles and minifies the
 * script and the styles, each named by its content hash (served with a year's cache), index.html points at them
 * (served with no-cache), and every file also as brotli and gzip (served by Accept-Encoding). No inline script or
 * style anywhere: the page's Content-Security-Policy allows none.
 */
import {createHash} from 'node:crypto';
import {mkdir, readFile, rm, writeFile} from 'node:fs/promises';
import {basename, join} from 'node:path';
import {promisify} from 'node:util';
import {brotliCompress, constants, gzip} from 'node:zlib';
import {build} from 'esbuild';

const OUT = 'dist/web';
const ASSETS = join(OUT, 'assets');

await rm(OUT, {recursive: true, force: true});
await mkdir(ASSETS, {recursive: true});

const result = await build({
    entryPoints: {app: 'web/main.tsx', styles: 'web/styles.css'},
    bundle: true,
    minify: true,
    format: 'esm',
    platform: 'browser',
    target: ['es2022', 'chrome111', 'firefox114', 'safari16.4'],
    jsx: 'automatic',
    jsxImportSource: 'preact',
    tsconfig: 'web/tsconfig.json',
    outdir: ASSETS,
    entryNames: '[name]-[hash]',
    legalComments: 'none',
    metafile: true,
    logLevel: 'warning'
});

const outputs = Object.keys(result.metafile.outputs).map((path) => basename(path));
const script = outputs.find((name) => name.endsWith('.js'));
const styles = outputs.find((name) => name.endsWith('.css'));

const icon = await readFile('web/icon.svg');
const iconName = `icon-${createHash('sha256').update(icon).digest('hex').slice(0, 8)}.svg`;
await writeFile(join(ASSETS, iconName), icon);

await writeFile(join(OUT, 'index.html'), `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>strongdoge</title>
<link rel="icon" href="assets/${iconName}" type="image/svg+xml">
<link rel="stylesheet" href="assets/${styles}">
<script type="module" src="assets/${script}"></script>
</head>
<body>
<div id="app"></div>
<noscript>This page needs JavaScript. The API is at /v1 (README, "Endpoints").</noscript>
</body>
</html>
`);

// Precompressed once here, so the node never compresses at request time.
const files = ['index.html', ...[script, styles, iconName].map((name) => `assets/${name}`)];
for (const file of files) {
    const body = await readFile(join(OUT, file));
    await writeFile(join(OUT, `${file}.br`), await promisify(brotliCompress)(body, {params: {[constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: body.length}}));
    await writeFile(join(OUT, `${file}.gz`), await promisify(gzip)(body, {level: 9}));
}
