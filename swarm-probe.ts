import createTestnet from 'hyperdht/testnet.js';
import {startDaemon} from './test/helpers/cli-process.ts';
import {createDataDirWithDemoModel} from './test/helpers/demo-model-fixture.ts';
const testnet = await createTestnet(3, {host: '127.0.0.1'});
const bs = testnet.bootstrap.map((b) => `${b.host}:${b.port}`).join(',');
console.log('bootstrap', bs);
const fixtures = await Promise.all([0, 1, 2].map(() => createDataDirWithDemoModel({layers: 2, width: 64, headCount: 4, feedForwardLength: 64})));
const t0 = Date.now();
const daemons = await Promise.all(fixtures.map((f, i) => startDaemon(['--log-level', 'debug', '--data-dir', f.dataDir, '--bootstrap', bs, ...(i === 0 ? [] : ['--model', 'demo'])])));
console.log('started', Date.now() - t0);
for (let i = 0; i < 10; i++) {
  const counts = await Promise.all(daemons.map(async (d) => ((await (await fetch(d.origin + '/api/peers')).json()) as any).peers.length));
  console.log(Date.now() - t0, counts);
  if (counts.every((c) => c === 2)) break;
  await new Promise((r) => setTimeout(r, 500));
}
console.log(JSON.stringify(await (await fetch(daemons[0].origin + '/api/peers')).json()).slice(0, 600));
console.log(JSON.stringify(await (await fetch(daemons[0].origin + '/api/network/models')).json()).slice(0, 600));
console.log(JSON.stringify(await (await fetch(daemons[0].origin + '/v1/models')).json()));
console.log((await fetch(daemons[0].origin + '/v1/chat/completions', {method: 'POST', body: JSON.stringify({model: 'demo', messages: [{role: 'user', content: 'x'}]})})).status);
for (const d of daemons) console.log(JSON.stringify(d.logs.filter(l => (l.level as number) >= 40 || String(l.msg).includes('peer'))).slice(0, 1500));
for (const d of daemons) await d.stop();
await testnet.destroy();
for (const f of fixtures) await f.cleanup();
