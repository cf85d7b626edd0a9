/**
 * The folders, bottom layer first: a folder may import its own files and the folders of lower layers, never one
 * beside it or above it. Read by .dependency-cruiser.cjs (which `npm test` runs) and by scripts/folder-table.mjs
 * (docs/architecture.md's layout table).
 */
const layers = [
    {folders: ['core'], about: 'The shared vocabulary and small helpers: request and result types, `InferenceError`, request limits, the JSON-schema grammar (`json-schema/`), tool-call syntax (`tool-calls/`), the one backoff, `withDefaults`, how bytes and peer ids are shown.'},
    {folders: ['engine', 'swarm', 'ledger'], about: '`engine/`: llama.cpp in a supervised child process, its RPC server, GGUF files. `swarm/`: transport (identity, topics, connections, channels, relays). `ledger/`: receipts, the contribution log, points, anchoring.'},
    {folders: ['inference'], about: 'The strategies that serve a request: `local/` (this node\'s engine), `remote/` (peers, the jobs protocol), `sharded/` (pipelines of layer shards, the shard tunnel); the router that picks one.'},
    {folders: ['proxy', 'tui'], about: '`proxy/`: the HTTP API (OpenAI, Ollama). `tui/`: the Ink dashboard.'},
    {folders: ['node'], about: 'The composition root: wires engine, swarm, ledger, strategies, proxy and dashboard; the status contract; each setting declared once.'},
    {folders: ['cli', 'web'], about: '`cli/`: the commander program: commands, settings from flags, env and `config.json`. `web/`: the web page at `/` (Preact, bundled into `dist/web/`): it takes only types from `node/` and pure formatters from `core/` and `tui/`, and calls the node over HTTP.'},
    {folders: ['harness'], about: 'What tests and benchmarks share: daemons, fixtures, the network-namespace lab, the RPC lab.'},
    {folders: ['test', 'bench'], about: '`test/`: the ava suite. `bench/`: benchmarks (`npm run bench`).'}
];

module.exports = {layers};
