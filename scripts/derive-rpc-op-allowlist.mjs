#!/usr/bin/env node
/**
 * Derives the ggml ops a host accepts in a peer's graph (docs/peer-protocol.md, "Graph checks"): the ops that
 * llama.cpp's own model graphs can build, read from the llama.cpp source node-llama-cpp ships.
 *
 * 1. Every `ggml_*` builder that llama.cpp's `src/` calls (the model graphs of every architecture it supports).
 * 2. In ggml's `ggml.c`, the ops each builder sets (`result->op = GGML_OP_*`), through the builders it calls.
 * 3. Never the ops that call a function pointer from `op_params` (CUSTOM, MAP_CUSTOM1..3), whatever the source says.
 *
 * Usage: node scripts/derive-rpc-op-allowlist.mjs [llama.cpp source dir]
 * Without a dir it unpacks node-llama-cpp's `llama/gitRelease.bundle` into a temp dir (needs git).
 * Prints the op names, one a line, sorted by op number (as in ggml.h).
 */
import {execFileSync} from 'node:child_process';
import {mkdtempSync, readdirSync, readFileSync, rmSync, statSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {dirname, join} from 'node:path';
import {fileURLToPath} from 'node:url';

export const NEVER = ['CUSTOM', 'MAP_CUSTOM1', 'MAP_CUSTOM2', 'MAP_CUSTOM3'];

function sourceFiles(dir) {
    const files = [];
    for (const name of readdirSync(dir)) {
        const path = join(dir, name);
        if (statSync(path).isDirectory())
            files.push(...sourceFiles(path));
        else if (/\.(c|cpp|h)$/.test(name))
            files.push(path);
    }
    return files;
}

/** Each `ggml_*` function defined in ggml.c: the ops it sets and the `ggml_*` functions it calls. */
function ggmlBuilders(ggmlC) {
    const builders = new Map();
    const definition = /^(?:static\s+)?(?:inline\s+)?struct ggml_tensor\s*\*\s*(ggml_\w+)\s*\(/gm;
    for (const match of ggmlC.matchAll(definition)) {
        const open = ggmlC.indexOf('{', match.index);
        const close = ggmlC.indexOf('\n}', open);
        if (open < 0 || close < 0 || ggmlC.slice(match.index, open).includes(';'))
            continue; // a declaration, not a definition
        const body = ggmlC.slice(open, close);
        builders.set(match[1], {
            ops: new Set([...body.matchAll(/->op\s*=\s*GGML_OP_(\w+)/g)].map((op) => op[1])),
            calls: new Set([...body.matchAll(/\b(ggml_\w+)\s*\(/g)].map((call) => call[1]))
        });
    }
    return builders;
}

export function deriveAllowlist(sourceDir) {
    const ggmlH = readFileSync(join(sourceDir, 'ggml/include/ggml.h'), 'utf8');
    const opEnum = ggmlH.slice(ggmlH.indexOf('enum ggml_op {'), ggmlH.indexOf('GGML_OP_COUNT,'));
    const order = [...opEnum.matchAll(/GGML_OP_(\w+)/g)].map((op) => op[1]);
    const builders = ggmlBuilders(readFileSync(join(sourceDir, 'ggml/src/ggml.c'), 'utf8'));
    const called = new Set();
    for (const file of sourceFiles(join(sourceDir, 'src')))
        for (const call of readFileSync(file, 'utf8').matchAll(/\b(ggml_\w+)\s*\(/g))
            called.add(call[1]);
    const ops = new Set(['NONE']); // leaves: weights, inputs, caches
    const seen = new Set();
    const visit = (name) => {
        const builder = builders.get(name);
        if (builder === undefined || seen.has(name))
            return;
        seen.add(name);
        builder.ops.forEach((op) => ops.add(op));
        builder.calls.forEach(visit);
    };
    called.forEach(visit);
    return order.filter((op) => ops.has(op) && !NEVER.includes(op));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
    let dir = process.argv[2];
    let temp;
    if (dir === undefined) {
        temp = mkdtempSync(join(tmpdir(), 'strongdoge-llama-src-'));
        const bundle = join(dirname(fileURLToPath(import.meta.url)), '../node_modules/node-llama-cpp/llama/gitRelease.bundle');
        execFileSync('git', ['clone', '--quiet', bundle, join(temp, 'src')], {stdio: 'ignore'});
        dir = join(temp, 'src');
    }
    try {
        process.stdout.write(deriveAllowlist(dir).join('\n') + '\n');
    } finally {
        if (temp !== undefined)
            rmSync(temp, {recursive: true, force: true});
    }
}
