import {execFile} from 'node:child_process';
import {readFile, rm} from 'node:fs/promises';
import {join} from 'node:path';
import {promisify} from 'node:util';
import test from 'ava';
import {CLI_PATH, startDaemon, waitFor} from '../harness/cli-process.js';
import {createDataDirWithDemoModel} from '../harness/demo-model-fixture.js';
import {freePort} from '../harness/free-port.js';

const run = promisify(execFile);


test('in a real terminal (tmux) the dashboard shows the panels and the API URL, lists a request, follows a resize, and q exits 0 within 5 s', async (t) => {
    await run('tmux', ['-V']).catch(() => t.fail('tmux is needed for this test (apt-get install tmux)'));
    const fixture = await createDataDirWithDemoModel();
    const port = await freePort();
    const session = `strongdoge-test-${process.pid}`;
    const exitFile = join(fixture.dataDir, 'exit-code');
    t.teardown(async () => {
        await run('tmux', ['kill-session', '-t', session]).catch(() => undefined);
        await fixture.cleanup();
    });
    // Ink draws only a final frame when it sees CI=true: a person's terminal has no such variable.
    const command = `env -u CI ${process.execPath} ${CLI_PATH} start --model demo --offline --threads 1 --port ${port} --data-dir ${fixture.dataDir}; echo $? > ${exitFile}; sleep 60`;
    await run('tmux', ['new-session', '-d', '-s', session, '-x', '80', '-y', '24', command]);
    const screen = async () => (await run('tmux', ['capture-pane', '-p', '-t', session])).stdout;

    await waitFor(async () => (await screen()).includes('engine ready'), 30_000, 200);
    const ready = await screen();
    t.true(ready.includes(`API http://127.0.0.1:${port}/v1`), ready);
    for (const panel of ['This device', 'Peers (0)', 'Throughput (tokens/s)', 'Recent requests', 'Ledger'])
        t.true(ready.includes(panel), panel);
    t.false(ready.includes('Sharding'), 'an offline node coordinates no pipeline and hosts no layers: no sharding panel');
    t.true(ready.split('\n')[0]!.includes('strongdoge'), 'the header is on the first line: nothing scrolled off at 80×24');

    const response = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
        method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify({model: 'demo', prompt: 'hello dashboard', max_tokens: 17, temperature: 0})
    });
    t.is(response.status, 200);
    await waitFor(async () => /200 demo local 17t [\d.]+t\/s/.test(await screen()), 5_000, 100);

    // A narrower terminal: the panels stack in one column.
    await run('tmux', ['resize-window', '-t', session, '-x', '60', '-y', '60']);
    await waitFor(async () => {
        const lines = (await screen()).split('\n');
        const device = lines.findIndex((line) => line.includes('This device'));
        const throughput = lines.findIndex((line) => line.includes('Throughput'));
        return device >= 0 && throughput > device && lines.every((line) => [...line.trimEnd()].length <= 60);
    }, 5_000, 100);

    await run('tmux', ['send-keys', '-t', session, 'q']);
    const pressedAt = Date.now();
    await waitFor(async () => (await readFile(exitFile, 'utf8').catch(() => '')).trim() !== '', 5_000, 50);
    t.true(Date.now() - pressedAt < 5_000);
    t.is((await readFile(exitFile, 'utf8')).trim(), '0');
    await rm(exitFile);
});

test('a daemon stopped with SIGTERM during a streaming request ends the stream and exits 0', async (t) => {
    const fixture = await createDataDirWithDemoModel({endsText: false});
    t.teardown(fixture.cleanup);
    const daemon = await startDaemon(['--model', 'demo', '--data-dir', fixture.dataDir, '--threads', '1']);
    const response = await fetch(`${daemon.baseUrl}/completions`, {
        method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify({model: 'demo', prompt: 'a long goodbye', max_tokens: 3800, temperature: 0, stream: true})
    });
    const reader = response.body!.getReader();
    await reader.read();
    const exited = daemon.stop('SIGTERM');
    // The stream ends (finished, or cut at the shutdown deadline), it does not hang.
    const drained = (async () => {
        try {
            for (;;)
                if ((await reader.read()).done)
                    return 'ended';
        } catch {
            return 'cut';
        }
    })();
    t.true(['ended', 'cut'].includes(await drained));
    t.is(await exited, 0);
    t.true(daemon.logs.some((record) => record.msg === 'shutting down'));
    t.true(daemon.logs.some((record) => record.msg === 'stopped'));
    t.true(daemon.logs.every((record) => typeof record.level === 'number' && typeof record.time === 'string'));
});
