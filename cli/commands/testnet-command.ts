import {Command} from 'commander';

/** A private DHT on this machine, for trying a swarm of nodes without the internet. */
export function testnetCommand() {
    return new Command('testnet')
        .description('run a loopback DHT bootstrap for local clusters: start nodes with the --bootstrap it prints')
        .option('--nodes <n>', 'DHT nodes to run', '3')
        .action(async ({nodes}: {nodes: string}) => {
            const size = Number(nodes);
            if (!Number.isInteger(size) || size < 1 || size > 50)
                throw new Error(`--nodes must be 1 to 50, got "${nodes}"`);
            const {default: createTestnet} = await import('hyperdht/testnet.js');
            const testnet = await createTestnet(size, {host: '127.0.0.1'});
            const bootstrap = testnet.bootstrap.map(({host, port}) => `${host}:${port}`).join(',');
            process.stdout.write(`loopback DHT with ${size} nodes; start nodes with:\n  strongdoge --bootstrap ${bootstrap} --data-dir <dir> --port <port>\n`);
            const stop = () => void testnet.destroy().then(() => process.exit(0));
            process.once('SIGINT', stop);
            process.once('SIGTERM', stop);
        });
}
