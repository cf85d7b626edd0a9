import {execFileSync} from 'node:child_process';
import {once} from 'node:events';
import {connect} from 'node:net';
import test from 'ava';
import {createLab, labSupported, netemSupported, type LabHost} from '../harness/netns-lab.js';

/**
 * The lab's direct hosts (harness/netns-lab.ts): joined to the test process's namespace by a link of their own, so
 * a server inside one is reached from here, with or without added delay; a lab of them needs no DHT.
 */

const support = labSupported();
// CI runs as root with iptables installed (.ci/run): there the lab must work, not be skipped.
const labTest = support.ok || process.env.CI ? test : test.skip;
if (!support.ok)
    console.log(`netns lab: ${support.reason}${process.env.CI ? '' : '; skipped'}`);

const PORT = 50_100;
/** An echo server on argv[1]:argv[2], saying 'ready' once it listens. */
const ECHO = `require('node:net').createServer((socket) => socket.pipe(socket)).listen(Number(process.argv[2]), process.argv[1], () => console.log('ready'));`;

async function startEcho(host: LabHost) {
    const child = host.spawn(process.execPath, ['-e', ECHO, host.directAddress!, String(PORT)], {stdio: ['ignore', 'pipe', 'inherit']});
    await Promise.race([once(child.stdout!, 'data'), once(child, 'exit').then(([code]) => {
        throw new Error(`the echo server in ${host.namespace} exited with ${code}`);
    })]);
}

/** Milliseconds for one byte to go to the host's echo server and back, over a fresh connection. */
async function roundTrip(host: LabHost) {
    const socket = connect({host: host.directAddress!, port: PORT});
    await once(socket, 'connect');
    const startedAt = performance.now();
    socket.write('x');
    await once(socket, 'data');
    const ms = performance.now() - startedAt;
    socket.destroy();
    return ms;
}

function directLinks() {
    return execFileSync('ip', ['-o', 'link', 'show'], {encoding: 'utf8'}).split('\n').filter((line) => /^\d+: sdlink\d+[@:]/.test(line)).length;
}

labTest('a direct host is reached from the test process, behind a NAT or not, and its links take a delay', async (t) => {
    if (!support.ok)
        t.fail(support.reason);
    const linksBefore = directLinks();
    const lab = await createLab([{name: 'open', nat: 'none', direct: true}, {name: 'home', nat: 'random', direct: true}, {name: 'plain', nat: 'none'}],
        {dhtNodes: 0});
    t.teardown(() => lab.close());
    t.is(lab.bootstrap, '');
    t.deepEqual(lab.dhtNodes, []);
    const {open, home, plain} = lab.hosts as Record<string, LabHost>;
    t.is(plain!.directAddress, null);
    t.not(open!.directAddress, home!.directAddress);
    t.is(directLinks(), linksBefore + 2);

    for (const host of [open!, home!]) {
        await startEcho(host);
        t.true(await roundTrip(host) < 1000, host.name);
    }
    if (netemSupported()) {
        await open!.setDelay(25);
        t.true(await roundTrip(open!) >= 50, 'netem 25 ms each way');
        await open!.setDelay(0);
    } else {
        await t.throwsAsync(open!.setDelay(25), undefined, 'no netem in this kernel');
    }

    await lab.close();
    t.is(directLinks(), linksBefore, 'the direct links went with the lab');
});
