import {chmod, mkdtemp, rm, writeFile} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import test from 'ava';
import {ConfigError} from '../cli/config/config-error.js';
import {resolveNodeSettings} from '../cli/config/node-config.js';
import {DEFAULT_PORT, envNameFor, SECRET_SETTINGS} from '../node/node-settings.js';
import {dataDirPermissionWarnings} from '../cli/data-dir.js';

const file = (values: Record<string, unknown>) => ({path: '/data/config.json', values});

test('defaults: loopback, the documented port, no models', (t) => {
    const settings = resolveNodeSettings('/data', {flags: {}, env: {}});
    t.is(settings.host, '127.0.0.1');
    t.is(settings.port, DEFAULT_PORT);
    t.false([11434, 1234, 8080, 52415].includes(settings.port));
    t.deepEqual(settings.model, []);
    t.false(settings.daemon);
    t.is(settings.dataDir, '/data');
    t.true(settings.threads >= 1);
    t.is(settings.flashAttention, 'auto');
});

test('flags beat env, env beats the config file, the file beats defaults', (t) => {
    const settings = resolveNodeSettings('/data', {
        flags: {port: '1111'},
        env: {STRONGDOGE_PORT: '2222', STRONGDOGE_THREADS: '3'},
        file: file({port: 3333, threads: 5, parallel: 2})
    });
    t.is(settings.port, 1111);
    t.is(settings.threads, 3);
    t.is(settings.parallel, 2);
});

test('env values are parsed: booleans, comma-separated models, camelCase names', (t) => {
    const settings = resolveNodeSettings('/data', {
        flags: {},
        env: {STRONGDOGE_DAEMON: 'true', STRONGDOGE_MODEL: 'a.gguf, hf:x/y/z.gguf', STRONGDOGE_CONTEXT_SIZE: '2048'}
    });
    t.true(settings.daemon);
    t.deepEqual(settings.model, ['a.gguf', 'hf:x/y/z.gguf']);
    t.is(settings.contextSize, 2048);
    t.is(envNameFor('maxQueue'), 'STRONGDOGE_MAX_QUEUE');
});

test('repeated --model flags arrive as a list', (t) => {
    t.deepEqual(resolveNodeSettings('/data', {flags: {model: ['a', 'b']}, env: {}}).model, ['a', 'b']);
});

const badValues: [string, Parameters<typeof resolveNodeSettings>[1], RegExp][] = [
    ['port out of range', {flags: {port: '70000'}, env: {}}, /option --port/],
    ['port not a number', {flags: {}, env: {STRONGDOGE_PORT: 'abc'}}, /STRONGDOGE_PORT/],
    ['zero threads', {flags: {}, env: {}, file: file({threads: 0})}, /key "threads"/],
    ['gpu value', {flags: {gpu: 'maybe'}, env: {}}, /option --gpu/],
    ['flash attention value', {flags: {}, env: {STRONGDOGE_FLASH_ATTENTION: 'fast'}}, /STRONGDOGE_FLASH_ATTENTION/],
    ['daemon value', {flags: {}, env: {STRONGDOGE_DAEMON: 'perhaps'}}, /STRONGDOGE_DAEMON/],
    ['unknown key', {flags: {}, env: {}, file: file({prot: 1})}, /unknown key "prot"/],
    ['context size', {flags: {contextSize: '1.5'}, env: {}}, /option --context-size/],
    ['model type', {flags: {}, env: {}, file: file({model: 5})}, /key "model"/],
    // Keys every object inherits are not settings.
    ...['__proto__', 'constructor', 'toString', 'hasOwnProperty'].map((key): [string, Parameters<typeof resolveNodeSettings>[1], RegExp] =>
        [`inherited key ${key}`, {flags: {}, env: {}, file: {path: '/data/config.json', values: JSON.parse(`{"${key}": 1}`)}}, new RegExp(`unknown key "${key}"`)])
];

for (const [name, sources, message] of badValues) {
    test(`bad value is a ConfigError naming its source: ${name}`, (t) => {
        const error = t.throws(() => resolveNodeSettings('/data', sources), {instanceOf: ConfigError, message});
        t.is(error?.exitCode, 2);
        t.false(error!.message.includes('\n'), 'one line');
    });
}

test('a bad secret is never echoed: not the network secret, not the API key', (t) => {
    const networkSecret = 'short';
    const secretError = t.throws(() => resolveNodeSettings('/data', {flags: {networkSecret}, env: {}}), {instanceOf: ConfigError});
    t.regex(secretError!.message, /option --network-secret: at least 8 characters/);
    t.false(secretError!.message.includes(networkSecret));
    const apiKeyError = t.throws(() => resolveNodeSettings('/data', {flags: {}, env: {}, file: file({apiKey: ['key-in-a-list']})}), {instanceOf: ConfigError});
    t.false(apiKeyError!.message.includes('key-in-a-list'));
    // Other values are echoed, to help.
    t.throws(() => resolveNodeSettings('/data', {flags: {port: 'abc'}, env: {}}), {message: /got "abc"/});
});

test('a data dir open to others, and a config.json with a secret others can read, are warned about', async (t) => {
    const dataDir = await mkdtemp(join(tmpdir(), 'strongdoge-perms-'));
    t.teardown(() => rm(dataDir, {recursive: true, force: true}));
    await chmod(dataDir, 0o700);
    await writeFile(join(dataDir, 'config.json'), JSON.stringify({port: 1234}), {mode: 0o644});
    t.deepEqual(await dataDirPermissionWarnings(dataDir, SECRET_SETTINGS), [], 'no secret in a readable file, a private dir');
    await writeFile(join(dataDir, 'config.json'), JSON.stringify({apiKey: 'sekrit-value'}), {mode: 0o644});
    await chmod(join(dataDir, 'config.json'), 0o644);
    await chmod(dataDir, 0o755);
    const warnings = await dataDirPermissionWarnings(dataDir, SECRET_SETTINGS);
    t.is(warnings.length, 2);
    t.regex(warnings[0]!, /open to other users \(mode 755\): run chmod 700/);
    t.regex(warnings[1]!, /holds apiKey and other users can read it \(mode 644\): run chmod 600/);
    t.false(warnings.join().includes('sekrit-value'));
    await chmod(join(dataDir, 'config.json'), 0o600);
    await chmod(dataDir, 0o700);
    t.deepEqual(await dataDirPermissionWarnings(dataDir, SECRET_SETTINGS), []);
});

test('sharding settings: auto by default, memory sizes in bytes or with binary units, bad values named', (t) => {
    const defaults = resolveNodeSettings('/data', {flags: {}, env: {}});
    t.is(defaults.shard, 'auto');
    t.is(defaults.maxStages, 4);
    t.is(defaults.memoryLimit, undefined);
    t.is(defaults.maxShardMemory, undefined);
    const settings = resolveNodeSettings('/data', {
        flags: {memoryLimit: '8G', shard: 'always'},
        env: {STRONGDOGE_MAX_SHARD_MEMORY: '1.5GiB', STRONGDOGE_MAX_STAGES: '3'},
        file: file({rpcDir: '/shared/rpc'})
    });
    t.is(settings.memoryLimit, 8 * 2 ** 30);
    t.is(settings.maxShardMemory, 1.5 * 2 ** 30);
    t.is(settings.maxStages, 3);
    t.is(settings.shard, 'always');
    t.is(settings.rpcDir, '/shared/rpc');
    for (const [value, bytes] of [['512M', 512 * 2 ** 20], ['512mb', 512 * 2 ** 20], ['64k', 65_536], ['1000', 1000], [4096, 4096]] as const)
        t.is(resolveNodeSettings('/data', {flags: {memoryLimit: value}, env: {}}).memoryLimit, bytes, String(value));
    for (const [flags, pattern] of [
        [{memoryLimit: 'lots'}, /--memory-limit: expected bytes/],
        [{memoryLimit: '-1G'}, /--memory-limit/],
        [{shard: 'sometimes'}, /--shard/],
        [{maxStages: '1'}, /--max-stages/]
    ] as const)
        t.throws(() => resolveNodeSettings('/data', {flags, env: {}}), {instanceOf: ConfigError, message: pattern});
});

test('the shard sandbox: on by default; off only on a private network', (t) => {
    t.true(resolveNodeSettings('/data', {flags: {}, env: {}}).shardSandbox);
    t.throws(() => resolveNodeSettings('/data', {flags: {shardSandbox: 'off'}, env: {}}),
        {instanceOf: ConfigError, message: /--shard-sandbox off is only for a private network of peers you trust \(--network-secret\)/});
    t.throws(() => resolveNodeSettings('/data', {flags: {}, env: {STRONGDOGE_SHARD_SANDBOX: 'off'}}), {instanceOf: ConfigError});
    const trusted = resolveNodeSettings('/data', {flags: {shardSandbox: 'off'}, env: {STRONGDOGE_NETWORK_SECRET: 'friends only'}});
    t.false(trusted.shardSandbox);
});

test('relay settings: auto by default, ids to relay through as a list, bad values named', (t) => {
    const defaults = resolveNodeSettings('/data', {flags: {}, env: {}});
    t.is(defaults.relay, 'auto');
    t.deepEqual(defaults.relayThrough, []);
    t.is(defaults.relayMaxMbps, undefined);
    const [a, b] = ['ab'.repeat(32), 'cd'.repeat(32)];
    const settings = resolveNodeSettings('/data', {
        flags: {relay: 'on'},
        env: {STRONGDOGE_RELAY_THROUGH: `${a}, ${b}`, STRONGDOGE_RELAY_MAX_MBPS: '2.5'},
        file: file({relay: 'off'})
    });
    t.is(settings.relay, 'on');
    t.deepEqual(settings.relayThrough, [a, b]);
    t.is(settings.relayMaxMbps, 2.5);
    t.deepEqual(resolveNodeSettings('/data', {flags: {}, env: {}, file: file({relayThrough: [a]})}).relayThrough, [a]);
    for (const [flags, pattern] of [
        [{relay: 'sometimes'}, /--relay/],
        [{relayThrough: 'not-a-key'}, /--relay-through: expected node ids/],
        [{relayMaxMbps: '0'}, /--relay-max-mbps/]
    ] as const)
        t.throws(() => resolveNodeSettings('/data', {flags, env: {}}), {instanceOf: ConfigError, message: pattern});
});
